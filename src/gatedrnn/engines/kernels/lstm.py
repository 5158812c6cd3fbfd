"""The fused CPU LSTM engine: one direction of one layer, forward and hand-derived backward.

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, (h_n, c_n), gates)

is the engine interface of ``gatedrnn.equations.reference.run`` (contract and shapes there); the equations are
``gatedrnn.equations.cells.lstm_cell``. The work is split so that almost every flop is a large GEMM:

- forward: G = x W_ih^T + b_ih + b_hh for all steps in one ``addmm``; then the numba loop in
  ``lstm_steps.forward`` (per step one recurrent GEMM plus one fused pass over the gates; in
  inference the GEMM runs on a W_hh packed once per call, ``kernels.packed``, same bits);
- backward: ``lstm_steps.backward`` runs BPTT and leaves dA = dL/d(gate pre-activations) for all
  steps; then dx = dA W_ih, dW_ih = dA^T x, dW_hh = dA^T h_prev, dW_hr = dĥ^T r are one GEMM each.

Head-wise recurrence: ``w["w_hh"]`` may be (nh, 4d, d), d = H / nh (``cells.headwise_product``;
proj_size is not supported with it). The gates stay in torch's gate-major layout; each step's
product and its backward run one small GEMM per head and gate on views of the gate rows
(``heads.headwise_prod``), and dR is one GEMM per head and gate over all steps
(``common.head_blocks_grad``): the recurrent FLOPs are 1/nh of the dense ones.

With layer norm, LN_x(W_ih x) is not recurrent, so it runs as torch ops under autograd before the
loop and the kernel receives G directly. Without gradients (inference) nothing per step is stored.
Large batches run their rows in two halves on two threads (``threads.split_rows``). Eager calls use
``fused.FusedFunction``; under torch.compile the same code runs as custom ops (``compiled``).

Example:
    >>> import torch
    >>> from gatedrnn.equations.cells import CellOptions
    >>> from gatedrnn.engines.kernels import lstm
    >>> T, B, I, H = 5, 2, 3, 4
    >>> w = {"w_ih": torch.randn(4 * H, I), "w_hh": torch.randn(4 * H, H)}
    >>> y, (h, c), _ = lstm.run(torch.randn(T, B, I), (torch.zeros(B, H), torch.zeros(B, H)), w,
    ...                         None, False, CellOptions("lstm"), {}, False)
    >>> y.shape, h.shape
    (torch.Size([5, 2, 4]), torch.Size([2, 4]))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import compiled, pair
from . import lstm_steps as steps
from .common import as_np, gemm_scratch, off, recurrent_weight_grad
from .fused import Call, Kernel, apply, needs_autograd, register
from .heads import as_heads, heads_of
from .linear import linear, matmul, project_and_run, time_blocks
from .packed import pack_weight
from .threads import split_rows

POOL_MIN_ROWS = 64  # two threads from B = 2 * 64 rows on a pool thread (threads.split_rows)
TEAM_MIN_ROWS = 16  # ... from B = 32 in torch's OpenMP team: 1.03-1.2x at the benchmark shapes


def _zone_np(z: Tensor | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Zoneout keep-weights as the kernel reads them: (T, B, ·), or (1, 1, 1) holding p."""
    if z is None:
        return off(dtype, 3)
    if z.dim() == 0:
        return z.detach().reshape(1, 1, 1).numpy()
    return z.detach().expand(shape).contiguous().numpy()


