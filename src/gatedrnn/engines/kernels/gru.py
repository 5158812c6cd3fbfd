"""The fused CPU GRU engine: one direction of one layer, forward and hand-derived backward.

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, (h_n,), gates)

is the engine interface of ``gatedrnn.equations.reference.run`` (contract and shapes there); the equations are
``gatedrnn.equations.cells.gru_cell``, in both forms (``opts.reset_after``). The work is split so that almost
every flop is a large GEMM:

- forward: U = x W_ih^T + b for all steps in one ``addmm``; then the numba loop in
  ``gru_steps.forward`` (per step one recurrent GEMM, two for reset_after=False, plus one fused
  pass over the gates; in inference with reset_after the GEMM runs on a W_hh packed once per
  call, ``kernels.packed``, same bits);
- backward: ``gru_steps.backward`` runs BPTT and leaves dU = dL/du for all steps (and, for
  reset_after, dZ = dL/d(W_hh h̃)); then dx = dU W_ih, dW_ih = dU^T x and dW_hh = dZ^T h̃_prev are
  one GEMM each (dW_hh two for reset_after=False: [dU_r, dU_z]^T h̃_prev and dU_n^T (r ⊙ h̃_prev)).

Head-wise recurrence: ``w["w_hh"]`` may be (nh, 3d, d), d = H / nh (``cells.headwise_product``),
in both forms. The gates stay in torch's gate-major layout; each step's products and their
backward run one small GEMM per head and gate on views of the gate rows
(``heads.headwise_prod``), and dR is one GEMM per head and gate over all steps
(``common.head_blocks_grad``): the recurrent FLOPs are 1/nh of the dense ones.

Biases: with reset_after, b_hr and b_hz are folded into the input projection's bias, and b_hn
(inside the product with r) is added in the loop; with reset_after=False all of b_hh is folded.
With layer norm, LN_x(W_ih x) + b_ih is not recurrent, so it runs as torch ops under autograd
before the loop, and LN_h's shift absorbs b_hh (``torch.stack([gain, shift + b_hh])``, also under
autograd), so the kernel sees one (2, 3H) parameter. Without gradients (inference) nothing per
step is stored. Large batches run their rows in two halves on two threads (``threads.split_rows``).
Eager calls use ``fused.FusedFunction``; under torch.compile the same code runs as custom ops
(``kernels.compiled``).

Example:
    >>> import torch
    >>> from gatedrnn.equations.cells import CellOptions
    >>> from gatedrnn.engines.kernels import gru
    >>> T, B, I, H = 5, 2, 3, 4
    >>> w = {"w_ih": torch.randn(3 * H, I), "w_hh": torch.randn(3 * H, H)}
    >>> y, (h,), _ = gru.run(torch.randn(T, B, I), (torch.zeros(B, H),), w, None, False,
    ...                      CellOptions("gru"), {}, False)
    >>> y.shape, h.shape
    (torch.Size([5, 2, 4]), torch.Size([2, 4]))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...equations.cells import required
from . import compiled, pair
from . import gru_steps as steps
from .common import as_np, gemm_scratch, head_blocks_grad, off, recurrent_weight_grad
from .fused import Call, Kernel, apply, needs_autograd, register
from .heads import as_heads, heads_of
from .linear import linear, matmul, project_and_run, time_blocks
from .packed import pack_weight
from .threads import split_rows

POOL_MIN_ROWS = 64  # two threads from B = 2 * 64 rows on a pool thread (threads.split_rows)
TEAM_MIN_ROWS = 16  # ... from B = 32 in torch's OpenMP team: 1.03-1.2x at the benchmark shapes
GATE_NAMES = ("reset", "update", "candidate")


def _zone_np(z: Tensor | None, shape: tuple[int, ...], nd: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Zoneout keep-weights as the kernel reads them: ((T, B, H) masks, size 0) in training,
    (size 0, (H,) filled with p) in evaluation, both size 0 when off."""
    if z is None:
        return off(nd, 3), off(nd, 1)
    if z.dim() == 0:
        return off(nd, 3), np.full(shape[-1], z.item(), nd)
    return z.detach().expand(shape).contiguous().numpy(), off(nd, 1)


