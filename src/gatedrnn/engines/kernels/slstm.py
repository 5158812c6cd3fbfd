"""The fused CPU sLSTM engine: one direction of one layer, forward and hand-derived backward.

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, (h_n, c_n, n_n, m_n), gates)

follows the engine contract of ``gatedrnn.equations.reference.run`` (opts and masks are unused: sLSTM
has no variants); the equations are
``cells.slstm_cell``. w holds w_ih (4H, I), w_hh (4H, H) or head-wise (num_heads, 4d, d), b_ih,
b_hh (4H,) or None. The work:

- forward: Z = x W_ih^T + b_ih + b_hh for all steps in one GEMM, in the kernel's head-major gate
  layout (``heads.head_major``), then the numba loop ``slstm_steps.forward``: per step one product per
  head and one fused pass over the gates;
- backward: ``slstm_steps.backward`` runs BPTT and leaves dZ for all steps; then dx = dZ W_ih,
  dW_ih = dZ^T x, db = Σ dZ, and dR_j = Σ_t dZ_j^T h_{t−1, j} per head
  (``common.recurrent_weight_grad``), one GEMM each.

Example:
    >>> import torch
    >>> from gatedrnn.engines.kernels import slstm
    >>> T, B, I, H = 5, 2, 3, 4
    >>> w = {"w_ih": torch.randn(4 * H, I), "w_hh": torch.randn(2, 4 * 2, 2)}  # two heads
    >>> zeros = tuple(torch.zeros(B, H) for _ in range(4))
    >>> y, (h, c, n, m), _ = slstm.run(torch.randn(T, B, I), zeros, w, None, False, None, {}, False)
    >>> y.shape, m.shape
    (torch.Size([5, 2, 4]), torch.Size([2, 4]))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...equations.cells import required
from . import slstm_steps as steps
from .common import gemm_scratch, recurrent_weight_grad, step_sizes
from .heads import from_heads, head_major, to_heads
from .linear import linear, matmul
from .threads import split_rows

POOL_MIN_ROWS = 64  # two threads from B = 128 on a pool thread, B = 32 in torch's team
TEAM_MIN_ROWS = 16  # (the fused GRU's thresholds: the same per-step GEMM-and-gates shape)
GATE_NAMES = ("input", "forget", "candidate", "output", "cell", "normalizer", "stabilizer")


def _nd(t: Tensor) -> np.dtype:
    return np.dtype(np.float32 if t.dtype == torch.float32 else np.float64)


class _SLSTMFunction(torch.autograd.Function):
    """Inputs x (T, B, I), w_ih (4H, I) and b (4H,) or None in head-major order, R (nh, 4d, d),
    h0, c0, n0, m0 (B, H); outputs y (T, B, H), the final (h, c, n, m), and, not differentiable,
    the buffers Z, C, N, M, GI, GF for recording gates (see ``slstm_steps``)."""

    @staticmethod
    def forward(ctx, sizes, reverse, record, keep, x, w_ih, b, R, h0, c0, n0, m0):
        T, B, In = x.shape
        nh, d = R.shape[0], R.shape[2]
        H, nd = nh * d, _nd(x)
        Z = linear(x.reshape(T * B, In), w_ih, b).view(T, B, 4 * H)  # (T, B, 4H) head-major
        hh = to_heads(h0, nh)  # (nh, B, d)
        cw, nw, mw = (s.detach().contiguous().clone() for s in (c0, n0, m0))
        Y = torch.empty((T, B, H), dtype=x.dtype)
        C, N, M, L = (torch.empty((T, B, H) if keep else (0, 0, 0), dtype=x.dtype) for _ in range(4))
        GI, GF = (torch.empty((T, B, H) if record else (0, 0, 0), dtype=x.dtype) for _ in range(2))
        args = (Z.numpy(), R.detach().contiguous().numpy(), hh.numpy(), cw.numpy(), nw.numpy(),
                mw.numpy(), np.empty((nh, B, 4 * d), nd), Y.numpy(), C.numpy(), N.numpy(),
                M.numpy(), L.numpy(), GI.numpy(), GF.numpy(), sizes, reverse, keep)
        split_rows(B, lambda part, lo, hi: steps.forward(*args, lo, hi, gemm_scratch(nd)),
                   POOL_MIN_ROWS, TEAM_MIN_ROWS)
        hn = from_heads(hh)
        ctx.call = (sizes, reverse)
        ctx.save_for_backward(x, w_ih, R, h0, c0, n0, Y, Z, C, N, L)
        bufs = (Z, C, N, M, GI, GF)
        ctx.mark_non_differentiable(*bufs)
        return (Y, hn, cw, nw, mw) + bufs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dhn, dcn, dnn, dmn, *_):
        sizes, reverse = ctx.call
        x, w_ih, R, h0, c0, n0, Y, Z, C, N, L = ctx.saved_tensors
        T, B, H4 = Z.shape
        nh, d = R.shape[0], R.shape[2]
        nd = _nd(Z)
        dY = torch.zeros_like(Y) if dy is None else dy.contiguous()
        carry = [torch.zeros_like(h0) if g is None else g.contiguous().clone()
                 for g in (dhn, dcn, dnn, dmn)]  # → dL/d(h0, c0, n0, m0)
        dZ = torch.empty_like(Z)
        args = (Z.numpy(), R.detach().contiguous().numpy(), C.numpy(), N.numpy(), L.numpy(),
                *(s.detach().contiguous().numpy() for s in (c0, n0)), dY.numpy(),
                *(g.numpy() for g in carry), dZ.numpy(), np.empty((nh, B, 4 * d), nd),
                np.empty((nh, B, d), nd), sizes, reverse)
        split_rows(B, lambda part, lo, hi: steps.backward(*args, lo, hi, gemm_scratch(nd)),
                   POOL_MIN_ROWS, TEAM_MIN_ROWS)
        need = ctx.needs_input_grad[4:]
        dZ2 = dZ.view(T * B, H4)
        dx = matmul(dZ2, w_ih).view(x.shape) if need[0] else None
        dw = torch.mm(dZ2.t(), x.reshape(T * B, x.shape[2])) if need[1] else None
        db = dZ2.sum(0) if need[2] else None
        dR = None
        if need[3]:
            h0d = h0.detach()
            dR = torch.stack([
                recurrent_weight_grad((dZ[..., j * 4 * d:(j + 1) * 4 * d],),
                                      Y[..., j * d:(j + 1) * d], h0d[:, j * d:(j + 1) * d],
                                      None, sizes, reverse)
                for j in range(nh)])  # (nh, 4d, d)
        return (None, None, None, None, dx, dw, db, dR,
                *(g if n else None for g, n in zip(carry, need[4:])))


def gates_of(bufs: tuple, batch_sizes: Tensor | None, nh: int) -> dict[str, Tensor]:
    """The recorded gates (``GATE_NAMES``), each (T, B, H) in torch's unit order, zero where a row
    is inactive (the kernel leaves those entries unwritten)."""
    Z, C, N, M, GI, GF = bufs
    T, B, H4 = Z.shape
    raw = Z.view(T, B, nh, 4, H4 // (4 * nh))
    gate = [raw[:, :, :, g].reshape(T, B, H4 // 4) for g in range(4)]  # ĩ, f̃, z̃, õ
    values = (GI, GF, torch.tanh(gate[2]), torch.sigmoid(gate[3]), C, N, M)
    live = torch.ones(T, B, 1, dtype=torch.bool)
    if batch_sizes is not None:
        live = (torch.arange(B)[None, :] < batch_sizes[:, None])[..., None]
    return {k: torch.where(live, v, 0.0) for k, v in zip(GATE_NAMES, values)}


def run(
    x: Tensor,
    state: tuple[Tensor, Tensor, Tensor, Tensor],
    w: Mapping[str, Tensor | None],
    batch_sizes: Tensor | None,
    reverse: bool,
    opts: Any,
    masks: Mapping[str, Tensor | None],
    record: bool,
) -> tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor] | None]:
    """One direction of one sLSTM layer on the fused engine.

    Shapes: x (T, B, I); state (h0, c0, n0, m0) each (B, H); returns y (T, B, H), the final state
    in the same layout, and the gates (``GATE_NAMES``) each (T, B, H) when ``record``.
    """
    w_ih, w_hh, b_ih, b_hh = required(w, "w_ih"), required(w, "w_hh"), w.get("b_ih"), w.get("b_hh")
    b = b_ih if b_hh is None else (b_hh if b_ih is None else b_ih + b_hh)
    H = state[0].shape[-1]
    nh = w_hh.shape[0] if w_hh.dim() == 3 else 1
    if nh > 1:  # to the kernel's layout, under autograd (an index: its backward is a scatter)
        order = head_major(H, nh, 4)
        w_ih = w_ih[order]
        b = None if b is None else b[order]
        R = w_hh
    else:
        R = w_hh.unsqueeze(0)
    sizes, _ = step_sizes(batch_sizes, x.shape[0], x.shape[1])
    inputs = (x, w_ih, b, R, *state)
    # What backward needs is kept only when autograd will call it (or to record the gates).
    keep = bool(record) or (torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in inputs))
    y, h, c, n, m, *bufs = _SLSTMFunction.apply(sizes, bool(reverse), bool(record), keep, *inputs)
    return y, (h, c, n, m), gates_of(tuple(bufs), batch_sizes, nh) if record else None

