"""The native route: a call for which ``engine="auto"`` picks torch's own op, at torch.nn's cost.

Where the measured table gives a call to torch's op (the LSTM at a few steps in training, the
Elman RNN and RNNCell in training, ...), the general path's work around the op (the engine
choice, torch.nn's own Python checks) costs 5-15 µs, about a tenth of a small call. Here
``module_plan`` (``cell_plan``) decides once per call signature (``engines.route`` remembers the
plan under its guards) and ``module_run`` (``cell_run``) calls torch's op itself
(``torch._VF.lstm``, ``gru``, ``rnn_tanh``, ``rnn_relu`` and the cells' ``lstm_cell``,
``gru_cell``, ``rnn_tanh_cell``, ``rnn_relu_cell``) with the module's flattened weights, exactly as
torch.nn's forward does, so the results are torch.nn's bit for bit.

Everything irregular steps aside (None) to the general path, which raises torch.nn's own
errors: a tensor subclass, a PackedSequence, an input or state of a shape torch.nn's Python
checks refuse, a parametrized or pruned weight_ih, and any trace, export, compile or
``dispatch.explain``. The checks left to torch's op are those it makes itself (dtypes and devices
of the state), with torch.nn's exception class since torch.nn reaches the same op. A streaming
inference step (T = 1 without autograd) and cells in inference belong to the fused step kernels
(``one_step``): never taken here.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import torch
from torch import Tensor

from . import dispatch, lean_path
from .one_step import _traced

_VF: Any = torch._VF  # (torch's op table; untyped)
_MODULE_OPS = {"LSTM": _VF.lstm, "GRU": _VF.gru, "RNN_TANH": _VF.rnn_tanh, "RNN_RELU": _VF.rnn_relu}
_CELL_OPS = {"lstm": _VF.lstm_cell, "gru": _VF.gru_cell, "rnn_tanh": _VF.rnn_tanh_cell,
             "rnn_relu": _VF.rnn_relu_cell}
_CELL_PARAMS = itemgetter("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _off() -> bool:
    """A call that must see the general path: a trace, export or compile (torch ops recorded,
    torch.nn's forward run as written), or ``dispatch.explain`` recording the table's answers."""
    return dispatch.is_recording() or _traced() or torch.compiler.is_exporting()


def module_plan(m: Any, input: Any, hx: Any) -> Any:
    """(op, batched, h shape, c shape or None) when the general path would run torch.nn's
    forward on this call and torch.nn's Python checks pass on the input, else None. ``m`` is an
    LSTM, GRU or RNN with ``engine="auto"``; called once per call signature."""
    if type(input) is not Tensor or _off():
        return None
    w0 = m._parameters.get("weight_ih_l0")
    if w0 is None:  # pruned or parametrized: the general path (torch.nn refreshes its weights)
        return None
    grad = torch.is_grad_enabled()
    training = grad and (w0.requires_grad or input.requires_grad)
    if grad and not training and hx is not None and _wants_grad(hx):
        return None  # (the lean path counts a state's requires_grad as training: let it decide)
    dim = input.dim()
    if not (m.engine == "auto" and dim in (2, 3) and input.shape[-1] == m.input_size
            and input.dtype == w0.dtype
            and (training or (input.shape[1 if m.batch_first else 0] if dim == 3 else
                              input.shape[0]) > 1)
            and m._engine(input, False) == "native"):  # (T = 1 inference: the streaming step's)
        return None
    D = 2 if m.bidirectional else 1
    B = input.shape[0 if m.batch_first else 1] if dim == 3 else 1
    H = m.hidden_size
    lstm = m.mode == "LSTM"
    hshape = (m.num_layers * D, B, (m.proj_size or H) if lstm else H)
    return (_MODULE_OPS[m.mode], dim == 3, torch.Size(hshape),
            torch.Size((m.num_layers * D, B, H)) if lstm else None)


def module_run(m: Any, plan: Any, input: Tensor, hx: Any) -> Any:
    """``m(input, hx)`` through torch's op by ``module_plan``'s plan, or None when the state is
    not of the plan's form (the general path then raises torch.nn's error)."""
    op, batched, hshape, cshape = plan
    lstm = cshape is not None
    if hx is None:
        h = torch.zeros(hshape, dtype=input.dtype, device=input.device)
        state: Any = (h, torch.zeros(cshape, dtype=input.dtype, device=input.device)) if lstm else h
    elif lstm:
        if type(hx) is not tuple or len(hx) != 2:
            return None
        h, c = hx
        if type(h) is not Tensor or type(c) is not Tensor or not batched and (
                h.dim() != 2 or c.dim() != 2):
            return None
        if not batched:
            h, c = h.unsqueeze(1), c.unsqueeze(1)
        if h.shape != hshape or c.shape != cshape:
            return None  # torch.nn's message says which size it expected
        state = (h, c)
    else:
        if type(hx) is not Tensor:
            return None
        if not batched:
            if hx.dim() != 2:
                return None
            hx = hx.unsqueeze(1)
        if hx.shape != hshape:
            return None
        state = hx
    weights = m._flat_weights
    ps = m._parameters
    for name, w in zip(m._flat_weights_names, weights):
        if ps.get(name) is not w:  # swapped in place of setattr (torch.func.functional_call)
            m._update_flat_weights()
            weights = m._flat_weights
            break
    x = input if batched else input.unsqueeze(0 if m.batch_first else 1)
    result = op(x, state, weights, m.bias, m.num_layers, m.dropout, m.training,
                m.bidirectional, m.batch_first)
    if m.__dict__.get("last_engine") != "native":
        _record(m)
    y = result[0]
    if lstm:
        hn: Any = (result[1], result[2])
        if not batched:
            y, hn = y.squeeze(0 if m.batch_first else 1), (hn[0].squeeze(1), hn[1].squeeze(1))
        return y, hn
    if not batched:
        return y.squeeze(0 if m.batch_first else 1), result[1].squeeze(1)
    return y, result[1]


def _wants_grad(hx: Any) -> bool:
    return any(getattr(p, "requires_grad", False) for p in (hx if type(hx) is tuple else (hx,)))


def cell_plan(m: Any, input: Any, hx: Any) -> Any:
    """torch's cell op when the general path would run torch.nn's forward on this training
    step, else None. ``m`` is an LSTMCell, GRUCell or RNNCell with ``engine="auto"``; called once
    per call signature."""
    if type(input) is not Tensor or not torch.is_grad_enabled() or _off():
        return None
    try:
        w0 = _CELL_PARAMS(m._parameters)[0]
    except KeyError:  # pruned or parametrized
        return None
    if not (input.requires_grad or w0.requires_grad):
        return None  # inference: the streaming step kernels' (one_step)
    if m.engine == "auto" and input.dim() in (1, 2) and m._torch_op() \
            and m._engine(input) == "native":
        return _CELL_OPS.get(m.cell_mode)
    return None


def cell_run(m: Any, op: Any, input: Tensor, hx: Any) -> Any:
    """``m(input, hx)`` through torch's cell op ``op`` (``cell_plan``'s), or None when the state
    is not of the form torch.nn's forward passes on (the general path then raises its error)."""
    try:
        params = _CELL_PARAMS(m._parameters)
    except KeyError:  # pruned since the plan was made
        return None
    lstm = m._KIND == "lstm"
    batched = input.dim() == 2
    if hx is None:
        h = torch.zeros(input.shape[0] if batched else 1, m.hidden_size, dtype=input.dtype,
                        device=input.device)
        state: Any = (h, h) if lstm else h
    elif lstm:
        if type(hx) is not tuple or len(hx) != 2 or type(hx[0]) is not Tensor \
                or type(hx[1]) is not Tensor or hx[0].dim() not in (1, 2) or hx[1].dim() not in (1, 2):
            return None
        state = hx if batched else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
    else:
        if type(hx) is not Tensor or hx.dim() not in (1, 2):
            return None
        state = hx if batched else hx.unsqueeze(0)
    x = input if batched else input.unsqueeze(0)
    new = op(x, state, *params)
    if m.__dict__.get("last_engine") != "native":
        _record(m)
    if batched:
        return new
    return (new[0].squeeze(0), new[1].squeeze(0)) if lstm else new.squeeze(0)


def _record(m: Any) -> None:
    lean_path._record(m, "native")
