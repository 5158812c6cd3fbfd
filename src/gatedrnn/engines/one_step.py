"""The streaming fast path: inference of a cell step, or of a module over a few steps, by step kernels.

Online prediction calls a network once per arriving time step, at B = 1. The arithmetic of such a
call is a GEMV of a few µs; the general path around it (argument checks, packing, the engine
interface, tensor bookkeeping) costs tens of µs of Python, and so does torch.nn's. Here a call that
is plainly a streaming step goes straight to ``kernels.step``, which reads tensors by address and
writes the results into freshly allocated outputs:

- cell: ``cell(x, hx)`` with x (B, I) and the state given or None (zeros);
- module: ``module(x, hx)`` with up to ``MAX_STEPS`` time steps and work T·B·H up to ``MAX_WORK``
  (a short sequence: there the lean path's set-up, ~0.1 ms, would decide), hx given or None
  (zeros, as torch.nn); the step kernels run step after step, layer by layer.

Every condition is checked, flat and cheaply (a torch attribute read costs ~0.1 µs): no autograd,
no variant, every tensor a C-contiguous CPU tensor of the expected shape and one dtype. Any call
that is not plainly such a step returns None here and takes the general path, which also raises
the errors. The equations are those of ``gatedrnn.equations.cells``; tests check both paths against torch.nn.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..equations.cells import GATES
from . import dispatch

_FAST = (torch.float32, torch.float64)
_NP = {torch.float32: np.float32, torch.float64: np.float64}
_STEP: Any = None


def kernels() -> Any:
    """``kernels.step``, imported on first use (numba), then kept: an import statement costs
    0.7 µs of a ~12 µs call."""
    global _STEP
    if _STEP is None:
        from .kernels import step

        _STEP = step
    return _STEP


def _fresh(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    # numpy's allocator plus from_numpy: 0.8 µs, against 1.35 µs for torch.empty at this size.
    return torch.from_numpy(np.empty(shape, _NP[dtype]))


def _traced() -> bool:
    """Under torch.compile, torch.export or TorchScript tracing (which the TorchScript ONNX
    exporter uses) the computation must stay visible as torch ops: no kernel by address. (The
    tracing test is ``torch.jit.is_tracing()``'s own, without its two Python calls on this path;
    ``tests/test_jit.py`` checks that no fast path returns a result while a trace records.)"""
    return torch._C._get_tracing_state() is not None or torch.compiler.is_compiling()


def _needs_grad(tensors: Any) -> bool:
    """Whether autograd must see a call on these tensors (callers ask only in grad mode)."""
    return any(t is not None and t.requires_grad for t in tensors)


def _state(input: Any, hx: Any, lstm: bool) -> tuple[Tensor, Tensor | None, torch.dtype] | None:
    """(h, c, dtype) from an LSTM's (h, c) tuple, (h, None, dtype) from a plain tensor, when the
    input is a plain float32/float64 tensor; None for anything else (a list, a subclass, a wrong
    arity, another dtype: the general path takes those, or raises)."""
    if type(input) is not Tensor or input.dtype not in _FAST:
        return None
    if lstm:
        if type(hx) is not tuple or len(hx) != 2 or type(hx[0]) is not Tensor \
                or type(hx[1]) is not Tensor:
            return None
        return hx[0], hx[1], input.dtype
    return (hx, None, input.dtype) if type(hx) is Tensor else None


def cell_call(cell: Any, input: Any, hx: Any) -> Any:
    """``cell(input, hx)`` through the step kernel, or None when the call is not a plain step."""
    if _traced() or cell._variants:
        return None
    w0 = cell._parameters.get("weight_ih")  # (a first look; every tensor is looked at below)
    if torch.is_grad_enabled() and ((w0 is not None and w0.requires_grad)
                                    or getattr(input, "requires_grad", False)):
        return None  # a training step (engines.step_grad)
    lstm = cell._KIND == "lstm"
    if hx is None and type(input) is Tensor and input.dim() == 2 and input.dtype in _FAST:
        zero = torch.from_numpy(np.zeros((input.shape[0], cell.hidden_size), _NP[input.dtype]))
        hx = (zero, zero) if lstm else zero  # torch.nn's zero state
    state = _state(input, hx, lstm)
    if state is None:
        return None
    h, c, dt = state
    ps = cell._parameters  # not nn.Module.__getattr__: ~0.3 µs a name
    try:
        params = (ps["weight_ih"], ps["weight_hh"], ps["bias_ih"], ps["bias_hh"])
    except KeyError:  # pruned or parametrized: the weight is an attribute, computed per access
        return None
    if (torch.is_grad_enabled() and _needs_grad((input, h, c, *params))) or input.dim() != 2:
        return None
    mode = cell.cell_mode
    B, I, H = input.shape[0], cell.input_size, cell.hidden_size
    step = _STEP or kernels()
    if not (_plain_params(step, params, GATES[mode] * H, I, H, dt) and step.plain(input, (B, I), dt)
            and step.plain(h, (B, H), dt) and step.plain(c, (B, H), dt)):
        return None
    h2 = _fresh((B, H), dt)
    c2 = _fresh((B, H), dt) if lstm else None
    run, flag = step.kernel(mode, cell.reset_after)
    # (c and c2 are tensors exactly for the LSTM)
    run(step.LIKE[dt], input.data_ptr(), h.data_ptr(), c.data_ptr() if c is not None else 0,
        *_addresses(params), B, I, H, h2.data_ptr(), H, 0, c2.data_ptr() if c2 is not None else 0,
        flag)
    return (h2, c2) if lstm else h2


def _plain_params(step: Any, params: tuple, GH: int, I: int, H: int, dt: torch.dtype) -> bool:
    wi, wh, bi, bh = params
    return ((bi is None) == (bh is None) and step.plain(wi, (GH, I), dt)
            and step.plain(wh, (GH, H), dt) and step.plain(bi, (GH,), dt) and step.plain(bh, (GH,), dt))


def _addresses(params: tuple) -> tuple[int, int, int, int]:
    wi, wh, bi, bh = params
    return wi.data_ptr(), wh.data_ptr(), (0 if bi is None else bi.data_ptr()), \
        (0 if bh is None else bh.data_ptr())


# A module call of up to this many steps runs the step kernels step by step: measured
# against the lean path's time loops, which pay ~0.1 ms of setting up per call.
# (LSTM inference, 1 thread, torch.nn's time / this path's: (T, B, I, H) = (5, 4, 32, 64) 1.53,
# the lean path 0.75; (20, 8, 64, 128) 0.46, the lean path 0.63, torch's oneDNN op 1.0; GRU 2.39
# and 1.61). Bounded by the work T·B·H too: from B·H ~ 1000 a step's per-step products lose to
# the lean path's one input projection.
MAX_STEPS = 32
MAX_WORK = 4096
_KIND = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}
MODE = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


def module_call(module: Any, input: Any, hx: Any, return_gates: Any = False) -> Any:
    """``module(input, hx)`` for a few time steps through the step kernels, layer by layer,
    direction by direction and step by step, or None when the call is not a plain short inference.

    The reverse direction walks the steps backwards. Outputs: y (T, B, D·H) ((B, T, D·H)
    batch-first) and h_n (and c_n) (L·D, B, H), as torch.nn.
    """
    if return_gates is not False or _traced():
        return None  # (return_gates by identity: an exporter may pass it as a traced tensor)
    plan = module_plan(module, input, hx)
    return None if plan is None else module_run(module, plan, input, hx)


def module_plan(m: Any, input: Any, hx: Any) -> tuple | None:
    """What a module call needs that its configuration and the input's shape decide (the
    kernel, the sizes), or None when such a call is not a plain short inference. Made once per
    call signature by ``engines.route``; ``module_run`` checks the tensors on every call."""
    if type(input) is not Tensor or input.dtype not in _FAST:
        return None
    w0 = m._parameters.get("weight_ih_l0")  # (a first look; every tensor is looked at below)
    if torch.is_grad_enabled() and ((w0 is not None and w0.requires_grad) or input.requires_grad):
        return None
    if m.proj_size or m.layer_norm or m.peephole or m.zoneout or m.zoneout_cell \
            or m.num_heads > 1:  # (the step kernels have the dense W_hh only)
        return None
    shape = input.shape
    if len(shape) == 2:  # unbatched (T, I): one row, the same memory layout as (1, 1, I)
        T, B = shape[0], 1
    elif len(shape) == 3:
        T, B = (shape[1], shape[0]) if m.batch_first else (shape[0], shape[1])
    else:
        return None
    D = 2 if m.bidirectional else 1
    L, H, I = m.num_layers, m.hidden_size, m.input_size
    if T == 0 or B == 0 or (T > 1 and (T > MAX_STEPS or T * B * H > MAX_WORK)):
        return None
    if T > 1 and m.engine == "auto" and dispatch.choose(
            "cpu", _KIND[m.mode], dispatch.dtype_key(input.dtype), torch_op=True, simple=True,
            training=False, batch=B, work=T * B * H, hidden=H) != "fused":
        return None  # (a sequence where the table picks torch's op, e.g. float64 from B = 16)
    run, flag = (_STEP or kernels()).kernel(MODE[m.mode], m.reset_after)
    # batch-first (B, T, ·) with B, T > 1 is not time-major: the input is copied to (T, B, I), and
    # the last layer writes its rows with a stride of T·D·H straight into the (B, T, D·H) output
    bf = m.batch_first and len(shape) == 3 and B > 1 and T > 1
    hshape = (L * D, H) if len(shape) == 2 else (L * D, B, H)
    return (m.mode == "LSTM", T, B, D, L, H, I, hshape, GATES[MODE[m.mode]] * H, bf, run, flag)


def module_run(m: Any, plan: tuple, input: Tensor, hx: Any) -> Any:
    """``m(input, hx)`` by ``module_plan``'s plan for this input's shape, or None when a tensor
    is not plain (dtype, device, shape, contiguity: the kernels read by address), autograd must
    see the call, or dropout applies."""
    lstm, T, B, D, L, H, I, hshape, GH, bf, run, flag = plan
    if m.training and (m.dropout or m.recurrent_dropout or m.weight_drop):
        return None  # (plain attributes, which may change between calls)
    zeros = hx is None  # torch.nn's zero state, made below
    state = _state(input, (input, input) if lstm else input, lstm) if zeros else \
        _state(input, hx, lstm)
    if state is None:
        return None
    h, c, dt = state
    ps = m._parameters
    try:
        groups = [itemgetter(*names)(ps) + (() if m.bias else (None, None))
                  for names in m._all_weights]
    except KeyError:  # pruned or parametrized (see cell_call)
        return None
    if torch.is_grad_enabled() and _needs_grad((input, h, c, *(p for g in groups for p in g))):
        return None
    step = _STEP or kernels()
    if zeros:
        h = torch.from_numpy(np.zeros(hshape, _NP[dt]))
        c = h if lstm else None
    shape = input.shape
    if not (shape[-1] == I and input.is_cpu and input.is_contiguous() and step.plain(h, hshape, dt)
            and step.plain(c, hshape, dt)):
        return None
    for k, params in enumerate(groups):
        if not _plain_params(step, params, GH, I if k < D else D * H, H, dt):
            return None
    npdt = _NP[dt]
    # The state is updated in place, step after step: each kernel reads h (and c) whole before it
    # writes h' (and c') over them, row by row (see kernels.step).
    hn = h.clone() if not zeros else h
    cn = None if c is None or not lstm else (
        c.clone() if not zeros else torch.from_numpy(np.zeros(hshape, npdt)))
    y = torch.from_numpy(np.empty((*shape[:-1], D * H), npdt))
    isz = 4 if dt is torch.float32 else 8
    size = B * H * isz  # bytes of one (B, H)
    like = step.LIKE[dt]
    x = input.transpose(0, 1).contiguous() if bf else input
    x_at, width = x.data_ptr(), I
    hn_at = hn.data_ptr()
    cn_at = cn.data_ptr() if cn is not None else 0
    outs = [x]  # every layer's output stays alive until the layer above has read it
    for layer in range(L):
        last = layer == L - 1
        outs.append(y if last else _fresh((T, B, D * H), dt))
        out_at = outs[-1].data_ptr()
        # where step t's rows start, and their stride
        t_stride, ldy = (D * H * isz, T * D * H) if last and bf else (B * D * H * isz, D * H)
        x_stride = B * width * isz
        for d in range(D):
            k = layer * D + d
            at, w = k * size, _addresses(groups[k])
            for t in (range(T - 1, -1, -1) if d else range(T)):
                run(like, x_at + t * x_stride, hn_at + at, cn_at + at if lstm else 0, *w, B,
                    width, H, out_at + t * t_stride + d * H * isz, ldy, hn_at + at,
                    cn_at + at if lstm else 0, flag)
        x_at, width = out_at, D * H
    return y, ((hn, cn) if lstm else hn)
