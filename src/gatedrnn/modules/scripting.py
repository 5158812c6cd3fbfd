"""What ``torch.jit.script`` compiles for the torch.nn subclasses: torch's own recurrent operators on
the module's own parameters, as torch.nn's scripted modules run.

TorchScript compiles a module's Python source, and the house's forward (``modules.base``) is not
TorchScript: it chooses engines, calls numba and shapes outputs in Python. So the scripted module
runs these methods instead, written in TorchScript's subset:

- LSTM, GRU, RNN: ``__overloads__`` tells TorchScript that ``forward`` is overloaded, by the
  methods ``_script_forward`` (a tensor input) and ``_script_forward_packed`` (a PackedSequence),
  as torch.nn's own forward is; a scripted caller gets the exact types, (Tensor, (Tensor, Tensor))
  or (PackedSequence, (Tensor, Tensor)) for the LSTM. As torch.nn's scripted LSTM, a scripted
  gatedrnn.LSTM is called from scripted code (the parent's forward), not from Python.
- LSTMCell, GRUCell, RNNCell: the cell's ``forward`` (typed as torch.nn's) takes the TorchScript
  branch when compiled (``torch.jit.is_scripting()`` is a constant there, so the eager branch is
  never compiled), and the house's cell forward in eager Python.

Nothing is copied or replaced: ``__prepare_scriptable__`` (``prepare``) returns the module itself,
so TorchScript writes nothing new into a parent's ``_modules``, and the scripted module holds the
eager module's Parameter objects. What torch's ops cannot compute is refused there, by name:
layer_norm, peephole, zoneout (which acts in evaluation too, as the expectation of its mask),
reset_after=False, num_heads > 1, and the cells without a torch.nn twin (MinGRU, MinLSTM, SLSTM).
recurrent_dropout and weight_drop act in training only: such a module scripts for inference, and
its scripted forward raises in training mode.

No ``from __future__ import annotations`` here: TorchScript reads these annotations as types.
"""

import types
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

# The options torch's recurrent ops have nothing for (besides num_heads > 1 and reset_after=False);
# forget_bias and init only change initial values.
VARIANTS = ("layer_norm", "peephole", "recurrent_dropout", "zoneout", "zoneout_cell",
            "weight_drop")
# The variants that act only in training: a module with them scripts for inference.
TRAINING_ONLY = ("recurrent_dropout", "weight_drop")


def untorched(obj: Any, return_gates: bool = False) -> list[str]:
    """The options set on a module or cell that torch's ops cannot compute ([] when they can)."""
    on = [f"{k}={getattr(obj, k)!r}" for k in VARIANTS if getattr(obj, k, 0)]
    if getattr(obj, "num_heads", 1) > 1:
        on.append(f"num_heads={obj.num_heads}")
    if not getattr(obj, "reset_after", True):
        on.append("reset_after=False")
    if return_gates:
        on.append("return_gates=True")
    return on


def refuse(module: Any, missing: list[str] | None) -> None:
    """Raise for what TorchScript cannot run with torch's ops (``missing``: the options torch's
    ops lack, [] for none, None for a module torch has no op for at all)."""
    name = type(module).__name__
    ways = ("use torch.export.export(model, args) (with dynamic_shapes to run at any sequence "
            "length), or torch.onnx.export(model, args, dynamo=True) for ONNX")
    if missing is None:
        raise RuntimeError(f"torch.jit.script cannot compile {name}: TorchScript runs torch's "
                           f"operators, and torch has none for {name}'s cell; {ways}")
    on = [u for u in missing if u.split("=")[0] not in TRAINING_ONLY]
    if on:
        why = " (zoneout acts in evaluation too, as its mask's expectation)" if any(
            u.startswith("zoneout") for u in on) else ""
        raise RuntimeError(f"torch.jit.script cannot compile {name} with {', '.join(on)}: "
                           f"torch's recurrent operators have nothing for it{why}; {ways}. "
                           f"(recurrent_dropout and weight_drop script, for inference only.)")