def _forward(call: Call, xin, w_ih, b_ih, b_hh, h0, c0, w_hh, w_hr, P, lnh, lnc, keep: bool):
    """The forward pass on plain tensors (no autograd). Returns y, h_n, c_n and, when ``keep``,
    the buffers the backward pass needs."""
    T, B = xin.shape[0], xin.shape[1]
    H = c0.shape[-1]
    Ho = h0.shape[-1]
    dt = xin.dtype
    nd = np.dtype(np.float32 if dt == torch.float32 else np.float64)
    assert not (heads_of(w_hh) and w_hr is not None), "num_heads with proj_size"  # module refuses
    # Inference projects block by block (time_blocks); gate recording reads the whole G.
    blocks = w_ih is not None and not keep and not call.record
    bias = None
    if w_ih is not None:
        bias = b_ih if b_hh is None else (b_hh if b_ih is None else b_ih + b_hh)
        x2 = xin.reshape(T * B, xin.shape[2])
        if blocks:
            spans = time_blocks(T, B, call.reverse)
            G = torch.empty((max(t1 - t0 for t0, t1 in spans), B, 4 * H), dtype=dt)
        else:
            G = linear(x2, w_ih, bias).view(T, B, 4 * H)  # (T, B, 4H)
    else:
        G = xin.contiguous().clone() if xin.is_contiguous() else xin.contiguous()
    hw = h0.contiguous().clone()  # becomes h_n
    cw = c0.contiguous().clone()  # becomes c_n
    new = torch.zeros if call.packed else torch.empty  # inactive rows must read as zeros
    Y = new((T, B, Ho), dtype=dt)
    C = new((T, B, H), dtype=dt) if keep else None
    zc_np = _zone_np(call.zc, (T, B, H), nd)
    CH = torch.empty((T, B, H), dtype=dt) if keep and zc_np.shape[0] > 0 else None
    ln = lnh is not None
    XH = torch.empty((T, B, 4 * H), dtype=dt) if keep and ln else None
    XC = torch.empty((T, B, H), dtype=dt) if keep and ln else None
    RS = torch.empty((T if keep else 1, B, 2), dtype=dt) if ln else None
    zh_np = _zone_np(call.zh, (T, B, Ho), nd)
    whh = as_heads(w_hh, 4, H)
    wp: Any = pack_weight(whh[0], T, B, keep) if whh.shape[0] == 1 else off(nd, 1)
    rest = (
        call.reverse, keep, whh, as_np(w_hr, nd, 2), as_np(P, nd, 2), as_np(call.m, nd, 2))
    tail = (
        as_np(lnh, nd, 2), as_np(lnc, nd, 2), as_np(XH, nd, 3), as_np(XC, nd, 3), as_np(RS, nd, 3),
        call.eps, np.empty((2, B, H), nd), np.empty((B, Ho), nd) if call.m is not None else off(nd, 2),
        np.empty((B, 4 * H), nd) if ln else off(nd, 2),
    )

    # One or two rows of the plain cell in inference: two threads split the units (pair).
    paired = (not keep and not call.record and whh.shape[0] == 1 and Ho == H
              and all(v is None for v in (P, call.m, lnh, lnc, call.zh, call.zc))
              and pair.usable(B, H, T, 4, dt))

    # One or two rows of a variant, or in training: W_hh packed for kernels.gemv (pair.packed_rows).
    if not paired and whh.shape[0] == 1:
        wp = pair.packed_rows(whh[0], B, H, T, 4, keep) or wp

    def steps_of(t0: int, t1: int, g: np.ndarray) -> None:  # steps [t0, t1), g their projection
        if paired:
            pair.lstm(g, hw.numpy(), cw.numpy(), Y.numpy()[t0:t1], call.sizes[t0:t1], call.reverse,
                      whh[0])
            return

        def cut(z: np.ndarray) -> np.ndarray:  # full (T, ·, ·) masks follow the span
            return z[t0:t1] if z.shape[0] == T and T > 1 else z

        args = (g, hw.numpy(), cw.numpy(), Y.numpy()[t0:t1], cut(as_np(C, nd, 3)),
                cut(as_np(CH, nd, 3)), call.sizes[t0:t1], *rest, cut(zh_np), cut(zc_np), *tail)

        def work(part: int, lo: int, hi: int) -> None:  # rows [lo, hi); scratch of its own
            steps.forward(*args, np.zeros((2, H), nd), lo, hi, gemm_scratch(nd), wp)

        split_rows(B, work, POOL_MIN_ROWS, TEAM_MIN_ROWS)

    if blocks:
        project_and_run(x2, w_ih, bias, G, spans, steps_of)
    else:
        steps_of(0, T, G.numpy())
    if call.record:
        assert C is not None  # recording keeps the buffers
        call.sink = _gates(G, C, call, H)
    return Y, hw, cw, (G, C, CH, XH, XC, RS)