def _forward(call: Call, xin, w_ih, b_ih, b_hh, h0, w_hh, lnh, keep: bool):
    """The forward pass on plain tensors (no autograd). Returns y, h_n and the buffers
    (G, VN, Q, XH, RS) that the backward pass needs (None where not kept)."""
    T, B = xin.shape[0], xin.shape[1]
    H = h0.shape[-1]
    dt = xin.dtype
    nd = np.dtype(np.float32 if dt == torch.float32 else np.float64)
    ra = call.reset_after
    bn = None
    if w_ih is not None:
        if ra and b_hh is not None:  # b_hr, b_hz join the projection; b_hn stays inside r ⊙ (·)
            bn = b_hh[2 * H:]
            rz = torch.cat([b_hh[:2 * H], b_hh.new_zeros(H)])
            bias = rz if b_ih is None else b_ih + rz
        else:
            bias = b_ih if b_hh is None else (b_hh if b_ih is None else b_ih + b_hh)
        x2 = xin.reshape(T * B, xin.shape[2])
        blocks = not keep and not call.record  # inference: project block by block (time_blocks)
        if blocks:
            spans = time_blocks(T, B, call.reverse)
            G = torch.empty((max(t1 - t0 for t0, t1 in spans), B, 3 * H), dtype=dt)
        else:
            G = linear(x2, w_ih, bias).view(T, B, 3 * H)  # (T, B, 3H)
    else:
        G = xin.contiguous().clone() if xin.is_contiguous() else xin.contiguous()
    # State copy and zero fills on this thread (see _new).
    hw = _new(tuple(h0.shape), nd, False, h0.detach().numpy())  # becomes h_n
    Y = _new((T, B, H), nd, call.packed)  # inactive rows must read as zeros
    ln = ra and lnh is not None
    VN = torch.empty((T, B, H), dtype=dt) if keep and ra else None
    Q = _new((T, B, H), nd, call.packed) if keep and not ra else None
    XH = torch.empty((T, B, 3 * H), dtype=dt) if keep and ln else None
    RS = torch.empty((T if keep else 1, B), dtype=dt) if ln else None
    zh, zp = _zone_np(call.zh, (T, B, H), nd)
    whh = as_heads(w_hh, 3, H)
    wp: Any = pack_weight(whh[0], T, B, keep) if ra and whh.shape[0] == 1 else off(nd, 1)
    rest = (
        call.reverse, keep, ra, whh,
        as_np(bn, nd, 1) if bn is not None else np.zeros(H, nd),
        as_np(call.m, nd, 2), np.ones(H, nd))
    tail = (
        as_np(lnh if ln else None, nd, 2), call.eps,
        np.empty((B, 3 * H if ra else 2 * H), nd),
        np.empty((B, H), nd) if call.m is not None else off(nd, 2),
        np.empty((2, B, 3 * H if ln else H), nd),
    )

    # One or two rows of the plain reset_after cell in inference: two threads split the units.
    paired = (not keep and not call.record and ra and whh.shape[0] == 1 and not ln
              and call.m is None and call.zh is None and pair.usable(B, H, T, 3, dt))

    # One or two rows of a variant, or in training: W_hh packed for kernels.gemv (pair.packed_rows).
    if not paired and ra and whh.shape[0] == 1:
        wp = pair.packed_rows(whh[0], B, H, T, 3, keep) or wp

    def steps_of(t0: int, t1: int, g: np.ndarray) -> None:  # steps [t0, t1), g their projection
        if paired:
            pair.gru(g, hw.numpy(), Y.numpy()[t0:t1], call.sizes[t0:t1], call.reverse, whh[0],
                     rest[4])
            return

        def cut(z: np.ndarray) -> np.ndarray:  # full (T, ·, ·) buffers follow the span
            return z[t0:t1] if z.shape[0] == T and T > 1 else z

        args = (g, hw.numpy(), Y.numpy()[t0:t1], cut(as_np(VN, nd, 3)), cut(as_np(Q, nd, 3)),
                cut(as_np(XH, nd, 3)), cut(as_np(RS, nd, 2)), call.sizes[t0:t1], *rest, cut(zh), zp,
                *tail)

        def work(part: int, lo: int, hi: int) -> None:  # rows [lo, hi); scratch of its own
            steps.forward(*args, lo, hi, gemm_scratch(nd), wp)

        split_rows(B, work, POOL_MIN_ROWS, TEAM_MIN_ROWS)

    if w_ih is not None and blocks:
        project_and_run(x2, w_ih, bias, G, spans, steps_of)
    else:
        steps_of(0, T, G.numpy())
    if call.record:
        call.sink = _gates(G, call, H)
    return Y, hw, (G, VN, Q, XH, RS)