# The modules torch.jit.script is compiling (``__prepare_scriptable__`` adds them): only these show
# TorchScript the overload methods as exported. torch.jit.trace compiles every exported method of a
# module it traces and then takes TorchScript's module path, which costs ~0.2 s per trace and
# refuses a module with pruning's forward pre-hooks; so a traced module must have none.
_SCRIPTING: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


class _exported_when_scripted:  # (lower case: a decorator)
    """A method that ``torch.jit.export`` marks for the modules in ``_SCRIPTING`` only; a plain
    method otherwise (eager Python, torch.jit.trace)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        # A second function object on the same code: TorchScript reads the mark from it, and
        # compiles the same source (inspect finds it by the code's file and line).
        copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                                  fn.__closure__)
        copy.__qualname__, copy.__doc__ = fn.__qualname__, fn.__doc__
        copy.__annotations__, copy.__kwdefaults__ = fn.__annotations__, fn.__kwdefaults__
        self.exported = torch.jit.export(copy)

    def __get__(self, obj: Any, cls: Any = None) -> Any:
        if obj is None:
            return self.fn
        return types.MethodType(self.exported if obj in _SCRIPTING else self.fn, obj)


# The type checker sees each mixin as the torch.nn class it is mixed into; at run time they derive
# from nothing.
if TYPE_CHECKING:
    _LSTMBase = nn.LSTM
    _RNNBase = nn.RNNBase
    _CellBase = nn.RNNCellBase
    _Module = nn.Module
else:
    _LSTMBase = _RNNBase = _CellBase = _Module = object


class _Inference(_Module):
    def _script_weights(self) -> list[Tensor]:
        """torch.nn's flat weights, in its op's order (every one set: the stub allows None)."""
        return self._flat_weights  # type: ignore[return-value]

    def _script_training_check(self) -> None:
        if self.training and (self.recurrent_dropout > 0 or self.weight_drop > 0):
            raise RuntimeError("this scripted module has recurrent_dropout or weight_drop, which "
                               "TorchScript cannot compute: it runs in evaluation mode only "
                               "(call .eval())")

    if TYPE_CHECKING:
        recurrent_dropout: float
        weight_drop: float
        _flat_weights: list[Tensor | None]


class ScriptLSTM(_Inference, _LSTMBase):
    """``forward`` under TorchScript for the LSTM (see the module docstring)."""

    __overloads__ = {"forward": ["_script_forward", "_script_forward_packed"]}

    def _script_zeros(self, B: int, like: Tensor) -> tuple[Tensor, Tensor]:
        D = 2 if self.bidirectional else 1
        H_out = self.proj_size if self.proj_size > 0 else self.hidden_size
        h = torch.zeros(self.num_layers * D, B, H_out, dtype=like.dtype, device=like.device)
        c = torch.zeros(self.num_layers * D, B, self.hidden_size, dtype=like.dtype,
                        device=like.device)
        return h, c

    @_exported_when_scripted
    def _script_forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
                        ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """input (L, N, H_in) or (N, L, H_in) with batch_first, or (L, H_in) unbatched."""
        self._script_training_check()
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        x = input if batched else input.unsqueeze(batch_dim)
        if hx is None:
            h0, c0 = self._script_zeros(x.size(batch_dim), x)
        else:
            h0, c0 = hx
            if not batched:  # (D·num_layers, ·) -> (D·num_layers, 1, ·)
                if h0.dim() != 2 or c0.dim() != 2:
                    raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D")
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        self.check_forward_args(x, (h0, c0), None)  # torch.nn's checks and messages
        out = torch.lstm(x, [h0, c0], self._script_weights(), self.bias, self.num_layers,
                         self.dropout, self.training, self.bidirectional, self.batch_first)
        y, h, c = out[0], out[1], out[2]
        if not batched:
            return y.squeeze(batch_dim), (h.squeeze(1), c.squeeze(1))
        return y, (h, c)

    @_exported_when_scripted
    def _script_forward_packed(self, input: PackedSequence,
                               hx: tuple[Tensor, Tensor] | None = None
                               ) -> tuple[PackedSequence, tuple[Tensor, Tensor]]:
        self._script_training_check()
        data, batch_sizes = input.data, input.batch_sizes
        if hx is None:
            h0, c0 = self._script_zeros(int(batch_sizes[0]), data)
        else:
            h0, c0 = self.permute_hidden(hx, input.sorted_indices)  # into the packed order
        self.check_forward_args(data, (h0, c0), batch_sizes)
        out = torch.lstm(data, batch_sizes, [h0, c0], self._script_weights(), self.bias,
                         self.num_layers, self.dropout, self.training, self.bidirectional)
        y = PackedSequence(out[0], batch_sizes, input.sorted_indices, input.unsorted_indices)
        return y, self.permute_hidden((out[1], out[2]), input.unsorted_indices)


class ScriptRNN(_Inference, _RNNBase):
    """``forward`` under TorchScript for the GRU and the Elman RNN (state h alone)."""

    __overloads__ = {"forward": ["_script_forward", "_script_forward_packed"]}

    def _script_zeros(self, B: int, like: Tensor) -> Tensor:
        D = 2 if self.bidirectional else 1
        return torch.zeros(self.num_layers * D, B, self.hidden_size, dtype=like.dtype,
                           device=like.device)

    def _script_op(self, x: Tensor, h0: Tensor) -> tuple[Tensor, Tensor]:
        """torch's op on a padded x (mode GRU, RNN_TANH or RNN_RELU)."""
        args = (self._script_weights(), self.bias, self.num_layers, self.dropout, self.training,
                self.bidirectional, self.batch_first)
        if self.mode == "GRU":
            return torch.gru(x, h0, *args)
        if self.mode == "RNN_TANH":
            return torch.rnn_tanh(x, h0, *args)
        return torch.rnn_relu(x, h0, *args)

    def _script_op_packed(self, data: Tensor, batch_sizes: Tensor, h0: Tensor
                          ) -> tuple[Tensor, Tensor]:
        args = (self._script_weights(), self.bias, self.num_layers, self.dropout, self.training,
                self.bidirectional)
        if self.mode == "GRU":
            return torch.gru(data, batch_sizes, h0, *args)
        if self.mode == "RNN_TANH":
            return torch.rnn_tanh(data, batch_sizes, h0, *args)
        return torch.rnn_relu(data, batch_sizes, h0, *args)

    @_exported_when_scripted
    def _script_forward(self, input: Tensor, hx: Tensor | None = None
                        ) -> tuple[Tensor, Tensor]:
        """input (L, N, H_in) or (N, L, H_in) with batch_first, or (L, H_in) unbatched."""
        self._script_training_check()
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(f"{self.mode.split('_')[0]}: Expected input to be 2D or 3D, got "
                             f"{input.dim()}D instead")
        batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        x = input if batched else input.unsqueeze(batch_dim)
        if hx is None:
            h0 = self._script_zeros(x.size(batch_dim), x)
        elif batched:
            h0 = hx
        else:
            if hx.dim() != 2:
                raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but got "
                                   f"{hx.dim()}-D tensor")
            h0 = hx.unsqueeze(1)
        self.check_forward_args(x, h0, None)  # torch.nn's checks and messages
        y, h = self._script_op(x, h0)
        if not batched:
            return y.squeeze(batch_dim), h.squeeze(1)
        return y, h

    @_exported_when_scripted
    def _script_forward_packed(self, input: PackedSequence, hx: Tensor | None = None
                               ) -> tuple[PackedSequence, Tensor]:
        self._script_training_check()
        data, batch_sizes = input.data, input.batch_sizes
        if hx is None:
            h0 = self._script_zeros(int(batch_sizes[0]), data)
        else:
            h0 = self.permute_hidden(hx, input.sorted_indices)
        self.check_forward_args(data, h0, batch_sizes)
        y, h = self._script_op_packed(data, batch_sizes, h0)
        packed = PackedSequence(y, batch_sizes, input.sorted_indices, input.unsorted_indices)
        return packed, self.permute_hidden(h, input.unsorted_indices)