def _gates(G: Tensor, C: Tensor, call: Call, H: int) -> dict[str, Tensor]:
    """Recorded gates, each (T, B, H), zero on inactive rows (G holds x W_ih^T there)."""
    gates = {name: G[..., k * H:(k + 1) * H].clone()
             for k, name in enumerate(("input", "forget", "candidate", "output"))}
    gates["cell"] = C.clone()
    if call.packed:
        rows = torch.arange(G.shape[1])[None, :] < torch.from_numpy(call.sizes)[:, None]  # (T, B)
        for v in gates.values():
            v.mul_(rows[..., None].to(v.dtype))
    return gates


def _backward(call: Call, saved, dy, dhn, dcn, needs):
    """Gradients of every input of ``_forward`` from dL/dy, dL/dh_n, dL/dc_n."""
    xin, w_ih, h0, c0, w_hh, w_hr, P, lnh, lnc, Y, G, C, CH, XH, XC, RS = saved
    T, B = G.shape[0], G.shape[1]
    H, Ho, GH = c0.shape[-1], h0.shape[-1], G.shape[2]
    dt = G.dtype
    nd = np.dtype(np.float32 if dt == torch.float32 else np.float64)
    dY = torch.zeros_like(Y) if dy is None else dy.contiguous()
    dh = torch.zeros_like(h0) if dhn is None else dhn.contiguous().clone()  # becomes dL/dh0
    dc = torch.zeros_like(c0) if dcn is None else dcn.contiguous().clone()  # becomes dL/dc0
    dA = torch.empty_like(G)
    DZ = torch.empty_like(G) if lnh is not None else dA
    proj = w_hr is not None
    new = torch.zeros if call.packed else torch.empty  # the kernel writes active rows only
    E = new((T, B, Ho), dtype=dt) if proj else None
    R = new((T, B, H), dtype=dt) if proj else None
    whh = as_heads(w_hh, 4, H)
    # One or two rows: δz W_hh on W_hh^T packed for kernels.gemv (the same bits, faster).
    wpt = pair.packed_rows_t(whh[0], B, H, T, 4) if whh.shape[0] == 1 else None
    args = (
        G.numpy(), C.numpy(), as_np(CH, nd, 3), as_np(c0, nd, 2), dY.numpy(), dh.numpy(), dc.numpy(),
        dA.numpy(), DZ.numpy(), as_np(E, nd, 3), as_np(R, nd, 3), call.sizes, call.reverse,
        whh, as_np(w_hr, nd, 2), as_np(P, nd, 2), as_np(call.m, nd, 2),
        _zone_np(call.zh, (T, B, Ho), nd), _zone_np(call.zc, (T, B, H), nd), as_np(lnh, nd, 2),
        as_np(lnc, nd, 2), as_np(XH, nd, 3), as_np(XC, nd, 3), as_np(RS, nd, 3),
    )
    # Parameter-gradient accumulators per part, summed after: rows never share memory.
    sums: list[list[Tensor | None]] = [[None if v is None else torch.zeros_like(v) for v in (P, lnh, lnc)]
                                       for _ in range(2)]

    def work(part: int, lo: int, hi: int) -> None:
        acc = [as_np(v, nd, 2) for v in sums[part]]
        steps.backward(*args, *acc, np.empty((3, B, Ho), nd),
                       np.empty((B, H), nd) if proj else off(nd, 2), np.zeros((3, H), nd),
                       lo, hi, gemm_scratch(nd), *(() if wpt is None else (wpt,)))

    split_rows(B, work, POOL_MIN_ROWS, TEAM_MIN_ROWS)
    dP, dlnh, dlnc = (None if a is None else a + b for a, b in zip(*sums))
    dA2 = dA.view(T * B, GH)
    dx = dw_ih = db = None
    if w_ih is not None:
        x2 = xin.reshape(T * B, xin.shape[2])
        dx = matmul(dA2, w_ih).view(xin.shape) if needs[0] else None
        dw_ih = torch.mm(dA2.t(), x2) if needs[1] else None  # one GEMM over all steps
        db = dA2.sum(0) if needs[2] or needs[3] else None
    else:
        dx = dA
    dw_hh = recurrent_weight_grad((DZ,), Y, h0, call.m, call.sizes, call.reverse,
                                  heads_of(w_hh)) if needs[6] else None
    # (E and R exist exactly with a projection)
    dw_hr = torch.mm(E.view(T * B, Ho).t(), R.view(T * B, H)) \
        if E is not None and R is not None and needs[7] else None
    return dx, dw_ih, db, dh, dc, dw_hh, dw_hr, dP, dlnh, dlnc


