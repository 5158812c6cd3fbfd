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
    """The vector-Jacobian product of the step of ``equations.cells`` at the saved tensors, itself
    differentiable. ``torch.func.vjp`` keeps it local to this step: ``autograd.grad`` on the
    saved tensors would also follow h back through the earlier steps to the shared weights."""
    given = [i for i, t in enumerate(inputs) if t is not None]

    def step(*tensors: Tensor) -> tuple:
        full = list(inputs)
        for i, t in zip(given, tensors):
            full[i] = t
        x, h, c, wi, wh, bi, bh = full
        w = {"w_ih": wi, "w_hh": wh, "b_ih": bi, "b_hh": bh}
        new, _ = STEPS[mode](x, (h, c) if mode == "lstm" else (h,), w,
                             CellOptions(mode, True, False))
        return tuple(new)

    pair = torch.func.vjp(step, *(inputs[i] for i in given))
    out, vjp = pair[0], pair[1]
    got = dict(zip(given, vjp(tuple(grads[:len(out)]))))
    return tuple(got.get(i) if n else None for i, n in enumerate(need))


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


# A module's training call of a few steps as one ``_Step`` per step, layer and direction: up to
# this many steps (T·L·D) that beats the general fused path, whose fixed cost (checks, the engine
# interface, masks, buffers, one autograd Function around the whole stack) is ~0.3-0.6 ms, and
# torch.nn's GRU and RNN, whose every step is ~10 autograd nodes (measured, see
# docs/results/small_calls.md; the LSTM's oneDNN op is one node for the whole sequence). Each
# step's backward writes whole weight gradients that autograd then sums, so the chain's cost grows
# by 50-100 µs a step: measured (Xeon, 2 threads, fastest of 25 interleaved, one-node steps /
# general fused path, B = 1-8, H = 32-128) LSTM T = 2 0.54-0.72, 4 0.66-1.02, 6 0.91-1.28,
# 8 1.06-1.42, 16 1.54-2.10; GRU T = 2 0.48-0.60, 4 0.56-0.76, 6 0.76-1.31, 8 0.92-1.14,
# 16 1.34-1.85.
MAX_STEPS = 5
MAX_WORK = 4096  # ... and T·B·H: GRU training at (20, 8, 64, 128) ran 7.3 ms so, 4.7 ms fused
_MODE = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


def module_call(m: Any, input: Tensor, hx: Any) -> Any:
    """``m(input, hx)`` as a chain of ``_Step`` nodes, or None when the call is not a plain
    training call of at most ``MAX_STEPS`` steps on CPU float32/float64 tensors (the caller,
    ``lean_path.module_call``, has checked the input's type, dtype, device and size, the variants
    and the dropouts). Returns what torch.nn returns."""
    if m.proj_size or getattr(m, "num_heads", 1) != 1 or not m.reset_after \
            or torch._C._are_functorch_transforms_active() or (m.training and m.dropout):
        return None
    D, L, H, dt = 2 if m.bidirectional else 1, m.num_layers, m.hidden_size, input.dtype
    unbatched = input.dim() == 2
    x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if m.batch_first else input)
    T, B = x.shape[0], x.shape[1]
    if T * L * D > MAX_STEPS or T * B * H > MAX_WORK:
        return None
    mode = _MODE[m.mode]
    lstm = mode == "lstm"
    ps = m._parameters
    try:
        groups = [tuple(ps[n] for n in names) + (() if m.bias else (None, None))
                  for names in m._all_weights]
    except KeyError:  # pruned or parametrized (see one_step.cell_call)
        return None
    step = _K[0] if _K is not None else _kernels()[0]
    GH = GATES[mode] * H
    for k, params in enumerate(groups):
        if not one_step._plain_params(step, params, GH, m.input_size if k < D else D * H, H, dt):
            return None
    shape = (L * D, B, H)
    if hx is None:
        zero = torch.zeros((B, H), dtype=dt)
        hs: list[Any] = [zero] * (L * D)
        cs: list[Any] = [zero] * (L * D)
    else:
        parts: tuple = hx if lstm else (hx,)
        if (lstm and (type(hx) is not tuple or len(hx) != 2)) or any(
                type(p) is not Tensor or p.dtype is not dt or not p.is_cpu
                or p.shape != (shape[:1] + shape[2:] if unbatched else shape) for p in parts):
            return None
        hs = list(parts[0].reshape(shape).contiguous().unbind(0))
        cs = list(parts[1].reshape(shape).contiguous().unbind(0)) if lstm else [None] * (L * D)
    xs = list(x.contiguous().unbind(0))  # T tensors (B, I), each C-contiguous
    h_n: list[Tensor] = []
    c_n: list[Any] = []
    h: Any
    c: Any
    for layer in range(L):
        outs = []
        for d in range(D):
            k = layer * D + d
            h, c, ys = hs[k], cs[k], [x] * T
            for t in (range(T - 1, -1, -1) if d else range(T)):
                new = _Step.apply(mode, xs[t], h, c, *groups[k])
                h, c = new if lstm else (new, None)
                ys[t] = h
            outs.append(ys)
            h_n.append(h)
            c_n.append(c)
        xs = outs[0] if D == 1 else [torch.cat(pair, 1) for pair in zip(*outs)]
    y = torch.stack(xs)  # (T, B, D·H)
    y = y.squeeze(1) if unbatched else (y.transpose(0, 1) if m.batch_first else y)
    states = [torch.stack(s) for s in ((h_n, c_n) if lstm else (h_n,))]  # (L·D, B, H)
    if unbatched:
        states = [s.squeeze(1) for s in states]
    return y, (tuple(states) if lstm else states[0])