class _ScriptCell(_CellBase):
    # TorchScript compiles every property of a module unless told; the cells' are eager Python.
    __jit_unused_properties__ = ["cell_mode", "_variants"]

    def __prepare_scriptable__(self) -> Any:
        """torch.jit.script calls this first: refuse what torch's ops cannot compute; the cell
        itself otherwise (nothing replaced in a parent)."""
        refuse(self, untorched(self))
        return self

    def _script_batched(self, input: Tensor, hx: Tensor | None) -> tuple[Tensor, Tensor]:
        """(input, h) with the batch axis, zeros for a missing h; torch.nn's checks."""
        if input.dim() != 1 and input.dim() != 2:
            raise ValueError(f"{self._script_name()}: Expected input to be 1D or 2D, got "
                             f"{input.dim()}D instead")
        if hx is not None and hx.dim() != 1 and hx.dim() != 2:
            raise ValueError(f"{self._script_name()}: Expected hidden to be 1D or 2D, got "
                             f"{hx.dim()}D instead")
        x = input if input.dim() == 2 else input.unsqueeze(0)
        if hx is None:
            return x, torch.zeros(x.size(0), self.hidden_size, dtype=x.dtype, device=x.device)
        return x, hx if input.dim() == 2 else hx.unsqueeze(0)

    def _script_name(self) -> str:
        return "cell"


