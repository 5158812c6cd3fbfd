"""The lean inference path: a whole short sequence at a small batch, without autograd.

At B = 1 and a few hundred steps an LSTM or GRU layer's arithmetic takes about a millisecond, and
the general path around it (argument checks, the engine interface, random masks, zoneout and
layer-norm buffers, the thread split) adds ~0.2 ms of Python. ONNX Runtime pays a few tens of µs
per call, so at B = 1 that overhead alone decided the comparison. A call that is plainly
such an inference goes here instead, straight to the same fused time loops
(``kernels.{lstm,gru,rnn}_steps.forward``) with every variant switched off, and each layer's input
projection is the same ``linear.block`` product the general path runs: the numbers are the fused
engine's.

Taken only when all of these hold (anything else returns None and takes the general path, which
also raises the errors): engine "fused", or "auto" where the measured table picks "fused"; no
autograd; no variant and no proj_size (head-wise recurrence is fine); a plain float32/float64 CPU tensor input
of at most ``linear.ROWS`` (time × batch) rows and a batch below the size where the general path
splits rows over two threads; the initial state absent or of exactly torch.nn's shape.
"""

from __future__ import annotations

import logging
from operator import itemgetter
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..equations.cells import GATES
from . import dispatch, step_grad
from .one_step import _traced

_NP = {torch.float32: np.float32, torch.float64: np.float64}
_MODE = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}
_KIND = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}
_KERNELS: dict[str, Any] = {}
_LOG = logging.getLogger("gatedrnn")


def _kernels() -> dict[str, Any]:
    """The kernel modules, imported on first use (numba) and kept; {} when numba is missing."""
    if not _KERNELS:
        try:
            from .kernels import (
                common,
                gru,
                gru_steps,
                heads,
                linear,
                lstm,
                lstm_steps,
                pair,
                rnn,
                rnn_steps,
                threads,
            )
        except ImportError:
            return _KERNELS
        # Largest batch without the general path's two-thread row split (threads.split_rows).
        _KERNELS.update(common=common, heads=heads, linear=linear, threads=threads, pair=pair,
                        lstm=lstm_steps,
                        gru=gru_steps, rnn=rnn_steps,
                        rows={"lstm": 2 * lstm.TEAM_MIN_ROWS, "gru": 2 * gru.TEAM_MIN_ROWS,
                              "rnn": 2 * rnn.TEAM_MIN_ROWS})
    return _KERNELS


def _auto(kind: str, dt: torch.dtype, B: int, work: int, training: bool, hidden: int) -> str:
    """The engine the measured table picks for this call (``dispatch.choose`` keeps its answers:
    walking the table costs more than the rest of a B = 1 step)."""
    return dispatch.choose("cpu", kind, dispatch.dtype_key(dt), torch_op=True, simple=True,
                           training=training, batch=B, work=work, hidden=hidden)


def _to_torch(m: Any, input: Tensor, hx: Any) -> Any:
    """torch.nn's forward itself, where the table picks torch's op: without the general path's
    checks and engine choice (~10 µs), which count in a small call. torch.nn checks the call."""
    _record(m, "native")
    return m._TORCH.forward(m, input, hx)


def _record(m: Any, engine: str) -> Any:
    """``last_engine``, logged when it changes (as ``modules.base.record_engine``)."""
    if m.__dict__.get("last_engine") != engine:
        _LOG.debug("%s: engine %s (was %s)", type(m).__name__, engine, m.__dict__.get("last_engine"))
        m.__dict__["last_engine"] = engine


def _state(hx: Any, lstm: bool, shape: tuple[int, ...], dt: torch.dtype,
           stacked: tuple[int, ...]) -> list[Tensor] | None:
    """[h0] or [h0, c0] as fresh contiguous tensors of the ``stacked`` shape (L·D, B, H), which
    the loops update in place into h_n[, c_n]: zeros when hx is None, a copy of hx when it has
    exactly torch.nn's ``shape`` and our dtype; None otherwise."""
    if hx is None:
        return [torch.zeros(stacked, dtype=dt) for _ in range(2 if lstm else 1)]
    if lstm and (type(hx) is not tuple or len(hx) != 2):
        return None
    parts = hx if lstm else (hx,)
    for p in parts:
        if type(p) is not Tensor or p.dtype is not dt or not p.is_cpu or p.shape != shape:
            return None
    return [p.detach().reshape(stacked).clone(memory_format=torch.contiguous_format)
            for p in parts]


