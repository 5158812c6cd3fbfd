"""The int8 engine of every cell: the plain LSTM/GRU/RNN on ``int8.run``, the rest here.

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, state_n, None)

keeps the engine interface (``gatedrnn.equations.reference.run``) with the int8 weights of the
scheme in ``gatedrnn.equations.quantized``, whose ``run`` is its oracle. It is the "int8" engine
that ``equations.kinds`` declares for every cell. A plain LSTM, GRU or RNN (no layer norm,
peepholes, zoneout or heads) goes straight to ``int8.run``; here run:

- LSTM and GRU with head-wise W_hh (num_heads > 1), layer norm, peepholes (LSTM) and zoneout's
  evaluation form (h' = p h + (1 − p) h'; c likewise), in any combination ``cells.py`` allows;
- sLSTM, dense or head-wise;
- minGRU and minLSTM: their gates see x alone, so the one int8 product is the input projection of
  all steps at once, then the float32 scan of the fused engine (``minrnn_steps.forward``).

Work per call: x is quantized per (t, b) row and multiplied by W_ih for every step at once
(``int8_steps.project``); with layer norm each row of that product is normalised there too
(``int8_variant_steps.ln_rows``). Then one numba loop runs all steps (``int8_variant_steps``): per
step h is quantized per row, one ``int8_gemm.qgemm`` per head (a dense W_hh is one head), then
the float32 gate math. No Python runs per step. Rows split over two threads as in ``int8``.

Packed weights: ``pack(w, opts)`` returns the blocked layout as extra entries of the weights dict
(``int8.pack``'s for a plain cell, else ``v_*`` entries); pass ``{**w, **pack(w, opts)}`` to skip
the packing per call.

Not here: ``record`` (ValueError), training masks (ValueError), float64 or half input
(TypeError).

Example:
    >>> import torch
    >>> from gatedrnn.equations.cells import CellOptions
    >>> from gatedrnn.equations.quantized import quantize_weights
    >>> from gatedrnn.engines.kernels import int8_variants
    >>> T, B, I, H = 5, 2, 3, 4
    >>> w = quantize_weights({"w_ih": torch.randn(4 * H, I), "w_hh": torch.randn(2, 8, 2)})
    >>> opts = CellOptions("slstm")
    >>> y, (h, c, n, m), _ = int8_variants.run(torch.randn(T, B, I), (torch.zeros(B, H),) * 4,
    ...                                        w, None, False, opts, {}, False)
    >>> y.shape, m.shape
    (torch.Size([5, 2, 4]), torch.Size([2, 4]))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import int8, minrnn_steps
from . import int8_gemm as gemm
from . import int8_variant_steps as steps
from .common import step_sizes
from .threads import split_rows

_need = int8._need  # (one check of a missing weight, one message, for both engines)

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1, "mingru": 2, "minlstm": 3, "slstm": 4}
TEAM_MIN_ROWS = int8.TEAM_MIN_ROWS
POOL_MIN_ROWS = int8.POOL_MIN_ROWS
_PARTS = {"lstm": 2, "slstm": 4}  # the state's parts (the others: h alone)
_PLAIN = frozenset(int8.MODES)
_EMPTY_F = np.empty((0, 0), np.float32)


def is_plain(w: Mapping[str, Tensor | None], opts: Any) -> bool:
    """Whether ``int8.run`` covers this call: a LSTM/GRU/RNN without variants or heads."""
    return (opts.mode in _PLAIN and not opts.layer_norm and not opts.zoneout
            and not opts.zoneout_cell and w.get("peephole") is None
            and _need(w, "w_hh_q").dim() == 2)


def _heads(wq: Tensor, ws: Tensor, G: int, lo: int, hi: int) -> tuple[Tensor, Tensor, Tensor]:
    """Gates lo … hi − 1 of a dense (G·H, K) or head-wise (nh, G·d, d) W_hh, packed per head:
    (packed (nh, nblk, Kp/4, 256), comp (nh, Np), scales (nh, (hi − lo)·d))."""
    if wq.dim() == 2:
        wq, ws = wq.unsqueeze(0), ws.unsqueeze(0)
    d = wq.shape[1] // G
    parts = [gemm.pack(wq[j, lo * d:hi * d].contiguous()) for j in range(wq.shape[0])]
    return (torch.stack([p for p, _ in parts]), torch.stack([c for _, c in parts]),
            ws[:, lo * d:hi * d].float().contiguous())


def pack(w: Mapping[str, Tensor | None], opts: Any) -> dict[str, Tensor]:
    """The packed layout of the int8 weights, as entries to add to ``w`` (module docstring)."""
    if opts.mode in _PLAIN and is_plain(w, opts):
        return int8.pack(w, opts)
    mode = opts.mode
    G = GATES[mode]
    w_ih = _need(w, "w_ih_q")
    GH = w_ih.shape[0]
    out: dict[str, Tensor] = {}
    out["v_ih_p"], out["v_ih_c"] = gemm.pack(w_ih)
    zeros = torch.zeros(GH)
    b_ih, b_hh = w.get("b_ih"), w.get("b_hh")
    b_ih = zeros if b_ih is None else b_ih.detach().float()
    b_hh = zeros if b_hh is None else b_hh.detach().float()
    ln = bool(getattr(opts, "layer_norm", False))
    # Where each bias adds: in the projection, after LN_x, or inside the loop (``steps``).
    if mode == "gru":
        proj, after_x, inner = (zeros, b_ih, b_hh) if ln else (b_ih, zeros, b_hh)
    elif mode == "lstm" and ln:
        proj, after_x, inner = zeros, zeros, b_ih + b_hh
    else:
        proj, after_x, inner = b_ih + b_hh, zeros, zeros
    out["v_bias_p"], out["v_bias_x"], out["v_bias_h"] = (
        b.contiguous().clone() for b in (proj, after_x, inner))
    if mode in ("mingru", "minlstm"):
        return out
    wq, ws = _need(w, "w_hh_q"), _need(w, "w_hh_s")
    if mode == "gru" and not opts.reset_after:
        out["v_hh_p"], out["v_hh_c"], out["v_hh_s"] = _heads(wq, ws, 3, 0, 2)
        out["v_hn_p"], out["v_hn_c"], out["v_hn_s"] = _heads(wq, ws, 3, 2, 3)
    else:
        out["v_hh_p"], out["v_hh_c"], out["v_hh_s"] = _heads(wq, ws, G, 0, G)
    if w.get("w_hr_q") is not None:
        out["v_hr_p"], out["v_hr_c"] = gemm.pack(_need(w, "w_hr_q"))
    if ln:
        H = GH // G
        lnw = torch.zeros(4 if mode == "lstm" else 2, GH)
        lnw[0], lnw[1] = _need(w, "ln_h_w"), _need(w, "ln_h_b")
        if mode == "lstm":
            lnw[2, :H], lnw[3, :H] = _need(w, "ln_c_w"), _need(w, "ln_c_b")
        out["v_lnw"] = lnw
    return out


def _zoneout(opts: Any, masks: Mapping[str, Tensor | None]) -> tuple[float, float]:
    """The evaluation form's probabilities (p_h, p_c); training masks are refused."""
    if opts.training or masks.get("recurrent") is not None or any(
            m is not None and m.dim() > 0 for m in masks.values()):
        raise ValueError("the int8 engine is inference only: no dropout or zoneout masks")
    return float(opts.zoneout), float(opts.zoneout_cell)


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
    """One direction of one int8 layer of any cell (contract: ``reference.run``).

    Shapes: x (T, B, I) float32; state as the cell declares it (``kinds.CellKind.state``), each
    part (B, H) or (B, H_out); returns y (T, B, H_out), the final state, and None (no gates).
    """
    # (int8.pack's entries, w_hh_p among them, mark a plain cell packed: one dict lookup)
    if "w_hh_p" in w or (opts.mode in _PLAIN and is_plain(w, opts)):
        return int8.run(x, state, w, batch_sizes, reverse, opts, masks, record)
    mode = opts.mode
    if mode not in GATES:
        raise ValueError(f"the int8 engine runs the cells {tuple(GATES)}, got {mode!r}")
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise TypeError(f"the int8 engine takes float32 CPU input, got {x.dtype} on {x.device}")
    if record:
        raise ValueError("the int8 engine does not record gates (return_gates)")
    zo_h, zo_c = _zoneout(opts, masks)
    p = w if "v_ih_p" in w else {**w, **pack(w, opts)}
    T, B, I = x.shape
    w_ih = _need(p, "w_ih_q")
    GH = w_ih.shape[0]
    H = GH // GATES[mode]
    Ho = H if p.get("w_hr_q") is None else _need(p, "w_hr_q").shape[0]
    # The loops read by index: a width that does not match the weights would read past them.
    if w_ih.shape[1] != I or len(state) != _PARTS.get(mode, 1) or \
            any(tuple(s.shape) != (B, n) for s, n in zip(state, (Ho,) + (H,) * 3)):
        raise ValueError(f"int8 engine: input (T, B, I) = {tuple(x.shape)} and state "
                         f"{[tuple(s.shape) for s in state]} do not fit w_ih {tuple(w_ih.shape)}")
    sizes, _ = step_sizes(batch_sizes, T, B)
    ln = bool(opts.layer_norm)
    G = torch.empty(T, B, GH)
    G2 = G.view(T * B, GH)
    int8._project(x.detach().contiguous().reshape(T * B, I).numpy(), _need(p, "v_ih_p").numpy(),
                  _need(p, "v_ih_c").numpy(), _need(p, "w_ih_s").float().numpy(),
                  _need(p, "v_bias_p").numpy(), G2.numpy())
    if ln:
        steps.ln_rows(G2.numpy(), _need(p, "ln_x_w").numpy(), _need(p, "ln_x_b").numpy(),
                      float(opts.ln_eps), _need(p, "v_bias_x").numpy(), 0, T * B)
    hw = state[0].detach().float().contiguous().clone()  # becomes h_n
    Y = torch.empty(T, B, Ho)
    Gn, Yn, hn = G.numpy(), Y.numpy(), hw.numpy()
    if mode in ("mingru", "minlstm"):
        lstm = mode == "minlstm"

        def scan(part: int, lo: int, hi: int) -> None:
            minrnn_steps.forward(Gn, hn, Yn, sizes, reverse, lstm, lo, hi)

        split_rows(B, scan, POOL_MIN_ROWS, 16)
        return Y, (hw,), None
    wp, comp, sw = (_need(p, f"v_hh_{k}").numpy() for k in "pcs")
    nh = wp.shape[0]
    k = Ho // nh
    xu = np.full((nh, B, gemm.as_u8_rows(1, k).shape[1]), 128, np.uint8)
    full, sx = gemm.as_u8_rows(B, Ho), np.empty(B, np.float32)
    acc = np.empty((nh, B, comp.shape[1]), np.int32)
    rest = [s.detach().float().contiguous().clone() for s in state[1:]]
    isa = gemm.token(gemm.ISA)
    if mode == "slstm":
        cn, nn, mn = (s.numpy() for s in rest)
        args: tuple[Any, ...] = (Gn, Yn, hn, cn, nn, mn, sizes, reverse, wp, comp, sw, xu, full,
                                 sx, acc)
        kernel = steps.slstm
    else:
        hp = np.empty((B, GH), np.float32)
        lnw = _need(p, "v_lnw").numpy() if ln else _EMPTY_F
        eps = float(opts.ln_eps)
        bias_h = _need(p, "v_bias_h").numpy()
        if mode == "lstm":
            peep = w.get("peephole")
            if p.get("v_hr_p") is not None:
                rp = _need(p, "v_hr_p").numpy()
                proj: tuple[Any, ...] = (rp, _need(p, "v_hr_c").numpy(),
                                         _need(p, "w_hr_s").float().numpy(),
                                         np.empty((B, H), np.float32), gemm.as_u8_rows(B, H),
                                         np.empty((B, rp.shape[0] * gemm.UNITS), np.int32))
            else:
                proj = (np.empty((0, 0, 0), np.int8), np.empty(0, np.int32),
                        np.empty(0, np.float32), _EMPTY_F, np.empty((0, 0), np.uint8),
                        np.empty((0, 0), np.int32))
            args = (Gn, Yn, hn, rest[0].numpy(), sizes, reverse, wp, comp, sw, xu, full, sx, acc,
                    hp, ln, lnw, eps, bias_h,
                    _EMPTY_F if peep is None else peep.detach().float().contiguous().numpy(),
                    np.float32(zo_h), np.float32(zo_c), *proj)
            kernel = steps.lstm
        elif mode == "gru":
            if opts.reset_after:
                second: tuple[Any, ...] = (wp, comp, sw)  # (unused)
            else:
                second = tuple(_need(p, f"v_hn_{k}").numpy() for k in "pcs")
            args = (Gn, Yn, hn, sizes, reverse, bool(opts.reset_after), wp, comp, sw, xu, full,
                    sx, acc, hp, ln, lnw, eps, bias_h, np.float32(zo_h), *second,
                    np.empty((B, H), np.float32))
            kernel = steps.gru
        else:
            raise ValueError(f"the int8 engine has no variants of {mode!r}")

    def work(part: int, lo: int, hi: int) -> None:  # rows [lo, hi): their own rows of the scratch
        kernel(*args, lo, hi, isa)

    split_rows(B, work, POOL_MIN_ROWS, TEAM_MIN_ROWS, size=T * B * GH * Ho // (4 * nh))
    return Y, (hw, *rest), None
