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
threads from B = 4 (``threads.split_rows``). No Python runs per step.

The LSTM without projection from ``UNIT_SPLIT_H`` hidden units keeps its gate rows in two parts
of units (``_unit_parts``; loop ``int8_steps.lstm_units``), so two threads can split the units
instead of the rows (``int8_team``): each streams half of W_hh at every step and they meet once
per step. They do so below B = 4 (where rows cannot be split: B = 1 used one thread) and where
W_hh is ``UNIT_SPLIT_BYTES`` or more (4 MB at H = 1024: split by rows, each thread streamed all
of it from L3 at every step; by units, each half stays in its core's 2 MB L2). Measured on one
core of the shared machine (thread CPU time, each half alone against both parts): the loop of
(T, B, I, H) = (50, 8, 512, 1024) 4.0 ms a half against 9.6 ms for both; (200, 1, 256, 512) 1.1
against 2.1 ms; (50, 32, 512, 1024) 9.7-9.8 against 19.0 ms.

Packed weights. The kernels read the weights in the blocked layout of ``int8_gemm.pack``. ``pack(w,
opts)`` returns them as extra entries of the weights dict (``w_ih_p``, ``w_ih_c``, ``w_hh_p``,
``w_hh_c``, ``w_hn_p``, ``w_hn_c`` for the GRU's Cho form, ``w_hr_p``, ``w_hr_c``, and the folded
biases ``bias_p``, ``b_hn_p``; for the LSTM in parts of units also ``w_ih_us``, ``w_hh_us``,
``w_hh_units``, ``w_hh_blocks``, and W_ih, W_hh and the bias in the parts' row order); a module
that keeps them beside its int8 weights (recomputing them whenever those, their scales or the
biases change) passes ``{**w, **pack(w, opts)}`` and ``run`` skips the repacking (about a copy of
the weights per call).

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

import os
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import int8_gemm as gemm
from . import int8_steps as steps
from . import int8_team as team
from . import threads
from .common import step_sizes
from .threads import split_rows

MODES = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}
TEAM_MIN_ROWS = 2  # two threads from B = 4 rows, in torch's OpenMP team (threads.split_rows)
POOL_MIN_ROWS = 64
_PACKED = ("w_ih_p", "w_ih_c", "w_hh_p", "w_hh_c", "bias_p", "b_hn_p")
# From this many hidden units the LSTM's W_hh (no projection) is packed in two parts of units,
# so that two threads can each stream their half (int8_team); from W_hh of UNIT_SPLIT_BYTES and
# up, two threads split the units rather than the batch rows (each half then fits its L2).
UNIT_SPLIT_H = 512
UNIT_SPLIT_BYTES = 1 << 21
# GATEDRNN_INT8_PAIR=0 turns the split by units off (rows split from B = 4, below that one
# thread): the meeting per step is cheap only where the two threads have a core each.
PAIR = os.environ.get("GATEDRNN_INT8_PAIR", "1") != "0"
# An absent second product (packed weight, comp, scales) and its scratch (rows, u8 rows, sums):
# empty arrays the kernels only test for size, never write.
_NO_PRODUCT = (np.empty((0, 0, 0), np.int8), np.empty(0, np.int32), np.empty(0, np.float32))
_NO_ROWS = (np.empty((0, 0), np.float32), np.empty((0, 0), np.uint8), np.empty((0, 0), np.int32))
_NO_SYNC = np.empty(0, np.int64)  # lstm_units alone, meeting no other half


def pack(w: Mapping[str, Tensor | None], opts: Any) -> dict[str, Tensor]:
    """The packed layout of the int8 weights (``int8_gemm.pack``), as entries to add to ``w``.

    An LSTM without projection from ``UNIT_SPLIT_H`` units has its gate rows in parts of hidden
    units instead (``_unit_parts``): W_ih, W_hh and the bias alike, so that the input
    projection hands each part its gates side by side."""
    out: dict[str, Tensor] = {}
    w_ih, w_hh = _need(w, "w_ih_q"), _need(w, "w_hh_q")
    if w_hh.dim() != 2:
        raise ValueError("the int8 engine has no head-wise W_hh (num_heads > 1)")
    H = w_hh.shape[0] // GATES[opts.mode]
    out["bias_p"], out["b_hn_p"] = _biases(w, opts, H)
    if opts.mode == "lstm" and w.get("w_hr_q") is None and H >= UNIT_SPLIT_H:
        return _unit_parts(w, out["bias_p"], out["b_hn_p"], H)
    out["w_ih_p"], out["w_ih_c"] = gemm.pack(w_ih)
    if opts.mode == "gru" and not opts.reset_after:
        out["w_hh_p"], out["w_hh_c"] = gemm.pack(w_hh[: 2 * H])
        out["w_hn_p"], out["w_hn_c"] = gemm.pack(w_hh[2 * H:])
    else:
        out["w_hh_p"], out["w_hh_c"] = gemm.pack(w_hh)
    if w.get("w_hr_q") is not None:
        out["w_hr_p"], out["w_hr_c"] = gemm.pack(_need(w, "w_hr_q"))
    return out


def _unit_parts(w: Mapping[str, Tensor | None], bias: Tensor, bn: Tensor, H: int
                ) -> dict[str, Tensor]:
    """The LSTM's weights for ``steps.lstm_units``, in two parts of hidden units: part p holds
    the rows of gates i|f|g|o of units [u_p, u_p+1) (``w_hh_units`` = [0, u_1, H]). W_ih and the
    bias in that row order throughout (``w_ih_p``, ``w_ih_c``, ``w_ih_us`` its row scales,
    ``bias_p``), so G[t, b] holds part p's 4 gates at 4·u_p; W_hh packed part by part, each
    padded to whole blocks (``w_hh_p``, ``w_hh_c``, ``w_hh_us`` the scales, zero on padding;
    part p in blocks [``w_hh_blocks``[p], ``w_hh_blocks``[p + 1]))."""
    half = min(-(-H // 32) * 16, H)  # (a multiple of 16 units: whole vectors in the gate pass)
    units = [0, half, H]
    order = [torch.cat([torch.arange(q * H + u0, q * H + u1) for q in range(4)])
             for u0, u1 in zip(units, units[1:])]
    perm = torch.cat(order)
    out = {"bias_p": bias[perm].contiguous(), "b_hn_p": bn,
           "w_ih_us": _need(w, "w_ih_s").detach().float()[perm].contiguous()}
    out["w_ih_p"], out["w_ih_c"] = gemm.pack(_need(w, "w_ih_q")[perm])
    w_hh, sw = _need(w, "w_hh_q"), _need(w, "w_hh_s").detach().float()
    packs, comps, scales, blocks = [], [], [], [0]
    for rows in order:
        wp, comp = gemm.pack(w_hh[rows])
        s = torch.zeros(comp.shape[0])
        s[: rows.shape[0]] = sw[rows]
        packs.append(wp)
        comps.append(comp)
        scales.append(s)
        blocks.append(blocks[-1] + wp.shape[0])
    out.update({"w_hh_p": torch.cat(packs), "w_hh_c": torch.cat(comps),
                "w_hh_us": torch.cat(scales), "w_hh_units": torch.tensor(units),
                "w_hh_blocks": torch.tensor(blocks)})
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


def _copy(t: Tensor) -> np.ndarray:
    """A float32 C-contiguous copy of a state part, as numpy (the loops write it in place)."""
    return np.array(t.detach().numpy(), np.float32, order="C")


def _acc(rows: int, packed: np.ndarray) -> np.ndarray:
    return np.empty((rows, packed.shape[0] * gemm.UNITS), np.int32)


def _project(X: np.ndarray, wp: np.ndarray, comp: np.ndarray, sw: np.ndarray,
             bias: np.ndarray, G: np.ndarray) -> None:
    """G (R, N) = the int8 product of X (R, I) quantized per row with W, + bias."""
    R, I = X.shape

    def work(part: int, lo: int, hi: int) -> None:
        rows = min(steps.ROW_TILE, max(hi - lo, 1))
        steps.project(X, wp, comp, sw, bias, G, _u8(rows, I, 0), np.empty(rows, np.float32),
                      _acc(rows, wp), lo, hi, gemm.token(gemm.ISA))

    _rows(R, work, POOL_MIN_ROWS, steps.ROW_TILE, R * I * G.shape[1] // 4)


_LOCAL = threading.local()


def _u8(M: int, K: int, tag: int) -> np.ndarray:
    """``gemm.as_u8_rows(M, K)``, kept per thread and call site (``tag``) for the next call
    (np.full cost ~2 µs a buffer). Safe to reuse: a call finishes with it before its thread
    makes another, and what a kernel reads of it (the quantized rows) it wrote first."""
    cache = getattr(_LOCAL, "u8", None)
    if cache is None or len(cache) > 32:
        cache = _LOCAL.u8 = {}
    buf = cache.get((M, K, tag))
    if buf is None:
        buf = cache[(M, K, tag)] = gemm.as_u8_rows(M, K)
    return buf


_SIZES: dict[tuple[int, int], np.ndarray] = {}


def _sizes(batch_sizes: Tensor | None, T: int, B: int) -> np.ndarray:
    """``common.step_sizes`` (active rows per step); the all-active one kept per (T, B), read
    only."""
    if batch_sizes is not None:
        return step_sizes(batch_sizes, T, B)[0]
    sizes = _SIZES.get((T, B))
    if sizes is None:
        if len(_SIZES) > 64:
            _SIZES.clear()
        sizes = _SIZES[(T, B)] = np.full(T, B, np.int64)
        sizes.flags.writeable = False
    return sizes


def _rows(B: int, work: Any, min_rows: int, team_rows: int, size: int) -> None:
    """``threads.split_rows``, called only where it may split: a call it would run whole on
    this thread goes straight to ``work`` (no BLAS runs in these kernels, so its one-thread BLAS
    setting is moot), which saves microseconds a call at T = 1."""
    if torch.get_num_threads() < 2 or B < 2 * min(min_rows, team_rows) or \
            size < threads.MIN_SPLIT_WORK:
        work(0, 0, B)
    else:
        split_rows(B, work, min_rows, team_rows, size=size)


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
    sizes = _sizes(batch_sizes, T, B)
    Gn = np.empty((T, B, GH), np.float32)  # the input projection, then the loop's gates
    _project(np.ascontiguousarray(x.detach().numpy().reshape(T * B, I)), _need(p, "w_ih_p").numpy(),
             _need(p, "w_ih_c").numpy(), _np(p.get("w_ih_us", p.get("w_ih_s")), np.float32),
             _need(p, "bias_p").numpy(), Gn.reshape(T * B, GH))
    Yn = np.empty((T, B, Ho), np.float32)
    Y = torch.from_numpy(Yn)
    if "w_hh_units" in p:  # the LSTM with its gate rows in parts of units
        return _lstm_units(Gn, Y, state, p, sizes, reverse)
    hn = _copy(h0)  # becomes h_n
    hw = torch.from_numpy(hn)
    wp, comp = _need(p, "w_hh_p").numpy(), _need(p, "w_hh_c").numpy()
    sw = _np(p.get("w_hh_s"), np.float32)
    xu, sx, acc = _u8(B, Ho, 1), np.empty(B, np.float32), _acc(B, wp)
    parts: tuple[Any, ...]
    args: tuple[Any, ...]
    if mode == "lstm":
        cw = torch.from_numpy(_copy(state[1]))
        if p.get("w_hr_q") is not None:
            rp = _need(p, "w_hr_p").numpy()
            proj = (rp, _need(p, "w_hr_c").numpy(), _np(p.get("w_hr_s"), np.float32),
                    np.empty((B, H), np.float32), _u8(B, H, 2), _acc(B, rp))
        else:
            proj = _NO_PRODUCT + _NO_ROWS
        kernel = steps.lstm
        args = (Gn, Yn, hn, cw.numpy(), sizes, reverse, wp, comp, sw, *proj[:3], xu, sx, acc,
                *proj[3:])
        parts = (hw, cw)
    elif mode == "gru":
        if opts.reset_after:
            second = _NO_PRODUCT
            ru, acc2 = _NO_ROWS[1:]
        else:
            np2 = _need(p, "w_hn_p").numpy()
            second = (np2, _need(p, "w_hn_c").numpy(), np.ascontiguousarray(sw[2 * H:]))
            sw = np.ascontiguousarray(sw[: 2 * H])
            ru, acc2 = _u8(B, H, 2), _acc(B, np2)
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

    _rows(B, work, POOL_MIN_ROWS, TEAM_MIN_ROWS, T * B * GH * Ho // 4)
    return Y, parts, None


def _lstm_units(G: np.ndarray, Y: Tensor, state: tuple[Tensor, ...],
                p: Mapping[str, Tensor | None], sizes: np.ndarray, reverse: bool
                ) -> tuple[Tensor, tuple[Tensor, ...], None]:
    """The LSTM's time loop on W_hh in parts of units (``steps.lstm_units``): with two threads,
    the two parts on two threads meeting every step (``int8_team.pair``) where W_hh is large or
    the batch too small to split, else the batch rows split (``threads.split_rows``)."""
    T, B, GH = G.shape
    H = GH // 4
    hb = np.empty((2, B, H), np.float32)  # h of even and odd steps; h0 first
    hb[0] = state[0].detach().numpy()
    cw = _copy(state[1])  # becomes c_n
    wp, comp = _need(p, "w_hh_p").numpy(), _need(p, "w_hh_c").numpy()
    sw, units = _need(p, "w_hh_us").numpy(), _need(p, "w_hh_units").numpy()
    blocks = _need(p, "w_hh_blocks").numpy()
    width = int(blocks[1]) * gemm.UNITS  # the sums of part 0, the wider (_unit_parts)
    args = (G, Y.numpy(), hb, cw, sizes, reverse, wp, comp, sw, units, blocks)
    isa = gemm.token(gemm.ISA)
    size = T * B * GH * H // 4

    def scratch(tag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _u8(B, H, tag), np.empty(B, np.float32), np.empty((B, width), np.int32)

    rows = scratch(1)
    alone = _NO_SYNC
    if torch.get_num_threads() < 2 or size < threads.MIN_SPLIT_WORK:
        steps.lstm_units(*args, *rows, 0, B, 0, 2, alone, isa)
    elif PAIR and (B < 2 * TEAM_MIN_ROWS or wp.nbytes >= UNIT_SPLIT_BYTES):
        sync, other = team.sync_counters(), scratch(2)
        team.pair(lambda: steps.lstm_units(*args, *rows, 0, B, 0, 2, alone, isa),
                  lambda part: steps.lstm_units(*args, *(other if part else rows), 0, B, part,
                                                part + 1, sync, isa), size)
    else:
        split_rows(B, lambda part, lo, hi: steps.lstm_units(*args, *rows, lo, hi, 0, 2, alone, isa),
                   POOL_MIN_ROWS, TEAM_MIN_ROWS, size=size)
    return Y, (torch.from_numpy(hb[T % 2]), torch.from_numpy(cw)), None