def _new(shape: tuple[int, ...], nd: np.dtype, zeros: bool, like: np.ndarray | None = None) -> Tensor:
    """A torch buffer, uninitialised, zero-filled (``zeros``) or a copy of ``like``, filled by
    numpy on this thread: torch's own fill and copy would wake its OpenMP workers, which then
    spin for a while on the cores the time loop's two halves run on (see threads.split_rows)."""
    t = torch.empty(shape, dtype=torch.float32 if nd == np.float32 else torch.float64)
    if like is not None:
        np.copyto(t.numpy(), like)
    elif zeros:
        t.numpy().fill(0)
    return t


def _gates(G: Tensor, call: Call, H: int) -> dict[str, Tensor]:
    """Recorded gates, each (T, B, H), zero on inactive rows (G holds u or nothing there)."""
    gates = {name: G[..., k * H:(k + 1) * H].clone() for k, name in enumerate(GATE_NAMES)}
    if call.packed:
        off = torch.arange(G.shape[1])[None, :] >= torch.from_numpy(call.sizes)[:, None]  # (T, B)
        for v in gates.values():
            v.masked_fill_(off[..., None], 0.0)
    return gates


def _backward(call: Call, saved, dy, dhn, needs):
    """Gradients (x, w_ih, b_ih, b_hh, h0, w_hh, lnh) of ``_forward``'s inputs from dL/dy, dL/dh_n;
    ``needs`` says which are wanted (the others come back None where that saves work).

    Peak memory: besides the saved G, VN|Q, Y, the loop needs dY, DU (3 T·B·H) and DZ (T·B·H
    without layer norm); dY and DZ are dropped before dx is allocated.
    """
    xin, w_ih, h0, w_hh, lnh, Y, G, VN, Q, XH, RS = saved
    T, B = G.shape[0], G.shape[1]
    H = h0.shape[-1]
    dt = G.dtype
    nd = np.dtype(np.float32 if dt == torch.float32 else np.float64)
    ra = call.reset_after
    ln = ra and lnh is not None
    nh = heads_of(w_hh)
    # numpy copies (one thread): see _forward. dL/dy is often an expanded tensor (y.sum()).
    dY = _new(tuple(Y.shape), nd, True) if dy is None else dy
    if dY.stride() != Y.stride():
        dY = _new(tuple(Y.shape), nd, False, dY.numpy())
    dh = _new(tuple(h0.shape), nd, dhn is None, None if dhn is None else dhn.numpy())  # → dL/dh0
    DU = torch.empty_like(G)
    DZ = torch.empty((T, B, 3 * H if ln else H), dtype=dt) if ra else None
    zh, zp = _zone_np(call.zh, (T, B, H), nd)
    whh = as_heads(w_hh, 3, H)
    # One or two rows, reset_after: δh̃ on W_hh^T packed for kernels.gemv (the same bits, faster).
    wpt = pair.packed_rows_t(whh[0], B, H, T, 3) if ra and whh.shape[0] == 1 else None
    args = [  # a list, cleared after the loop: it holds the only other reference to dY
        G.numpy(), as_np(VN, nd, 3), as_np(Q, nd, 3), Y.numpy(), as_np(h0, nd, 2), dY.numpy(),
        dh.numpy(), DU.numpy(), as_np(DZ, nd, 3), call.sizes, call.reverse, ra,
        whh, as_np(call.m, nd, 2), np.ones(H, nd), zh, zp,
        as_np(lnh if ln else None, nd, 2), as_np(XH, nd, 3), as_np(RS, nd, 2),
    ]
    # Parameter-gradient accumulators per part, summed after: rows never share memory.
    sums = [torch.zeros_like(lnh) if ln else None for _ in range(2)]
    dv = np.empty((B, 3 * H if ra else 2 * H), nd)

    def work(part: int, lo: int, hi: int) -> None:
        steps.backward(*args, as_np(sums[part], nd, 2), dv, np.empty((3, B, H), nd), lo, hi,
                       gemm_scratch(nd), *(() if wpt is None else (wpt,)))

    split_rows(B, work, POOL_MIN_ROWS, TEAM_MIN_ROWS)
    args.clear()
    del dY
    dlnh = cast(Tensor, sums[0]) + cast(Tensor, sums[1]) if ln else None
    DU2 = DU.view(T * B, 3 * H)
    dx = dw_ih = db_ih = db_hh = dw_hh = None
    if needs[2] or (needs[3] and not ln):
        db_ih = DU2.sum(0)
    if ra and not ln:  # v = W_hh h̃ + b_hh: δv = [δu_r, δu_z, DZ]
        if needs[3]:
            assert db_ih is not None and DZ is not None  # needs[3] without layer norm; reset_after
            db_hh = torch.cat([db_ih[:2 * H], DZ.view(T * B, H).sum(0)])
        if needs[5]:
            dw_hh = recurrent_weight_grad((DU[..., :2 * H], DZ), Y, h0, call.m, call.sizes, call.reverse,
                                          nh)
    elif ra:  # layer norm: b_hh's gradient reaches it through lnh
        if needs[5]:
            dw_hh = recurrent_weight_grad((DZ,), Y, h0, call.m, call.sizes, call.reverse, nh)
    else:
        if needs[3]:
            assert db_ih is not None  # needs[3], and layer norm needs reset_after
            db_hh = db_ih.clone()
        if needs[5]:
            dw_rz = recurrent_weight_grad((DU[..., :2 * H],), Y, h0, call.m, call.sizes, call.reverse,
                                          nh)
            Q2 = Q.view(T * B, H)
            dw_n = head_blocks_grad(DU2[:, 2 * H:], Q2, nh) if nh > 1 else torch.mm(DU2[:, 2 * H:].t(), Q2)
            dw_hh = torch.cat([dw_rz, dw_n.view(dw_rz.shape[:-2] + dw_n.shape[-2:])], dim=-2)
    del DZ
    if not needs[2]:
        db_ih = None
    if w_ih is not None:
        if needs[0]:
            dx = matmul(DU2, w_ih).view(xin.shape)
        if needs[1]:
            dw_ih = torch.mm(DU2.t(), xin.reshape(T * B, xin.shape[2]))  # one GEMM over all steps
    else:
        dx = DU  # the gradient of the precomputed input (layer norm)
    return dx, dw_ih, db_ih, db_hh, dh, dw_hh, dlnh


