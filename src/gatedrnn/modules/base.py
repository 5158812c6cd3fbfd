"""The house: one ``forward`` for every sequence module (LSTM, GRU, RNN, MinGRU, MinLSTM, SLSTM,
and any cell registered in ``gatedrnn.equations.kinds``).

    input forms (PackedSequence, unbatched, batch_first) -> the layer stack -> output shaping

is written here once. A family of modules fills in a few hooks: how a call is checked
(``_call_args``: torch.nn's own checks for the torch.nn subclasses, torch.nn-style ones for the
others), which engine runs it (``_engine``, through ``gatedrnn.engines.dispatch``), the parameter
dict of one layer and direction (``_weights``) and the cell options (``_options``). The layer
stack is ``gatedrnn.engines.stack.stacked`` for all of them.

Shape legend (as torch.nn): N batch, L sequence length, D = 2 if bidirectional else 1, H_in input
size, H_out output size.
    input  (L, N, H_in), (N, L, H_in) with batch_first, (L, H_in) unbatched, or a PackedSequence
    state  each part (D·num_layers, N, ·); (D·num_layers, ·) unbatched
    output (L, N, D·H_out) or (N, L, D·H_out) with batch_first, or the PackedSequence form of it
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from ..engines import route, stack
from ..equations.cells import CellOptions, Weights
from . import scripting
from .checks import ModuleArgs, autocast_on

_LOG = logging.getLogger("gatedrnn")

# What a module runs while an exporter traces it. Set by ``gatedrnn.export`` when it is imported
# (``import gatedrnn`` imports it), so that this floor never imports the floor above it.
_exporter: Callable[..., Any] | None = None


def set_exporter(export_forward: Callable[..., Any]) -> None:
    """Install ``export_forward(module, input, hx, return_gates)`` (``gatedrnn.export``)."""
    global _exporter
    _exporter = export_forward


def exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


def trace_engine(module: Any, return_gates: bool) -> str:
    """The engine of a call that ``torch.jit.trace`` records (an exporter's trace excepted, see
    ``exporting``): torch's own op, which the trace records as one node that runs at any sequence
    length, as torch.nn's trace does, whatever ``engine`` says. Anything else would be recorded as
    the time loop unrolled at the traced length, and the traced graph would return that many steps
    for any input: refused here, with the ways that work."""
    untorched = module._untorched(return_gates)
    if untorched == []:
        return "native"
    name = type(module).__name__
    what = f"{name}({', '.join(untorched)})" if untorched else name
    raise RuntimeError(
        f"torch.jit.trace cannot record {what}: torch has no operator for it, so the trace would "
        "hold the time loop unrolled at the traced length and return that many steps for any "
        "input. Use torch.export.export(model, args, dynamic_shapes=...), which records a scan "
        "that runs at any length, or torch.onnx.export(model, args, dynamo=True) for ONNX.")


def record_engine(obj: Any, engine: str) -> str:
    """Set ``last_engine``; log when the choice changes."""
    if obj.__dict__.get("last_engine") != engine:
        _LOG.debug("%s: engine %s (was %s)", type(obj).__name__, engine,
                   obj.__dict__.get("last_engine"))
        obj.__dict__["last_engine"] = engine
    return engine


_EAGER: Any = None


def _eager_forward() -> Any:
    """``SequenceModule._forward`` out of Dynamo's sight. Dynamo refuses to trace a
    torch.nn.RNNBase ("Dynamo does not support RNN, GRU, or LSTM"), so under torch.compile the
    torch.nn subclasses run eagerly, as torch.nn.LSTM does; without this, Dynamo would still trace
    the functions it calls one by one. Made on first use, since torch.compiler.disable imports
    Dynamo (seconds)."""
    global _EAGER
    if _EAGER is None:
        _EAGER = torch.compiler.disable(SequenceModule._forward)
    return _EAGER


# The type checker sees the house as the nn.Module it is mixed into; at run time it derives from
# nothing, so that ``class LSTM(RNNBase, nn.LSTM)`` keeps torch's cooperative __init__ chain.
if TYPE_CHECKING:
    _Module = nn.Module
else:
    _Module = object


class SequenceModule(_Module):
    """What every sequence module shares: ``forward`` (input forms, the layer stack, output
    shaping) and ``last_engine``. Mixed in front of an nn.Module; see the module docstring."""

    # The torch.nn subclasses' fast routes (``gatedrnn.engines.route``: torch's op straight from
    # a plan where auto picks it, the streaming step, the lean small-batch path), and eager runs
    # under Dynamo.
    _FAST_PATHS = False
    _EAGER_UNDER_DYNAMO = False
    recurrent_dropout = 0.0  # (a class default: the modules without the variant)
    if TYPE_CHECKING:
        engine: str
        input_size: int
        hidden_size: int
        num_layers: int
        bias: bool
        batch_first: bool
        dropout: float
        bidirectional: bool
        proj_size: int
        last_engine: str | None

    # --- the hooks of a family ----------------------------------------------------------------

    def _engine(self, input: Any, return_gates: bool) -> str:
        """The engine for this call: one of the cell's engines, "native" or "fused-float32"."""
        raise NotImplementedError

    def _native(self, input: Any, hx: Any) -> Any:
        """torch's own forward (engine "native"), for the classes that have one."""
        raise NotImplementedError

    def _call_args(self, input: Any, hx: Any) -> ModuleArgs:
        """The call checked and put in the stack's form: x (T, B, I) time-major, sorted by length
        when packed, and the state parts, each (D·num_layers, B, ·)."""
        raise NotImplementedError

    def _weights(self, k: int) -> Weights:
        """The parameter dict of layer·D + direction k, in the engines' names."""
        raise NotImplementedError

    def _options(self) -> CellOptions:
        raise NotImplementedError

    def _untorched(self, return_gates: bool) -> list[str] | None:
        """What torch's recurrent ops lack to compute this call: the options they cannot
        ("layer_norm=True", "return_gates=True"), [] when they can, None when torch has no op
        for the module at all (the modules built from a declaration)."""
        return None

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as JSON-serialisable values (see ``gatedrnn.from_config``)."""
        raise NotImplementedError

    def __prepare_scriptable__(self) -> Any:
        """``torch.jit.script`` calls this first. It refuses what torch's ops cannot compute, by
        name, and returns the module itself: TorchScript writes the result back into a parent's
        ``_modules``, so anything else would change the user's eager model. The LSTM, GRU and RNN
        compile ``gatedrnn.modules.scripting``'s methods."""
        scripting.prepare(self, self._untorched(False))
        return self

    # --- forward --------------------------------------------------------------------------------

    def forward(self, input: Tensor | PackedSequence, hx: Any = None, return_gates: bool = False):
        """Run the network; see the class docstring for the shapes. Returns ``(output, h_n)``,
        ``(output, (h_n, c_n))`` for the LSTM (the state's parts as a tuple whenever there are
        several), and the recorded gates as a third element when ``return_gates``.

        ``return_gates`` is positional-or-keyword, not keyword-only, because torch's TorchScript ONNX
        exporter passes every defaulted parameter of ``forward`` positionally."""
        if self._FAST_PATHS and return_gates is False and (self.engine == "auto"
                                                           or self.engine == "fused"):
            # The call's route (torch's op straight from a plan, the streaming step, the lean
            # path, or the general forward below), decided once per call signature and cached
            # under its guards (gatedrnn.engines.route). (return_gates by identity: an exporter
            # may pass it as a traced tensor.)
            return route.module_call(self, input, hx, _general_call)
        return self._general(input, hx, return_gates)

    def _general(self, input: Any, hx: Any, return_gates: bool) -> Any:
        """forward past the fast routes: eager under Dynamo, else ``_forward``."""
        if self._EAGER_UNDER_DYNAMO and "torch._dynamo" in sys.modules:  # (else nobody compiles)
            return _eager_forward()(self, input, hx, return_gates)
        return self._forward(input, hx, return_gates)

    def _forward(self, input: Any, hx: Any, return_gates: bool) -> Any:
        """forward past the special paths."""
        if exporting():
            if _exporter is None:  # pragma: no cover - ``import gatedrnn`` installs it
                raise RuntimeError("import gatedrnn.export to export gatedrnn's modules")
            return _exporter(self, input, hx, return_gates)
        # A TorchScript trace (an exporter's took the branch above): torch's op, or a refusal.
        engine = record_engine(self, trace_engine(self, return_gates) if torch.jit.is_tracing()
                               else self._engine(input, return_gates))
        if engine == "native":
            return self._native(input, hx)
        a = self._call_args(input, hx)
        x, state = a.x, a.state
        half = engine == "fused-float32"
        if half:  # bfloat16/float16 storage, float32 arithmetic; the casts are in the graph
            x, state = x.float(), [s.float() for s in state]
        D = 2 if self.bidirectional else 1
        LD = self.num_layers * D
        spec = stack.StackSpec(self.num_layers, D, self.dropout, self.recurrent_dropout,
                               self.training)
        weights = [self._weights(k) for k in range(LD)]
        if half:
            weights = [{n: None if t is None else t.float() for n, t in w.items()} for w in weights]
        states = [tuple(s[k] for s in state) for k in range(LD)]
        # Under autocast the engines keep their own dtypes: autocast would hand the fused
        # kernels half-precision products (and float16 arrays numba cannot read).
        with torch.autocast(x.device.type, enabled=False) if autocast_on(
                x.device.type) else contextlib.nullcontext():
            y, finals, gates = stack.stacked(x, states, weights, a.batch_sizes, self._options(),
                                             spec, "fused" if half else engine, return_gates)
        out_state = [torch.stack([f[i] for f in finals]) for i in range(len(finals[0]))]
        if half:
            y, out_state = y.to(a.x.dtype), [s.to(a.x.dtype) for s in out_state]
            gates = None if gates is None else {k: g.to(a.x.dtype) for k, g in gates.items()}
        if a.unsorted is not None:
            out_state = [s.index_select(1, a.unsorted) for s in out_state]
            if gates is not None:
                gates = {k: g.index_select(2, a.unsorted) for k, g in gates.items()}
        if a.lengths is not None:
            out: Any = PackedSequence(pack_padded_sequence(y, a.lengths).data, input.batch_sizes,
                                      input.sorted_indices, input.unsorted_indices)
        elif a.unbatched:
            out = y.squeeze(1)
            out_state = [s.squeeze(1) for s in out_state]
            if gates is not None:
                gates = {k: g.squeeze(2) for k, g in gates.items()}
        else:
            out = y.transpose(0, 1) if self.batch_first else y
        result = (out, pack_state(out_state))
        return result + (gates,) if return_gates else result


def _general_call(m: Any, input: Any, hx: Any) -> Any:
    return m._general(input, hx, False)


def pack_state(parts: list[Tensor]) -> Any:
    """The state as the module returns it: one tensor, or a tuple when it has several parts."""
    return parts[0] if len(parts) == 1 else tuple(parts)