def _stack(lnh_w, lnh_b, lnc_w, lnc_b):
    """Layer norm's (gain, shift) pairs as the kernel reads them: (2, 4H) and (2, H), or None."""
    return (None if lnh_w is None else torch.stack([lnh_w, lnh_b]),
            None if lnc_w is None else torch.stack([lnc_w, lnc_b]))


def _kernel_forward(call: Call, xin, w_ih, b_ih, b_hh, h0, c0, w_hh, w_hr, P, lnh_w, lnh_b, lnc_w,
                    lnc_b, keep: bool):
    """``fused.Kernel.forward``: outs (y, h_n, c_n), bufs (G, C, CH, XH, XC, RS)."""
    lnh, lnc = _stack(lnh_w, lnh_b, lnc_w, lnc_b)
    y, hn, cn, bufs = _forward(call, xin, w_ih, b_ih, b_hh, h0, c0, w_hh, w_hr, P, lnh, lnc, keep)
    return (y, hn, cn), bufs


def _kernel_backward(call: Call, inputs, outs, bufs, grads, needs):
    """``fused.Kernel.backward``: a gradient per input of ``_kernel_forward``."""
    xin, w_ih, b_ih, b_hh, h0, c0, w_hh, w_hr, P, lnh_w, lnh_b, lnc_w, lnc_b = inputs
    lnh, lnc = _stack(lnh_w, lnh_b, lnc_w, lnc_b)
    saved = (xin, w_ih, h0, c0, w_hh, w_hr, P, lnh, lnc, outs[0], *bufs)
    dy, dhn, dcn = grads
    dx, dw_ih, db, dh, dc, dw_hh, dw_hr, dP, dlnh, dlnc = _backward(call, saved, dy, dhn, dcn, needs)
    db_ih = db if needs[2] else None
    db_hh = (db_ih.clone() if db_ih is not None else db) if needs[3] else None  # never alias
    return (dx, dw_ih, db_ih, db_hh, dh, dc, dw_hh, dw_hr, dP,
            *((None, None) if dlnh is None else dlnh.unbind(0)),
            *((None, None) if dlnc is None else dlnc.unbind(0)))


def _kernel_fake(inputs, opts, masks) -> list:
    """``fused.Kernel.fake``: the shapes of outs and bufs (keep=True), None where absent."""
    xin, h0, c0, lnh_w = inputs[0], inputs[4], inputs[5], inputs[9]
    T, B = xin.shape[0], xin.shape[1]
    H, Ho = c0.shape[-1], h0.shape[-1]
    ln = lnh_w is not None
    return [(T, B, Ho), (B, Ho), (B, H), (T, B, 4 * H), (T, B, H),
            (T, B, H) if masks.get("zoneout_c") is not None else None,
            (T, B, 4 * H) if ln else None, (T, B, H) if ln else None, (T, B, 2) if ln else None]


def _unread(inputs) -> tuple[int, ...]:
    """With layer norm (no w_ih) backward never reads the precomputed input: G holds a copy."""
    return (0,) if inputs[1] is None else ()