def _kernel_forward(call: Call, xin, w_ih, b_ih, b_hh, h0, w_hh, lnh, keep: bool):
    """``fused.Kernel.forward``: outs (y, h_n), bufs (G, VN, Q, XH, RS)."""
    y, hn, bufs = _forward(call, xin, w_ih, b_ih, b_hh, h0, w_hh, lnh, keep)
    return (y, hn), bufs


def _kernel_backward(call: Call, inputs, outs, bufs, grads, needs):
    """``fused.Kernel.backward``: a gradient per input of ``_kernel_forward``."""
    xin, w_ih, b_ih, b_hh, h0, w_hh, lnh = inputs
    dy, dhn = grads
    dx, dw_ih, db_ih, db_hh, dh, dw_hh, dlnh = _backward(
        call, (xin, w_ih, h0, w_hh, lnh, outs[0], *bufs), dy, dhn, needs)
    if w_ih is None:  # layer norm: the biases live in the precomputed input and in lnh
        db_ih = db_hh = None
    return dx, dw_ih, db_ih, db_hh, dh, dw_hh, dlnh


def _kernel_fake(inputs, opts, masks) -> list:
    """``fused.Kernel.fake``: the shapes of outs and bufs (keep=True), None where absent."""
    xin, h0, lnh = inputs[0], inputs[4], inputs[6]
    T, B, H = xin.shape[0], xin.shape[1], h0.shape[-1]
    ra = bool(opts.reset_after)
    ln = ra and lnh is not None
    return [(T, B, H), (B, H), (T, B, 3 * H), (T, B, H) if ra else None,
            (T, B, H) if not ra else None, (T, B, 3 * H) if ln else None, (T, B) if ln else None]


