"""The lean path of the quantized modules and cells: a plain inference call straight to the int8 kernel.

At batch size 1 the int8 kernel (``gatedrnn.engines.kernels.int8.run``) takes tens of µs for a
short sequence, and the general path around it (torch.nn's argument checks, the weights dicts of
every layer rebuilt, the packed weights looked up, the layer stack, masks, the state stacked back)
costs 0.1-0.25 ms of Python: more than the kernel at small shapes, and the whole of a streaming
step. A call that is plainly such an inference goes here instead: it runs the same ``run`` on the
same packed weights, layer after layer and direction after direction, so its outputs are the
general path's bit for bit.

Each module keeps a *plan*: the int8 weights dict of every layer and direction with their packed
layout (``int8.pack``), and the identity, storage and version of every buffer they come from. A
call compares those (a few µs) and rebuilds the plan when a weight changed (an in-place edit,
``load_state_dict``, ``.to()``, a buffer replaced). The thread count is not part of it: ``run``
splits the batch rows over threads per call, from torch's setting, on either path. Buffers made
under ``torch.inference_mode`` have no version counter, so such a module takes the general path,
which packs its weights at every call.

Taken only when all of these hold; anything else returns None, and the general path runs the call
(and raises its errors): evaluation mode, not traced, compiled or exported, ``return_gates``
False, ``engine`` "auto" or "int8", any cell (every option and ``num_heads``: plain LSTM/GRU/RNN
run ``int8.run``, the rest ``int8_variants.run``), int8/float32 CPU
buffers of the expected shapes, a plain float32 CPU tensor input (padded or unbatched; a
PackedSequence takes the general path) of a non-empty shape, and the state absent or of exactly
torch.nn's shape, float32, on the CPU.
"""

from __future__ import annotations

from operator import attrgetter, is_, itemgetter
from typing import Any

import torch
from torch import Tensor

from ..engines import stack
from .base import record_engine

_NO_MASKS: dict[str, Tensor | None] = {}  # (read only: the kernel looks at its values)
# Every cell kind, every option and num_heads included.
_FAST_KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu", "mingru", "minlstm", "slstm")
_MIN = ("mingru", "minlstm")  # no recurrent weight
_GATES = {"lstm": 4, "gru": 3, "mingru": 2, "minlstm": 3, "slstm": 4}  # (the RNN: 1)
_PARTS = {"lstm": 2, "slstm": 4}  # the state's parts: (h, c), (h, c, n, m); the others h alone


# The attributes a plan depends on besides the buffers (those a module has: cells have no layers).
_CONFIG = ("input_size", "hidden_size", "num_layers", "bidirectional", "proj_size", "engine",
           "bias", "batch_first")
_VERSION = attrgetter("_version")  # counts a tensor's in-place edits (copy_, load_state_dict)
_ADDRESS = Tensor.data_ptr  # changes when a tensor's ``.data`` is replaced (no version bump)
_MISSING = object()  # never a buffer: a plan holding it is never valid


class Plan:
    """What a lean call needs, valid while the config and the buffers ``names`` are unchanged.

    ``weights[k]`` is the int8 engine's dict of layer·D + direction k, packed weights included;
    ``run`` is None when the module cannot take the lean path (then every call takes the general
    path until the config or a buffer changes)."""

    __slots__ = ("config_of", "config", "names", "tensors", "versions", "addresses", "run", "opts",
                 "weights", "zeros", "sizes")

    def __init__(self, m: Any, names: tuple[str, ...]) -> None:
        d = m.__dict__
        self.config_of = itemgetter(*(k for k in _CONFIG if k in d))
        self.config = self.config_of(d)
        self.names = names
        self.tensors = tuple(d["_buffers"].get(n) for n in names)
        # A weight set to None, or made under torch.inference_mode (no version counter): a plan
        # that is never valid and never runs (the general path takes those modules' calls).
        self.versions: tuple[int, ...] = ()
        self.addresses: tuple[int, ...] = ()
        if any(t is None or t.is_inference() for t in self.tensors):
            self.names, self.tensors = ("",), (_MISSING,)  # (the identity test fails first)
        else:
            self.versions = tuple(map(_VERSION, self.tensors))
            self.addresses = tuple(map(_ADDRESS, self.tensors))
        self.run: Any = None
        self.opts: Any = None
        self.weights: list[dict[str, Tensor | None]] = []
        self.zeros: dict[int, tuple[Tensor, ...]] = {}  # B -> the zero state of one direction
        # (I, H, H_out, L, D): the sizes the calls are checked against
        H, P = m.hidden_size, getattr(m, "proj_size", 0)
        self.sizes = (m.input_size, H, P or H, getattr(m, "num_layers", 1),
                      2 if getattr(m, "bidirectional", False) else 1)


