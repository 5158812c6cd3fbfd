"""The fused CPU engine for minGRU and minLSTM: one direction of one layer, with a hand-derived
backward pass.

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, (h_n,), gates)

follows the engine contract of ``gatedrnn.equations.reference.run`` (time-major, rows sorted by length,
inactive rows output zeros and keep their state); ``opts.mode`` is "mingru" or "minlstm", masks
are empty (these cells have no variants), and w holds
w_ih (G·H, I) and b_ih (G·H,) or None. The equations are ``cells.mingru_cell`` and
``cells.minlstm_cell``. Almost every flop is a large GEMM:

- forward: A = x W_ih^T + b for all steps in one GEMM (``linear``: oneDNN / MKL), then the
  elementwise scan ``minrnn_steps.forward`` over contiguous (T, B, ·) memory;
- backward: ``minrnn_steps.backward`` leaves dA for all steps, then dx = dA W_ih, dW_ih = dA^T x
  and db = Σ dA are one GEMM (or sum) each.

Rows are independent, so large batches run their two halves on two threads (``split_rows``).

Example:
    >>> import torch
    >>> from gatedrnn.engines.kernels import minrnn
    >>> from gatedrnn.equations.cells import CellOptions
    >>> T, B, I, H = 5, 2, 3, 4
    >>> w = {"w_ih": torch.randn(2 * H, I), "b_ih": torch.randn(2 * H)}
    >>> y, (h,), _ = minrnn.run(torch.randn(T, B, I), (torch.zeros(B, H),), w, None, False,
    ...                         CellOptions("mingru"), {}, False)
    >>> y.shape, h.shape
    (torch.Size([5, 2, 4]), torch.Size([2, 4]))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...equations.cells import MIN_GATES
from . import minrnn_steps as steps
from .common import step_sizes
from .linear import linear, matmul
from .threads import split_rows

POOL_MIN_ROWS = 64  # two threads from B = 128 on a pool thread, B = 32 in torch's team
TEAM_MIN_ROWS = 16  # (the thresholds of the fused GRU, whose gate pass is the same kind of work)


def _scan_forward(A: Tensor, h0: Tensor, sizes: np.ndarray, reverse: bool,
                  lstm: bool) -> tuple[Tensor, Tensor]:
    T, B = A.shape[0], A.shape[1]
    hw = h0.detach().contiguous().clone()  # becomes h_n
    Y = torch.empty((T, B, h0.shape[-1]), dtype=A.dtype)
    a, h, y = A.numpy(), hw.numpy(), Y.numpy()
    split_rows(B, lambda part, lo, hi: steps.forward(a, h, y, sizes, reverse, lstm, lo, hi),
               POOL_MIN_ROWS, TEAM_MIN_ROWS)
    return Y, hw


class _MinFunction(torch.autograd.Function):
    """Inputs x (T, B, I), w_ih (G·H, I), b_ih (G·H,) or None, h0 (B, H); outputs y (T, B, H),
    h_n (B, H) and the projection A (T, B, G·H) (not differentiable; for recording gates)."""

    @staticmethod
    def forward(ctx, sizes, reverse, lstm, x, w_ih, b_ih, h0):
        T, B, In = x.shape
        A = linear(x.reshape(T * B, In), w_ih, b_ih).view(T, B, -1)  # (T, B, G·H)
        Y, hn = _scan_forward(A, h0, sizes, reverse, lstm)
        ctx.call = (sizes, reverse, lstm)
        ctx.save_for_backward(x, w_ih, h0, A, Y)
        ctx.mark_non_differentiable(A)
        return Y, hn, A

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dhn, _):
        sizes, reverse, lstm = ctx.call
        x, w_ih, h0, A, Y = ctx.saved_tensors
        T, B, GH = A.shape
        dY = torch.zeros_like(Y) if dy is None else dy.contiguous()
        dh = torch.zeros_like(h0) if dhn is None else dhn.contiguous().clone()  # → dL/dh0
        dA = torch.empty_like(A)
        args = (A.numpy(), Y.numpy(), h0.detach().contiguous().numpy(), dY.numpy(), dh.numpy(),
                dA.numpy(), sizes, reverse, lstm)
        split_rows(B, lambda part, lo, hi: steps.backward(*args, lo, hi), POOL_MIN_ROWS,
                   TEAM_MIN_ROWS)
        need_x, need_w, need_b, need_h = ctx.needs_input_grad[3:]
        dA2 = dA.view(T * B, GH)
        dx = matmul(dA2, w_ih).view(x.shape) if need_x else None
        dw = torch.mm(dA2.t(), x.reshape(T * B, x.shape[2])) if need_w else None
        db = dA2.sum(0) if need_b else None
        return None, None, None, dx, dw, db, dh if need_h else None


def gates_of(kind: str, A: Tensor, batch_sizes: Tensor | None) -> dict[str, Tensor]:
    """Recorded gates from the projection A (T, B, G·H), each (T, B, H), zero on inactive rows."""
    gates = MIN_GATES[kind](A.detach())
    if batch_sizes is not None:
        rows = (torch.arange(A.shape[1])[None, :] < batch_sizes[:, None]).to(A.dtype)[..., None]
        gates = {k: v * rows for k, v in gates.items()}
    return gates


def run(
    x: Tensor,
    state: tuple[Tensor],
    w: Mapping[str, Tensor | None],
    batch_sizes: Tensor | None,
    reverse: bool,
    opts: Any,
    masks: Mapping[str, Tensor | None],
    record: bool,
) -> tuple[Tensor, tuple[Tensor], dict[str, Tensor] | None]:
    """One direction of one minGRU ("mingru") or minLSTM ("minlstm") layer on the fused engine.

    Shapes: x (T, B, I), state (h0 (B, H),); returns y (T, B, H), (h_n,), and the gates
    (``kinds.CELLS[kind].gate_names``) each (T, B, H) when ``record``.
    """
    (h0,) = state
    kind = opts.mode
    sizes, _ = step_sizes(batch_sizes, x.shape[0], x.shape[1])
    y, hn, A = _MinFunction.apply(sizes, bool(reverse), kind == "minlstm", x, w["w_ih"],
                                  w.get("b_ih"), h0)
    return y, (hn,), gates_of(kind, A, batch_sizes) if record else None