def _unread(inputs) -> tuple[int, ...]:
    """With layer norm (no w_ih) backward never reads the precomputed input: G holds a copy."""
    return (0,) if inputs[1] is None else ()


KERNEL = register(("gru",), Kernel(_kernel_forward, _kernel_backward, _kernel_fake, 2, _unread))


def run(
    x: Tensor,
    state: tuple[Tensor, ...],
    w: Mapping[str, Tensor | None],
    batch_sizes: Tensor | None,
    reverse: bool,
    opts: Any,
    masks: Mapping[str, Tensor | None],
    record: bool,
) -> tuple[Tensor, tuple[Tensor], dict[str, Tensor] | None]:
    """One direction of one GRU layer on the fused engine (contract: ``gatedrnn.equations.reference.run``).

    Shapes: x (T, B, I); state (h0 (B, H),); returns y (T, B, H), (h_n,), and the gates
    reset/update/candidate each (T, B, H) when ``record``.
    Under torch.compile the loop runs as custom ops (``kernels.compiled``), without a graph break.
    """
    (h0,) = state
    xin, w_ih, b_ih, b_hh, w_hh, lnh = _inputs(x, w, opts)
    full = (xin, w_ih, b_ih, b_hh, h0, w_hh, lnh)
    if torch.compiler.is_compiling():
        return _compiled(full, batch_sizes, reverse, opts, masks, record)
    call = Call(batch_sizes, x.shape[0], x.shape[1], reverse, opts, masks, record)
    if needs_autograd(full):
        y, hn = apply(KERNEL, call, full, x, state, w)
    else:
        (y, hn), _ = _kernel_forward(call, *full, keep=False)
    return y, (hn,), call.sink


def _inputs(x: Tensor, w: Mapping[str, Tensor | None], opts: Any) -> tuple:
    """(x or LN_x(W_ih x) + b, w_ih, b_ih, b_hh, w_hh, lnh) with lnh = (gain, shift + b_hh) of LN_h.

    With layer norm, LN_x is not recurrent: torch ops under autograd, before the loop. Its shift
    absorbs b_ih (and, for reset_after=False, where cells.gru_cell has no LN_h, also b_hh); for
    reset_after, LN_h's shift absorbs b_hh: one (2, 3H) parameter for the kernel.
    """
    w_ih, b_ih, b_hh = required(w, "w_ih"), w.get("b_ih"), w.get("b_hh")
    if not opts.layer_norm:
        return x, w_ih, b_ih, b_hh, w["w_hh"], None
    ra = bool(opts.reset_after)
    shift = w["ln_x_b"]
    for b in (b_ih,) if ra else (b_ih, b_hh):
        shift = b if shift is None else (shift if b is None else shift + b)
    u = F.layer_norm(torch.matmul(x, w_ih.t()), (w_ih.shape[0],), w["ln_x_w"], shift, opts.ln_eps)
    lnh = None
    if ra:
        gain, hs = required(w, "ln_h_w"), w["ln_h_b"]
        if b_hh is not None:
            hs = b_hh if hs is None else hs + b_hh
        lnh = torch.stack([gain, torch.zeros_like(gain) if hs is None else hs])
    return u, None, None, None, w["w_hh"], lnh


def _compiled(full, batch_sizes, reverse, opts, masks, record):
    """``run`` under torch.compile: the same kernel as custom ops (``kernels.compiled``)."""
    (y, hn), bufs = compiled.run(full, opts, batch_sizes, reverse, masks,
                                 record or torch.is_grad_enabled())
    if not record:
        return y, (hn,), None
    G, H = bufs[0], hn.shape[-1]
    gates = {name: G[..., k * H:(k + 1) * H].detach() for k, name in enumerate(GATE_NAMES)}
    if batch_sizes is not None:
        rows = (torch.arange(G.shape[1])[None, :] < batch_sizes[:, None]).to(G.dtype)[..., None]
        gates = {k: v * rows for k, v in gates.items()}
    return y, (hn,), gates