def plan(m: Any) -> Plan:
    """The module's plan: the cached one while it is valid (its config, and each buffer the same
    tensor at the same address and version), else a new one, cached."""
    d = m.__dict__
    p: Plan | None = d.get("_lean")
    if p is None or p.config_of(d) != p.config \
            or not all(map(is_, map(d["_buffers"].get, p.names), p.tensors)) \
            or tuple(map(_VERSION, p.tensors)) != p.versions \
            or tuple(map(_ADDRESS, p.tensors)) != p.addresses:
        p = d["_lean"] = _build(m)
    return p


def _build(m: Any) -> Plan:
    sfx = m._suffixes
    names = tuple(n.format(s) for s in sfx for n in _names(m))
    p = Plan(m, names)
    kind = m.kind
    if (m.engine not in ("auto", "int8") or kind not in _FAST_KINDS
            or not stack.has_engine(kind, "int8") or p.tensors[0] is _MISSING):
        return p
    if not _shapes_fit(m, p.tensors):
        return p
    # numba: imported when the kernels first run
    from ..engines.kernels import int8, int8_variants

    p.opts = m._options()
    p.weights = [m._packed_weights(s) for s in sfx]
    # A plain LSTM/GRU/RNN straight to int8.run, the rest to the kernels of the variants and the
    # newer cells.
    p.run = int8.run if int8_variants.is_plain(p.weights[0], p.opts) else int8_variants.run
    return p


