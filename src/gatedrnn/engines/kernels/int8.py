"""The int8 CPU engine: one direction of one quantized LSTM, GRU or RNN layer, inference only.

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, state_n, None)

keeps the engine interface (``gatedrnn.equations.reference.run``) with the int8 weights of the
scheme in ``gatedrnn.equations.quantized`` (weights int8 per output row, activations int8 per
row, dynamically; gates and state in float32), whose ``run`` is its oracle::

    w["w_ih_q"] (G·H, I) int8, w["w_ih_s"] (G·H,)      w["w_hh_q"] (G·H, Ho) int8, w["w_hh_s"]
    w["b_ih"], w["b_hh"] (G·H,) or None                 w["w_hr_q"] (Ho, H), w["w_hr_s"] or None

Work per call: x is quantized per (t, b) row and multiplied by W_ih for every step at once
(``int8_steps.project``, two threads over rows when torch has two); then one numba loop runs all
steps (``int8_steps.lstm``/``gru``/``rnn``: per step one int8 product on VNNI instructions, or
AMX tiles from 4 rows where the CPU has them, ``int8_gemm``), with the batch rows split over two
threads from B = 4 (``threads.split_rows``; at B = 1 the recurrence runs on one thread). No
Python runs per step.

Packed weights. The kernels read the weights in the blocked layout of ``int8_gemm.pack``. ``pack(w,
opts)`` returns them as extra entries of the weights dict (``w_ih_p``, ``w_ih_c``, ``w_hh_p``,
``w_hh_c``, ``w_hn_p``, ``w_hn_c`` for the GRU's Cho form, ``w_hr_p``, ``w_hr_c``, and the folded
biases ``bias_p``, ``b_hn_p``); a module that keeps them beside its int8 weights (recomputing them
whenever those or the biases change) passes
``{**w, **pack(w, opts)}`` and ``run`` skips the repacking (about a copy of the weights per call).

Not here: layer norm, peepholes, head-wise W_hh, masks (dropout, zoneout) and ``record``
(ValueError); float64 or half input (TypeError).

Example:
    >>> import torch
    >>> from gatedrnn.equations.cells import CellOptions
    >>> from gatedrnn.engines.kernels import int8
    >>> from gatedrnn.equations.quantized import quantize_weights
    >>> T, B, I, H = 5, 2, 3, 4
    >>> w = quantize_weights({"w_ih": torch.randn(4 * H, I), "w_hh": torch.randn(4 * H, H)})
    >>> opts = CellOptions("lstm")
    >>> y, (h, c), _ = int8.run(torch.randn(T, B, I), (torch.zeros(B, H), torch.zeros(B, H)),
    ...                         {**w, **int8.pack(w, opts)}, None, False, opts, {}, False)
    >>> y.shape, h.shape
    (torch.Size([5, 2, 4]), torch.Size([2, 4]))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import int8_gemm as gemm
from . import int8_steps as steps
from .common import step_sizes
from .threads import split_rows

MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
TEAM_MIN_ROWS = 2  # two threads from B = 4 rows, in torch's OpenMP team (threads.split_rows)
POOL_MIN_ROWS = 64
_PACKED = ("w_ih_p", "w_ih_c", "w_hh_p", "w_hh_c", "bias_p", "b_hn_p")


def pack(w: Mapping[str, Tensor | None], opts: Any) -> dict[str, Tensor]:
    """The packed layout of the int8 weights (``int8_gemm.pack``), as entries to add to ``w``."""
    out: dict[str, Tensor] = {}
    out["w_ih_p"], out["w_ih_c"] = gemm.pack(_need(w, "w_ih_q"))
    w_hh = _need(w, "w_hh_q")
    if w_hh.dim() != 2:
        raise ValueError("the int8 engine has no head-wise W_hh (num_heads > 1)")
    if opts.mode == "gru" and not opts.reset_after:
        H = w_hh.shape[1]
        out["w_hh_p"], out["w_hh_c"] = gemm.pack(w_hh[: 2 * H])
        out["w_hn_p"], out["w_hn_c"] = gemm.pack(w_hh[2 * H:])
    else:
        out["w_hh_p"], out["w_hh_c"] = gemm.pack(w_hh)
    if w.get("w_hr_q") is not None:
        out["w_hr_p"], out["w_hr_c"] = gemm.pack(_need(w, "w_hr_q"))
    out["bias_p"], out["b_hn_p"] = _biases(w, opts, w_hh.shape[0] // GATES[opts.mode])
    return out


def _biases(w: Mapping[str, Tensor | None], opts: Any, H: int) -> tuple[Tensor, Tensor]:
    """(the bias added to the input projection (G·H,), b_hn (H,)): every bias that adds outside
    a gate product is folded into the first; the reset-after GRU keeps b_hn apart (r multiplies
    W_hn h + b_hn), zero elsewhere."""
    b_ih, b_hh = w.get("b_ih"), w.get("b_hh")
    G = GATES[opts.mode]
    bias = torch.zeros(G * H) if b_ih is None else b_ih.detach().float().clone()
    bn = torch.zeros(H)
    if b_hh is not None:
        b_hh = b_hh.detach().float()
        if opts.mode == "gru" and opts.reset_after:
            bias[: 2 * H] += b_hh[: 2 * H]
            bn = b_hh[2 * H:].contiguous()
        else:
            bias += b_hh
    return bias.contiguous(), bn


def _need(w: Mapping[str, Tensor | None], name: str) -> Tensor:
    t = w.get(name)
    if t is None:
        raise ValueError(f"the int8 engine needs weight {name!r}")
    return t


def _np(t: Tensor | None, dtype: Any) -> np.ndarray:
    if t is None:
        raise ValueError("missing int8 weight scale")
    return t.detach().contiguous().numpy().astype(dtype, copy=False)


def _acc(rows: int, packed: np.ndarray) -> np.ndarray:
    return np.empty((rows, packed.shape[0] * gemm.UNITS), np.int32)


def _project(x: Tensor, wp: np.ndarray, comp: np.ndarray, sw: np.ndarray,
             bias: np.ndarray, G: Tensor) -> None:
    """G (R, N) = the int8 product of x (R, I) quantized per row with W, + bias."""
    R, I = x.shape
    X, Gn = x.numpy(), G.numpy()

    def work(part: int, lo: int, hi: int) -> None:
        rows = min(steps.ROW_TILE, max(hi - lo, 1))
        steps.project(X, wp, comp, sw, bias, Gn, gemm.as_u8_rows(rows, I),
                      np.empty(rows, np.float32), _acc(rows, wp), lo, hi, gemm.token(gemm.ISA))

    split_rows(R, work, POOL_MIN_ROWS, steps.ROW_TILE, size=R * I * G.shape[1] // 4)


def run(
    x: Tensor,
    state: tuple[Tensor, ...],
    w: Mapping[str, Tensor | None],
    batch_sizes: Tensor | None,
    reverse: bool,
    opts: Any,
    masks: Mapping[str, Tensor | None],
    record: bool,
) -> tuple[Tensor, tuple[Tensor, ...], None]:
    """One direction of one int8 layer (contract: ``reference.run``; weights: module docstring).

    Shapes: x (T, B, I) float32; state (h0 (B, Ho),) or (h0, c0 (B, H)) for the LSTM; returns
    y (T, B, Ho), the state after each row's last step, and None (no gates).
    """
    mode = opts.mode
    if mode not in MODES:
        raise ValueError(f"the int8 engine runs modes {MODES}, got {mode!r}")
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise TypeError(f"the int8 engine takes float32 CPU input, got {x.dtype} on {x.device}")
    if record:
        raise ValueError("the int8 engine does not record gates (return_gates)")
    if any(m is not None for m in masks.values()):
        raise ValueError("the int8 engine is inference only: no dropout or zoneout masks")
    if getattr(opts, "layer_norm", False) or w.get("peephole") is not None:
        raise ValueError("the int8 engine has no layer norm or peepholes")
    p = w if all(k in w for k in _PACKED) else {**w, **pack(w, opts)}
    T, B, I = x.shape
    G_ = GATES[mode]
    h0 = state[0]
    Ho = h0.shape[-1]
    GH = _need(p, "w_hh_q").shape[0]
    H = GH // G_
    # The loops read by index: a width that does not match the weights would read past them.
    if _need(p, "w_ih_q").shape[1] != I or _need(p, "w_hh_q").shape[1] != Ho or \
            any(s.shape != (B, n) for s, n in zip(state, (Ho, H))):
        raise ValueError(f"int8 engine: input (T, B, I) = {tuple(x.shape)} and state "
                         f"{[tuple(s.shape) for s in state]} do not fit the weights "
                         f"(w_ih {tuple(_need(p, 'w_ih_q').shape)}, w_hh {tuple(_need(p, 'w_hh_q').shape)})")
    sizes, _ = step_sizes(batch_sizes, T, B)
    G = torch.empty(T, B, GH)  # (T, B, G·H): the input projection, then the loop's gates
    _project(x.detach().contiguous().reshape(T * B, I), _need(p, "w_ih_p").numpy(),
             _need(p, "w_ih_c").numpy(), _np(p.get("w_ih_s"), np.float32),
             _need(p, "bias_p").numpy(), G.view(T * B, GH))
    Y = torch.empty(T, B, Ho)
    hw = h0.detach().float().contiguous().clone()  # becomes h_n
    wp, comp = _need(p, "w_hh_p").numpy(), _need(p, "w_hh_c").numpy()
    sw = _np(p.get("w_hh_s"), np.float32)
    xu, sx, acc = gemm.as_u8_rows(B, Ho), np.empty(B, np.float32), _acc(B, wp)
    Gn, Yn, hn = G.numpy(), Y.numpy(), hw.numpy()
    parts: tuple[Any, ...]
    args: tuple[Any, ...]
    if mode == "lstm":
        cw = state[1].detach().float().contiguous().clone()
        if p.get("w_hr_q") is not None:
            rp = _need(p, "w_hr_p").numpy()
            proj = (rp, _need(p, "w_hr_c").numpy(), _np(p.get("w_hr_s"), np.float32),
                    np.empty((B, H), np.float32), gemm.as_u8_rows(B, H), _acc(B, rp))
        else:
            proj = (np.empty((0, 0, 0), np.int8), np.empty(0, np.int32), np.empty(0, np.float32),
                    np.empty((0, 0), np.float32), np.empty((0, 0), np.uint8),
                    np.empty((0, 0), np.int32))
        kernel = steps.lstm
        args = (Gn, Yn, hn, cw.numpy(), sizes, reverse, wp, comp, sw, *proj[:3], xu, sx, acc,
                *proj[3:])
        parts = (hw, cw)
    elif mode == "gru":
        if opts.reset_after:
            second = (np.empty((0, 0, 0), np.int8), np.empty(0, np.int32),
                      np.empty(0, np.float32))
            ru, acc2 = np.empty((0, 0), np.uint8), np.empty((0, 0), np.int32)
        else:
            np2 = _need(p, "w_hn_p").numpy()
            second = (np2, _need(p, "w_hn_c").numpy(), np.ascontiguousarray(sw[2 * H:]))
            sw = np.ascontiguousarray(sw[: 2 * H])
            ru, acc2 = gemm.as_u8_rows(B, H), _acc(B, np2)
        kernel = steps.gru
        args = (Gn, Yn, hn, sizes, reverse, bool(opts.reset_after), wp, comp, sw,
                _need(p, "b_hn_p").numpy(), *second, xu, sx, acc, ru, acc2)
        parts = (hw,)
    else:
        kernel = steps.rnn
        args = (Gn, Yn, hn, sizes, reverse, mode == "rnn_relu", wp, comp, sw, xu, sx, acc)
        parts = (hw,)

    def work(part: int, lo: int, hi: int) -> None:  # rows [lo, hi): their own rows of the scratch
        kernel(*args, lo, hi, gemm.token(gemm.ISA))

    split_rows(B, work, POOL_MIN_ROWS, TEAM_MIN_ROWS, size=T * B * GH * Ho // 4)
    return Y, parts, None