class ScriptLSTMCell(_ScriptCell):
    """The LSTM cell's ``forward``: torch's op when scripted, the house's cell forward eagerly."""

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor]:
        """One step: returns (h', c'). See the class docstring for the shapes."""
        if torch.jit.is_scripting():
            x, h = self._script_batched(input, None if hx is None else hx[0])
            c = torch.zeros_like(h) if hx is None else (hx[1] if input.dim() == 2
                                                        else hx[1].unsqueeze(0))
            h1, c1 = torch.lstm_cell(x, [h, c], self.weight_ih, self.weight_hh, self.bias_ih,
                                     self.bias_hh)
            if input.dim() == 1:
                return h1.squeeze(0), c1.squeeze(0)
            return h1, c1
        else:
            return super().forward(input, hx)

    def _script_name(self) -> str:
        return "LSTMCell"


class ScriptGRUCell(_ScriptCell):
    """The GRU cell's ``forward``: torch's op when scripted, the house's cell forward eagerly."""

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """One step: returns h'. See the class docstring for the shapes."""
        if torch.jit.is_scripting():
            x, h = self._script_batched(input, hx)
            h1 = torch.gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
            return h1 if input.dim() == 2 else h1.squeeze(0)
        else:
            return super().forward(input, hx)

    def _script_name(self) -> str:
        return "GRUCell"


class ScriptRNNCell(_ScriptCell):
    """The Elman cell's ``forward``: torch's op when scripted, the house's cell forward eagerly."""

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """One step: returns h'. See the class docstring for the shapes."""
        if torch.jit.is_scripting():
            x, h = self._script_batched(input, hx)
            if self.nonlinearity == "tanh":
                h1 = torch.rnn_tanh_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih,
                                         self.bias_hh)
            elif self.nonlinearity == "relu":
                h1 = torch.rnn_relu_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih,
                                         self.bias_hh)
            else:
                raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
            return h1 if input.dim() == 2 else h1.squeeze(0)
        else:
            return super().forward(input, hx)

    def _script_name(self) -> str:
        return "RNNCell"


def prepare(module: nn.Module, missing: list[str] | None) -> None:
    """``__prepare_scriptable__`` of the sequence modules: ``refuse``, then show TorchScript the
    module's overload methods (see ``_SCRIPTING``)."""
    refuse(module, missing)
    _SCRIPTING.add(module)