def _layout(m: Any, I: int) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    """The buffers of one layer and direction that its weights come from ({} for the suffix),
    with the shape and dtype the kernels index them by (input width I)."""
    H, P, nh = m.hidden_size, getattr(m, "proj_size", 0), getattr(m, "num_heads", 1)
    GH = _GATES.get(m.kind, 1) * H
    f32, i8 = torch.float32, torch.int8
    out = [("weight_ih{}", (GH, I), i8), ("weight_ih{}_scale", (GH,), f32)]
    if m.kind not in _MIN:
        hh = (GH, P or H) if nh == 1 else (nh, GH // nh, H // nh)
        out += [("weight_hh{}", hh, i8), ("weight_hh{}_scale", hh[:-1], f32)]
    if m.bias:
        out += [("bias_ih{}", (GH,), f32)] + ([] if m.kind in _MIN else [("bias_hh{}", (GH,), f32)])
    if P:
        out += [("weight_hr{}", (P, H), i8), ("weight_hr{}_scale", (P,), f32)]
    if getattr(m, "peephole", False):
        out.append(("weight_peephole{}", (3, H), f32))
    if getattr(m, "layer_norm", False):
        for which, n in (("x", GH), ("h", GH), ("c", H))[: 3 if m.kind == "lstm" else 2]:
            out += [(f"layer_norm_{which}_weight{{}}", (n,), f32),
                    (f"layer_norm_{which}_bias{{}}", (n,), f32)]
    return out


def _names(m: Any) -> list[str]:
    """The buffers of one layer and direction that its weights come from ({} for the suffix)."""
    return [name for name, _, _ in _layout(m, m.input_size)]


def _shapes_fit(m: Any, tensors: tuple[Any, ...]) -> bool:
    """int8 weights, float32 scales, biases and the variants' weights, on the CPU, shaped as the
    config says (the kernel indexes by these shapes: a reassigned buffer of another shape must
    not pass)."""
    P = getattr(m, "proj_size", 0)
    Ho, D = P or m.hidden_size, 2 if getattr(m, "bidirectional", False) else 1
    first = _layout(m, m.input_size)
    per = len(first)
    for k in range(len(tensors) // per):
        for (_, shape, dt), t in zip(first if k < D else _layout(m, D * Ho),
                                     tensors[k * per:(k + 1) * per]):
            if t.device.type != "cpu" or t.dtype != dt or tuple(t.shape) != shape:
                return False
    return True


def _plain(t: Any, shape: tuple[int, ...]) -> bool:
    return type(t) is Tensor and t.dtype is torch.float32 and t.is_cpu and t.shape == shape


def module_call(m: Any, input: Any, hx: Any, return_gates: Any) -> Any:
    """``m(input, hx)`` of a QuantizedLSTM/GRU/RNN through the int8 kernel, or None when the call
    is not a plain inference (see the module docstring). Returns what the general path returns."""
    if return_gates is not False or m.training or type(input) is not Tensor \
            or input.dtype is not torch.float32 or not input.is_cpu \
            or torch._C._get_tracing_state() is not None or torch.compiler.is_compiling() \
            or torch.compiler.is_exporting():  # (exporters and compilers need torch ops)
        return None
    p = plan(m)
    run = p.run
    if run is None:
        return None
    I, H, Ho, L, D = p.sizes
    shape = input.shape
    nd = len(shape)
    if nd == 3:
        T, B = (shape[1], shape[0]) if m.batch_first else (shape[0], shape[1])
    elif nd == 2:
        T, B = shape[0], 1
    else:
        return None
    if shape[-1] != I or T == 0 or B == 0:
        return None
    LD = L * D
    n_parts = _PARTS.get(p.opts.mode, 1)
    lstm = n_parts > 1  # a tuple state: the LSTM's (h, c), the sLSTM's (h, c, n, m)
    if hx is None:
        zero = p.zeros.get(B)
        if zero is None:  # (the kernel copies the state before it writes: these stay zero)
            zero = p.zeros[B] = (torch.zeros(B, Ho),) + tuple(torch.zeros(B, H)
                                                              for _ in range(n_parts - 1))
        states: Any = [zero] * LD
    else:
        lead = (LD,) if nd == 2 else (LD, B)
        if lstm:
            if type(hx) is not tuple or len(hx) != n_parts or not _plain(hx[0], (*lead, Ho)) \
                    or not _plain(hx[1], (*lead, H)) \
                    or (n_parts > 2 and not all(_plain(s, (*lead, H)) for s in hx[2:])):
                return None
            parts: tuple[Tensor, ...] = hx
        else:
            if not _plain(hx, (*lead, Ho)):
                return None
            parts = (hx,)
        if nd == 2:
            parts = tuple(s.unsqueeze(1) for s in parts)
        states = [tuple(s[k] for s in parts) for k in range(LD)]
    if nd == 2:
        x = input.unsqueeze(1)
    else:
        x = input.transpose(0, 1) if m.batch_first else input
    if m.__dict__.get("last_engine") != "int8":
        record_engine(m, "int8")
    opts, weights = p.opts, p.weights
    if LD == 1:  # one layer, one direction: no stacking
        y, final, _ = run(x, states[0], weights[0], None, False, opts, _NO_MASKS, False)
        if nd == 2:  # (1, H): already h_n's unbatched shape
            return y.squeeze(1), (final if lstm else final[0])
        out_state = [f.unsqueeze(0) for f in final]
    else:
        finals = []
        for layer in range(L):
            k = layer * D
            y, final, _ = run(x, states[k], weights[k], None, False, opts, _NO_MASKS, False)
            finals.append(final)
            if D == 2:
                y_r, final, _ = run(x, states[k + 1], weights[k + 1], None, True, opts, _NO_MASKS,
                                    False)
                finals.append(final)
                y = torch.cat((y, y_r), dim=-1)
            x = y
        out_state = [torch.stack([f[i] for f in finals]) for i in range(len(finals[0]))]
        if nd == 2:
            out_state = [f.squeeze(1) for f in out_state]
            return y.squeeze(1), (tuple(out_state) if lstm else out_state[0])
    out = y.transpose(0, 1) if m.batch_first else y
    return out, (tuple(out_state) if lstm else out_state[0])


def cell_call(m: Any, input: Any, hx: Any) -> Any:
    """``m(input, hx)`` of a quantized cell through the int8 kernel (one step), or None when the
    call is not a plain inference step. Returns what the general path returns."""
    if m.training or type(input) is not Tensor or input.dtype is not torch.float32 \
            or not input.is_cpu or torch._C._get_tracing_state() is not None \
            or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return None
    p = plan(m)
    run = p.run
    if run is None:
        return None
    I, H = p.sizes[0], p.sizes[1]
    shape = input.shape
    nd = len(shape)
    if nd == 2:
        B = shape[0]
    elif nd == 1:
        B = 1
    else:
        return None
    if shape[-1] != I or B == 0:
        return None
    lstm = p.opts.mode == "lstm"
    if hx is None:
        state = p.zeros.get(B)
        if state is None:  # (the kernel copies the state before it writes: these stay zero)
            state = p.zeros[B] = (torch.zeros(B, H), torch.zeros(B, H)) if lstm else (torch.zeros(B, H),)
    else:
        want = (B, H) if nd == 2 else (H,)
        if lstm:
            if type(hx) is not tuple or len(hx) != 2 or not _plain(hx[0], want) \
                    or not _plain(hx[1], want):
                return None
            state = hx
        else:
            if not _plain(hx, want):
                return None
            state = (hx,)
        if nd == 1:
            state = tuple(s.unsqueeze(0) for s in state)
    x = input.view(1, 1, I) if nd == 1 else input.unsqueeze(0)
    if m.__dict__.get("last_engine") != "int8":
        record_engine(m, "int8")
    _, new, _ = run(x, state, p.weights[0], None, False, p.opts, _NO_MASKS, False)
    if nd == 1:
        new = tuple(s.squeeze(0) for s in new)
    return (new[0], new[1]) if lstm else new[0]