def _grad_state(hx: Any) -> bool:
    return any(getattr(p, "requires_grad", False) for p in (hx if type(hx) is tuple else (hx,)))


def module_call(m: Any, input: Any, hx: Any, return_gates: Any) -> Any:
    """``m(input, hx)`` through the fused time loops, or None when the call is not plainly a
    small inference (see the module docstring). Returns what torch.nn returns."""
    if return_gates is not False or type(input) is not Tensor or input.dtype not in _NP:
        return None
    if _traced() or torch.compiler.is_exporting():
        return None  # the exporters and torch.compile need torch ops, not a kernel call
    if m.proj_size or m.layer_norm or m.peephole or m.zoneout or m.zoneout_cell:
        return None
    if m.training and (m.dropout or m.recurrent_dropout or m.weight_drop):
        return None
    k = _kernels()
    if not k or not input.is_cpu or input.dim() not in (2, 3) or input.shape[-1] != m.input_size:
        return None
    dt = input.dtype
    unbatched = input.dim() == 2
    if unbatched:
        T, B = input.shape[0], 1
    else:
        T, B = (input.shape[1], input.shape[0]) if m.batch_first else (input.shape[0], input.shape[1])
    if T == 0 or B == 0:
        return None
    mode = _MODE[m.mode]
    H = m.hidden_size
    ps = m._parameters
    # (a first look for the table: the first weight; every parameter is looked at below)
    w0 = ps.get("weight_ih_l0")
    grad = torch.is_grad_enabled() and (input.requires_grad or _grad_state(hx)
                                        or (w0 is not None and w0.requires_grad))
    nh = getattr(m, "num_heads", 1)
    if m.engine == "auto" and nh == 1:  # (head-wise recurrence has no torch op: auto runs it fused)
        engine = _auto(_KIND[m.mode], dt, B, T * B * H, grad, H)
        if engine == "native" and m.reset_after:
            return _to_torch(m, input, hx)
        if engine != "fused":
            return None
    kind = mode[:3] if mode.startswith("rnn") else mode
    split = B >= k["rows"][kind] and (kind != "rnn" or T * B * H * H >= k["threads"].MIN_SPLIT_WORK)
    if T * B > k["linear"].ROWS or split:
        return None  # (where the general path splits rows over two threads, see threads.split_rows)
    try:
        groups = [itemgetter(*names)(ps) for names in m._all_weights]
    except KeyError:  # pruned or parametrized: the weight is computed per access
        return None
    grad = grad or (torch.is_grad_enabled() and any(p.requires_grad for g in groups for p in g))
    if grad:
        result = step_grad.module_call(m, input, hx)  # a few training steps, or None
        if result is not None:
            _record(m, "fused")
        return result
    D = 2 if m.bidirectional else 1
    L = m.num_layers
    lstm = mode == "lstm"
    state = _state(hx, lstm, (L * D, H) if unbatched else (L * D, B, H), dt, (L * D, B, H))
    if state is None:
        return None
    GH = GATES[mode] * H
    rec = (GH, H) if nh == 1 else (nh, GH // nh, H // nh)  # W_hh dense, or head-wise
    for i, g in enumerate(groups):
        if any(p.dtype is not dt or not p.is_cpu for p in g) or g[0].shape != (
                GH, m.input_size if i < D else D * H) or g[1].shape != rec \
                or any(b.shape != (GH,) for b in g[2:]):
            return None  # (the kernels index by these shapes: a reassigned parameter must not pass)
    x = input.detach()
    x = x.unsqueeze(1) if unbatched else (x.transpose(0, 1) if m.batch_first else x)
    x2 = x.reshape(T * B, x.shape[2])  # time-major rows
    nd = np.dtype(_NP[dt])
    views = [s.numpy() for s in state]  # (L·D, B, H): each direction's (B, H) is updated in place
    # A direction's state must be as aligned as the general path's fresh copy (MKL's small GEMMs
    # may round differently on differently aligned operands, and the paths must agree): the
    # stack's slices are, where a slice's bytes are a multiple of 64 (torch aligns to 64).
    aligned = B * H * nd.itemsize % 64 == 0
    for layer in range(L):
        ys = []
        for d in range(D):
            k_ = layer * D + d
            fresh = not aligned and k_ > 0
            start = [s[k_].clone(memory_format=torch.contiguous_format).numpy() if fresh
                     else v[k_] for v, s in zip(views, state)]
            ys.append(_direction(k, mode, m.reset_after, x2, groups[k_], start, T, B, H, d == 1,
                                 nd))
            if fresh:
                for v, s in zip(views, start):
                    v[k_] = s
        out = torch.from_numpy(ys[0]) if D == 1 else torch.cat(
            [torch.from_numpy(v) for v in ys], dim=2)  # (T, B, D·H)
        x2 = out.view(T * B, D * H)
    y = out.squeeze(1) if unbatched else (out.transpose(0, 1) if m.batch_first else out)
    hn = [s.squeeze(1) for s in state] if unbatched else state
    _record(m, "fused")
    return y, ((hn[0], hn[1]) if lstm else hn[0])


_SIZES: dict[tuple[int, int], np.ndarray] = {}


def _sizes(T: int, B: int) -> np.ndarray:
    """The active rows per step of a call without packing, [B] * T: kept per (T, B) (the loops
    only read it)."""
    s = _SIZES.get((T, B))
    if s is None:
        if len(_SIZES) > 64:
            _SIZES.clear()
        s = _SIZES[(T, B)] = np.full(T, B, np.int64)
    return s


def _direction(k: dict[str, Any], mode: str, reset_after: bool, x2: Tensor, params: tuple,
               state: list[np.ndarray], T: int, B: int, H: int, reverse: bool,
               nd: np.dtype) -> np.ndarray:
    """One direction of one layer: returns y (T, B, H); ``state`` ((B, H) C-contiguous arrays
    holding h0[, c0]) ends as the final state."""
    w_ih, w_hh = params[0].detach(), params[1].detach()
    b_ih, b_hh = (params[2].detach(), params[3].detach()) if len(params) == 4 else (None, None)
    gru_bn = mode == "gru" and reset_after and b_hh is not None
    if b_ih is None or b_hh is None:
        bias = None
    elif gru_bn:  # b_hr, b_hz join the projection; b_hn stays inside r ⊙ (·) (as kernels/gru.py)
        bias = b_ih.clone()
        bias[:2 * H] += b_hh[:2 * H]
    else:
        bias = b_ih + b_hh
    GH = w_ih.shape[0]
    g = k["linear"].block(x2, w_ih, bias, torch.empty((T * B, GH), dtype=x2.dtype))
    G = g.view(T, B, GH).numpy()
    hw = state[0]
    w = w_hh.contiguous().numpy() if mode.startswith("rnn") else k["heads"].as_heads(
        w_hh, GH // H, H)  # (nh, G·d, d); torch.nn's dense W_hh as one head
    sizes = _sizes(T, B)
    Y = G if mode.startswith("rnn") else torch.empty((T, B, H), dtype=x2.dtype).numpy()
    bn = None
    if mode == "gru":
        bn = b_hh[2 * H:].contiguous().numpy() if b_hh is not None and gru_bn else np.zeros(H, nd)
    # One or two rows: W_hh packed for a GEMV, or split over two threads once it outgrows one
    # core's L2 (kernels.pair).
    if not mode.startswith("rnn") and w.shape[0] == 1 and (mode == "lstm" or reset_after) \
            and k["pair"].usable(B, H, T, GH // H, x2.dtype):
        if mode == "lstm":
            k["pair"].lstm(G, hw, state[1], Y, sizes, reverse, w[0])
        else:
            k["pair"].gru(G, hw, Y, sizes, reverse, w[0], bn)
        return Y
    off = k["common"].off
    o1, o2, o3 = off(nd, 1), off(nd, 2), off(nd, 3)
    if mode == "lstm":
        args: tuple = (G, hw, state[1], Y, o3, o3, sizes, reverse, False, w, o2, o2, o2, o3, o3,
                       o2, o2, o3, o3, o3, 0.0, np.empty((2, B, H), nd), o2, o2,
                       np.zeros((2, H), nd))
    elif mode == "gru":
        args = (G, hw, Y, o3, o3, o3, o2, sizes, reverse, False, reset_after, w, bn, o2,
                np.ones(H, nd), o3, o1, o2, 0.0,
                np.empty((B, 3 * H if reset_after else 2 * H), nd), o2, np.empty((2, B, H), nd))
    else:  # the Elman loop activates G in place: it becomes y
        args = (G, Y, hw, sizes, reverse, mode == "rnn_relu", w, o2, o3, o2)
    run = k[mode[:3] if mode.startswith("rnn") else mode].forward

    def work(part: int, lo: int, hi: int) -> None:
        run(*args, lo, hi, k["common"].gemm_scratch(nd))

    k["threads"].split_rows(B, work)  # below the split sizes: one call, one-thread BLAS
    return Y
