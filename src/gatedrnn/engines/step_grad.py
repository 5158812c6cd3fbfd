"""A cell's training step as one autograd node: ``kernels.step_grad`` forward and backward.

A decoder steps an LSTMCell or GRUCell under autograd once per token; torch.nn's cell op there is
about ten separate ops, each an autograd node with its own bookkeeping, around a few µs of
arithmetic. ``cell_call`` runs the same step as one ``torch.autograd.Function`` whose forward is one
numba kernel that keeps the activations and whose backward is one numba kernel that returns every
gradient (hand-derived, see ``kernels.step_grad``), so a call costs about two Python calls and two
numba calls.

Taken only when all of these hold (anything else returns None, and the cell's general path runs,
which also raises the errors): a plain CPU float32/float64 tensor input (B, I), the state absent or
C-contiguous of (B, H) and the same dtype, the cell's own dense parameters (not pruned or
parametrized), no variant, torch's GRU form, no tracing or compiling, no torch.func transform.
Double backward (``create_graph=True``) recomputes the step from ``gatedrnn.equations.cells`` under
autograd on the saved tensors and differentiates that, as the fused engine does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..equations.cells import GATES, STEPS, CellOptions
from . import one_step
from .one_step import _FAST, _fresh, _traced

_K: Any = None


def _kernels() -> Any:
    global _K
    if _K is None:
        from .kernels import step, step_grad

        _K = (step, step_grad)
    return _K


def _address(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


class _Step(torch.autograd.Function):
    """(x, h, c, W_ih, W_hh, b_ih, b_hh) -> h' (LSTM: h', c'); c, the biases may be None."""

    @staticmethod
    def forward(ctx: Any, mode: str, x: Tensor, h: Tensor, c: Tensor | None, wi: Tensor,
                wh: Tensor, bi: Tensor | None, bh: Tensor | None) -> Any:
        step, grad = _K
        B, I = x.shape
        H, dt = h.shape[1], x.dtype
        h2 = _fresh((B, H), dt)
        like = step.LIKE[dt]
        args = (like, x.data_ptr(), h.data_ptr(), _address(c), wi.data_ptr(), wh.data_ptr(),
                _address(bi), _address(bh), B, I, H)
        ctx.mode = mode
        if mode == "lstm":
            c2, s = _fresh((B, H), dt), _fresh((B, 5 * H), dt)
            grad.lstm_forward(*args, h2.data_ptr(), c2.data_ptr(), s.data_ptr())
            ctx.save_for_backward(x, h, c, wi, wh, bi, bh, s)
            return h2, c2
        if mode == "gru":
            s = _fresh((B, 4 * H), dt)
            grad.gru_forward(*args, h2.data_ptr(), 0, s.data_ptr())
            ctx.save_for_backward(x, h, c, wi, wh, bi, bh, s)
            return h2
        step.rnn_step(*args, h2.data_ptr(), H, 0, 0, mode == "rnn_relu")
        ctx.save_for_backward(x, h, c, wi, wh, bi, bh, h2)
        return h2

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> Any:
        x, h, c, wi, wh, bi, bh, s = ctx.saved_tensors
        need = ctx.needs_input_grad  # (mode, x, h, c, wi, wh, bi, bh)
        if torch.is_grad_enabled():  # create_graph: a differentiable backward (see the docstring)
            return (None,) + _reference_grads(ctx.mode, (x, h, c, wi, wh, bi, bh), need[1:], grads)
        step, grad = _K
        B, I = x.shape
        H, dt = h.shape[1], x.dtype
        dh2 = grads[0].contiguous()
        dc2 = grads[1].contiguous() if ctx.mode == "lstm" else None
        dx, dh = _fresh((B, I), dt), _fresh((B, H), dt)
        dc = _fresh((B, H), dt) if ctx.mode == "lstm" else None
        dwi = _fresh(tuple(wi.shape), dt) if need[4] else None
        dwh = _fresh(tuple(wh.shape), dt) if need[5] else None
        dbi, dbh = (_fresh(tuple(bi.shape), dt), _fresh(tuple(bh.shape), dt)) \
            if bi is not None and (need[6] or need[7]) else (None, None)
        if ctx.mode in ("lstm", "gru"):
            run, third, flag = grad.backward_kernel(ctx.mode), _address(c), s.data_ptr()
        else:  # the Elman backward reads h' where the others read c, and φ's flag where s
            run, third, flag = grad.rnn_backward, s.data_ptr(), ctx.mode == "rnn_relu"
        run(step.LIKE[dt], x.data_ptr(), h.data_ptr(), third, wi.data_ptr(), wh.data_ptr(), flag,
            dh2.data_ptr(), _address(dc2), B, I, H, dx.data_ptr(), dh.data_ptr(), _address(dc),
            _address(dwi), _address(dwh), _address(dbi), _address(dbh))
        return (None, dx if need[1] else None, dh if need[2] else None,
                dc if need[3] else None, dwi, dwh, dbi if need[6] else None,
                dbh if need[7] else None)


def _reference_grads(mode: str, inputs: tuple, need: tuple, grads: tuple) -> tuple:
    """The step of ``equations.cells`` on the saved tensors, differentiated with the graph kept."""
    x, h, c, wi, wh, bi, bh = inputs
    w = {"w_ih": wi, "w_hh": wh, "b_ih": bi, "b_hh": bh}
    new, _ = STEPS[mode](x, (h, c) if mode == "lstm" else (h,), w, CellOptions(mode, True, False))
    wanted = [t for t, n in zip(inputs, need) if n]
    got = iter(torch.autograd.grad(new, wanted, grads[:len(new)], create_graph=True,
                                   allow_unused=True))
    return tuple(next(got) if n else None for n in need)


def cell_call(cell: Any, input: Any, hx: Any) -> Any:
    """``cell(input, hx)`` under autograd as one ``_Step``, or None when the call is not a plain
    step (see the module docstring). Returns what torch.nn returns."""
    if type(input) is not Tensor or input.dtype not in _FAST or input.dim() != 2 or cell._variants \
            or not cell.reset_after or _traced() or torch._C._are_functorch_transforms_active():
        return None
    lstm = cell._KIND == "lstm"
    dt = input.dtype
    B, I, H = input.shape[0], cell.input_size, cell.hidden_size
    if hx is None:
        zero = torch.zeros((B, H), dtype=dt)
        h, c = zero, (zero if lstm else None)
    else:
        state = one_step._state(input, hx, lstm)
        if state is None:
            return None
        h, c, _ = state
    ps = cell._parameters
    try:
        params = (ps["weight_ih"], ps["weight_hh"], ps["bias_ih"], ps["bias_hh"])
    except KeyError:  # pruned or parametrized (see one_step.cell_call)
        return None
    mode = cell.cell_mode
    step = _K[0] if _K is not None else _kernels()[0]
    if B == 0 or not (one_step._plain_params(step, params, GATES[mode] * H, I, H, dt)
                      and step.plain(input, (B, I), dt) and step.plain(h, (B, H), dt)
                      and step.plain(c, (B, H), dt)):
        return None
    return _Step.apply(mode, input, h, c, *params)