KERNEL = register(("lstm",), Kernel(_kernel_forward, _kernel_backward, _kernel_fake, 3, _unread))


def run(
    x: Tensor,
    state: tuple[Tensor, ...],
    w: Mapping[str, Tensor | None],
    batch_sizes: Tensor | None,
    reverse: bool,
    opts: Any,
    masks: Mapping[str, Tensor | None],
    record: bool,
) -> tuple[Tensor, tuple[Tensor, Tensor], dict[str, Tensor] | None]:
    """One direction of one LSTM layer on the fused engine (contract: ``gatedrnn.equations.reference.run``).

    Shapes: x (T, B, I); state (h0 (B, H_out), c0 (B, H)); returns y (T, B, H_out), (h_n, c_n),
    and the gates input/forget/candidate/output/cell each (T, B, H) when ``record``.
    Under torch.compile the loop runs as custom ops (``kernels.compiled``), without a graph break.
    """
    h0, c0 = state
    xin, w_ih, b_ih, b_hh, w_hh, w_hr, P, lnh_w, lnh_b, lnc_w, lnc_b = _inputs(x, w, opts)
    full = (xin, w_ih, b_ih, b_hh, h0, c0, w_hh, w_hr, P, lnh_w, lnh_b, lnc_w, lnc_b)
    if torch.compiler.is_compiling():
        return _compiled(full, h0, batch_sizes, reverse, opts, masks, record)
    call = Call(batch_sizes, x.shape[0], x.shape[1], reverse, opts, masks, record)
    if needs_autograd(full):
        y, hn, cn = apply(KERNEL, call, full, x, state, w)
    else:
        (y, hn, cn), _ = _kernel_forward(call, *full, keep=record)
    return y, (hn, cn), call.sink


def _inputs(x: Tensor, w: Mapping[str, Tensor | None], opts: Any) -> tuple:
    """(x or LN_x(W_ih x) + b, w_ih, b_ih, b_hh, w_hh, w_hr, P, ln_h_w, ln_h_b, ln_c_w, ln_c_b)."""
    w_ih, b_ih, b_hh = w["w_ih"], w.get("b_ih"), w.get("b_hh")
    ln = bool(opts.layer_norm)
    if ln:
        assert w_ih is not None  # every layer has W_ih
        # LN_x is not recurrent: torch ops under autograd, before the loop.
        # The biases join LN_x's own bias: one pass over (T, B, 4H) instead of three.
        shift = w["ln_x_b"]
        for b in (b_ih, b_hh):
            shift = b if shift is None else (shift if b is None else shift + b)
        x = F.layer_norm(torch.matmul(x, w_ih.t()), (w_ih.shape[0],), w["ln_x_w"], shift,
                         opts.ln_eps)
        w_ih, b_ih, b_hh = None, None, None
    return (x, w_ih, b_ih, b_hh, w["w_hh"], w.get("w_hr"), w.get("peephole"),
            w.get("ln_h_w") if ln else None, w.get("ln_h_b") if ln else None,
            w.get("ln_c_w") if ln else None, w.get("ln_c_b") if ln else None)


def _compiled(full, h0, batch_sizes, reverse, opts, masks, record):
    """``run`` under torch.compile: the same kernel as custom ops (``kernels.compiled``)."""
    (y, hn, cn), bufs = compiled.run(full, opts, batch_sizes, reverse, masks,
                                     record or torch.is_grad_enabled())
    if not record:
        return y, (hn, cn), None
    G, C = bufs[0], bufs[1]
    H = cn.shape[-1]
    gates = {name: G[..., k * H:(k + 1) * H].detach()
             for k, name in enumerate(("input", "forget", "candidate", "output"))}
    gates["cell"] = C.detach()
    if batch_sizes is not None:
        rows = (torch.arange(G.shape[1])[None, :] < batch_sizes[:, None]).to(G.dtype)[..., None]
        gates = {k: v * rows for k, v in gates.items()}
    return y, (hn, cn), gates
