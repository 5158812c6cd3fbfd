"""int8 modules for inference: every recurrent module and cell, with int8 weights.

``QuantizedLSTM`` … ``QuantizedSLSTM`` and the three quantized cells hold each weight matrix
(``weight_ih``, ``weight_hh``, ``weight_hr``) as int8 with one float32 scale per output row, as
buffers (``weight_ih_l0`` int8, ``weight_ih_l0_scale`` float32), the rest (biases, peepholes, layer
norm) as float32 buffers, under torch.nn's names. The scheme (per-row weights, activations
quantized per row at run time, exact integer products, float32 gates) is
``gatedrnn.equations.quantized``'s. A quantized sequence module runs the house forward
(``base.SequenceModule``: input forms, PackedSequence, unbatched, batch_first, layers, directions)
with an int8 engine: "int8" (the fast kernels) where they cover the options, else
"int8-reference"; ``last_engine`` names what ran. A plain inference call on a CPU float32
tensor (padded or unbatched) that the "int8" kernels cover skips the house's bookkeeping and runs
them straight from cached packed weights (``quantized_lean``), with the same outputs.

They are not subclasses of their float classes: ``isinstance(q, torch.nn.LSTM)`` is False. A
torch.nn.LSTM has float ``Parameter`` weights that code may read, train, flatten or hand to
torch's own op; a quantized module has none of those, so it answers as what it is (as torch's own
``torch.ao.nn.quantized.dynamic.LSTM`` does). ``q.kind`` names the cell; ``q.dequantize()`` gives
the float module back.

Inference only: a call in training mode raises RuntimeError, float64 or half input ValueError.

Example:
    >>> import torch, gatedrnn
    >>> lstm = gatedrnn.LSTM(3, 8, num_layers=2).eval()
    >>> q = gatedrnn.quantize(lstm)
    >>> q, q.weight_ih_l0.dtype
    (QuantizedLSTM(3, 8, num_layers=2), torch.int8)
    >>> x = torch.randn(5, 2, 3)
    >>> (q(x)[0] - lstm(x)[0]).abs().max().item() < 0.05
    True
"""

from __future__ import annotations

import inspect
import re
import types
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..engines import stack
from ..equations.cells import CellOptions
from ..equations.kinds import CELLS, INT8_ENGINES
from ..equations.quantized import QUANTIZED, dequantize_rows, quantize_rows
from . import checks, quantized_lean
from .base import SequenceModule
from .declared import DeclaredRNN
from .lstm_gru_rnn import GRU, LSTM, RNN
from .minimal import MinGRU, MinLSTM
from .slstm import SLSTM

# Engine key -> parameter name (before its _l{k}{_reverse} suffix), every family alike.
PARAMS = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh",
          "w_hr": "weight_hr", "peephole": "weight_peephole",
          **{f"ln_{w}_{p[0]}": f"layer_norm_{w}_{p}" for w in "xhc" for p in ("weight", "bias")}}
QUANTIZED_PARAMS = tuple(PARAMS[k] for k in QUANTIZED)
ENGINES = ("auto", *INT8_ENGINES)  # what a quantized module accepts as ``engine``
# What the fast "int8" engine runs (``kernels.int8_variants``): every cell, heads and variants
# (layer norm, peepholes, zoneout's evaluation form) included.
_FAST_KINDS = ("lstm", "gru", "rnn_tanh", "rnn_relu", "mingru", "minlstm", "slstm")


def is_quantized_param(name: str) -> bool:
    """True for the parameters the scheme stores as int8 (weight_ih…, weight_hh…, weight_hr…)."""
    return name.startswith(QUANTIZED_PARAMS)


def _skeleton(cls: type[nn.Module], config: dict[str, Any]) -> nn.Module:
    """A float module of ``config`` on the meta device: its names, shapes and attributes, no memory,
    and no draw from the global random generators (initialisation on meta draws nothing)."""
    with torch.device("meta"):
        return cls(**config)


class _QuantizedBase(nn.Module):
    """What the quantized modules share: int8 buffers from a float module, and back."""

    _FLOAT: type[nn.Module]  # the float class this one quantizes
    kind: str  # the cell kind ("lstm", "gru", "rnn_tanh", ...)
    # Set from the float module (``_adopt``): its sizes and options, as the float classes name them.
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    dropout: float
    bidirectional: bool
    proj_size: int
    num_heads: int
    engine: str
    last_engine: str | None

    def __init__(self, *args: Any, dtype: Any = torch.qint8, device: Any = None,
                 **kwargs: Any) -> None:
        """The float class's constructor arguments (``dtype`` is the quantized dtype, qint8); the
        buffers start at zero: ``from_float`` or ``load_state_dict`` fills them."""
        if dtype is not torch.qint8:
            raise ValueError(f"{type(self).__name__} holds torch.qint8 weights, got dtype={dtype}")
        engine = kwargs.pop("engine", "auto")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES} for {type(self).__name__}, got "
                             f"{engine!r}")
        super().__init__()
        self._adopt(_skeleton(self._FLOAT, _by_name(self._FLOAT, args, kwargs)), device)
        self.engine = self._config["engine"] = engine

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """The quantized twin of the float module ``mod`` (also torch.ao's ``quantize_dynamic`` hook:
        see ``gatedrnn.quantize``)."""
        if type(mod) is not cls._FLOAT:
            raise TypeError(f"{cls.__name__}.from_float takes a gatedrnn.{cls._FLOAT.__name__}, "
                            f"got {type(mod).__name__}")
        qconfig = getattr(mod, "qconfig", None)
        wdtype = getattr(qconfig.weight(), "dtype", torch.qint8) if qconfig is not None else torch.qint8
        if wdtype != torch.qint8:
            raise ValueError(f"{cls.__name__} quantizes to torch.qint8, the qconfig asks for {wdtype}")
        obj = cls.__new__(cls)
        nn.Module.__init__(obj)
        obj._adopt(mod, None)
        return obj

    def _adopt(self, mod: Any, device: Any) -> None:
        """Take ``mod``'s structure and its weights, quantized (zeros from a meta skeleton)."""
        odd = [n for n, _ in mod.named_parameters() if "." in n or n.endswith("_orig")]
        if odd:  # (a parametrization or pruning keeps the weight under another name)
            raise NotImplementedError(f"{type(mod).__name__} has parametrized or pruned weights "
                                      f"({odd[0]}); remove them (torch.nn.utils.parametrize."
                                      "remove_parametrizations, prune.remove) before quantizing")
        self._config = _config_of(mod)
        self._config["type"] = type(self).__name__
        self._config["dtype"] = "qint8"
        self._config["engine"] = "auto"
        self._repr = re.sub(r", engine='[\w-]+'", "", mod.extra_repr())  # (the float one's engine)
        for key in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                    "bidirectional", "proj_size", "num_heads", "reset_after", "layer_norm",
                    "peephole", "zoneout", "zoneout_cell", "nonlinearity"):
            if hasattr(mod, key):
                setattr(self, key, getattr(mod, key))
        self.bias = bool(self.bias)
        self.engine = "auto"
        self.last_engine: str | None = None
        self.kind = _kind(mod)
        suffixes = [names[0][len("weight_ih"):] for names in getattr(mod, "_all_weights", [[""]])]
        self._suffixes = suffixes
        for name, p in mod.named_parameters():
            # From a meta skeleton: zeros on ``device`` (None: the default device, meta inside a
            # ``torch.device("meta")`` block); from a float module: its weights, on its device.
            meta = p.device.type == "meta"
            dev = device if meta or device is not None else p.device
            if is_quantized_param(name):
                q, s = ((torch.zeros(p.shape, dtype=torch.int8, device=dev),
                         torch.ones(p.shape[:-1], device=dev)) if meta else quantize_rows(p))
                self.register_buffer(name, q.to(dev))
                self.register_buffer(name + "_scale", s.to(dev))
            else:
                value = torch.zeros(p.shape, device=dev) if meta else p.detach().float().clone()
                self.register_buffer(name, value.to(dev))
        self.eval()

    # --- float and back -----------------------------------------------------------------------

    def dequantize(self) -> nn.Module:
        """The float32 module these int8 weights stand for (W = W_q · s per row), in eval mode."""
        cfg = dict(self._config)
        cfg["type"], cfg["dtype"] = self._FLOAT.__name__, "float32"
        with torch.random.fork_rng(devices=[]):  # its initial values are overwritten below
            mod = _build_float(self._FLOAT, cfg)
        state = {}
        for name, t in self.named_buffers():
            if name.endswith("_scale"):
                continue
            state[name] = dequantize_rows(t, getattr(self, name + "_scale")) if t.dtype == torch.int8 else t
        mod.load_state_dict(state)
        return mod.to(next(iter(state.values())).device).eval()

    def get_config(self) -> dict[str, Any]:
        """The float module's ``get_config()`` with ``"type"`` this class and ``"dtype": "qint8"``."""
        return dict(self._config)

    def extra_repr(self) -> str:
        return self._repr + ("" if self.engine == "auto" else f", engine={self.engine!r}")

    # --- calls ----------------------------------------------------------------------------------

    def _check_call(self, data: Any) -> None:
        """Inference on float32 tensors only: a clear error otherwise."""
        name = type(self).__name__
        if self.training:
            raise RuntimeError(f"{name} is inference only (int8 weights have no gradient): call "
                               ".eval() on it (gatedrnn.quantize returns modules in eval mode)")
        if isinstance(data, Tensor) and data.dtype != torch.float32:
            raise ValueError(f"{name} runs float32 input (its products are int8, its gates "
                             f"float32), got {data.dtype}: pass input.float()")

    def _int8_weights(self, sfx: str) -> dict[str, Tensor | None]:
        """The int8 engines' weights dict of one layer and direction (``equations.quantized``)."""
        buffers, w = self._buffers, {}
        for key, name in PARAMS.items():
            # (the buffers dict, not getattr: a step at B = 1 is a few microseconds of numba)
            t = buffers.get(name + sfx)
            if key in QUANTIZED:
                w[key + "_q"] = t
                w[key + "_s"] = None if t is None else buffers[name + sfx + "_scale"]
            elif t is not None or key in ("b_ih", "b_hh", "peephole"):
                w[key] = t
        return w

    def _int8_engine(self, data: Any, return_gates: bool = False) -> str:
        """"int8" (the fast kernels) where they cover this call, else "int8-reference"."""
        if self.engine != "auto":
            return self.engine
        fast = (self.kind in _FAST_KINDS and isinstance(data, Tensor) and data.device.type == "cpu"
                and not return_gates)
        return "int8" if fast and stack.has_engine(self.kind, "int8") else "int8-reference"

    def _with_packed(self, w: dict[str, Tensor | None], sfx: str) -> dict[str, Tensor | None]:
        """``w`` plus the fast engine's packed layout of its int8 weights, packed once and kept
        until a weight changes (its storage or version: load_state_dict, copy_, .to())."""
        if self.last_engine != "int8" or self.kind not in _FAST_KINDS:
            return w
        return self._pack_cached(w, sfx)

    def _packed_weights(self, sfx: str) -> dict[str, Tensor | None]:
        """The fast engine's weights dict of one layer and direction, packed (the lean path's)."""
        return self._pack_cached(self._int8_weights(sfx), sfx)

    def _pack_cached(self, w: dict[str, Tensor | None], sfx: str) -> dict[str, Tensor | None]:
        # numba: imported when the fast engine first runs
        from ..engines.kernels import int8_variants as int8

        tensors = [t for t in w.values() if t is not None]
        if any(t.is_inference() for t in tensors):  # (made under torch.inference_mode: no
            return {**w, **int8.pack(w, self._options())}  # version counter, so no cache)
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        cache = self.__dict__.setdefault("_packed", {})
        hit = cache.get(sfx)
        if hit is None or hit[0] != key:
            hit = cache[sfx] = (key, int8.pack(w, self._options()))
        return {**w, **hit[1]}

    def _options(self) -> CellOptions:
        """The cell options: evaluation's (inference only)."""
        return CellOptions(self.kind, getattr(self, "reset_after", True),
                           getattr(self, "layer_norm", False), 1e-5, getattr(self, "zoneout", 0.0),
                           getattr(self, "zoneout_cell", 0.0), training=False)

    def __getstate__(self) -> dict[str, Any]:
        # the packed weights are a cache of the buffers: neither pickled nor deep-copied
        state = self.__dict__.copy()
        state.pop("_packed", None)
        state.pop("_lean", None)
        return state


def _by_name(cls: type[nn.Module], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The float constructor's arguments, the positional ones named (by its signature)."""
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    return {**dict(zip(params, args)), **kwargs}


def _kind(mod: Any) -> str:
    if isinstance(mod, DeclaredRNN):
        return mod.kind
    mode = getattr(mod, "cell_mode", None) or mod.mode
    return {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}.get(mode, mode)


def _config_of(mod: Any) -> dict[str, Any]:
    if hasattr(mod, "get_config"):
        return mod.get_config()
    # a cell: torch.nn's constructor arguments and gatedrnn's options it accepts
    cfg: dict[str, Any] = {"type": type(mod).__name__, "input_size": mod.input_size,
                           "hidden_size": mod.hidden_size, "bias": mod.bias}
    if type(mod).__name__ == "RNNCell":
        cfg["nonlinearity"] = mod.nonlinearity
    for key in mod._ACCEPTS:
        cfg[key] = getattr(mod, key)
    cfg["engine"] = "auto"
    cfg["dtype"] = str(mod.weight_ih.dtype).removeprefix("torch.")
    return cfg


def _build_float(cls: type[nn.Module], config: dict[str, Any]) -> nn.Module:
    cfg = {k: v for k, v in config.items() if k != "type"}
    return checks.from_config({"type": cls.__name__, **cfg}, {cls.__name__: cls})


class _TorchView:
    """What torch.nn's argument checks (``checks.module_args``) read of an nn.RNNBase: its sizes,
    torch's check methods, and a float32 weight for the dtype and device checks."""

    def __init__(self, q: Any, torch_cls: type) -> None:
        self.__dict__.update({k: getattr(q, k, None) for k in ("input_size", "hidden_size", "num_layers",
                                                               "batch_first", "bidirectional")})
        self.proj_size = getattr(q, "proj_size", 0)
        self.mode = {"lstm": "LSTM", "gru": "GRU"}.get(q.kind, q.kind.upper())
        self.weight_ih_l0 = self.weight_ih = q.weight_ih_l0_scale if hasattr(q, "weight_ih_l0_scale") \
            else q.weight_ih_scale
        self._flat_weights = [self.weight_ih_l0]
        self._torch_cls = torch_cls

    def __getattr__(self, name: str) -> Any:
        return types.MethodType(getattr(self._torch_cls, name), self)


class _QuantizedSequence(_QuantizedBase, SequenceModule):
    """A quantized LSTM/GRU/RNN/MinGRU/MinLSTM/SLSTM: the house forward on int8 engines."""

    def forward(self, input: Tensor | PackedSequence, hx: Any = None, return_gates: bool = False):
        """As the float module's forward (shapes, state, PackedSequence, ``return_gates``)."""
        # A plain inference call straight to the int8 kernel (quantized_lean.py); None otherwise.
        result = quantized_lean.module_call(self, input, hx, return_gates)
        if result is not None:
            return result
        return SequenceModule.forward(self, input, hx, return_gates)

    def _engine(self, input: Any, return_gates: bool) -> str:
        data = input.data if isinstance(input, PackedSequence) else input
        self._check_call(data)
        return self._int8_engine(data, return_gates)

    def _weights(self, k: int) -> dict[str, Tensor | None]:  # type: ignore[override]
        return self._with_packed(self._int8_weights(self._suffixes[k]), self._suffixes[k])

    def _call_args(self, input: Any, hx: Any) -> checks.ModuleArgs:
        return checks.module_args(_TorchView(self, self._FLOAT._TORCH), input, hx)  # type: ignore[attr-defined]


class QuantizedLSTM(_QuantizedSequence):
    """``gatedrnn.LSTM`` with int8 weights (``proj_size`` and every option included); see the module
    docstring and ``gatedrnn.quantize``. Same calls and outputs as the float module."""

    _FLOAT = LSTM


class QuantizedGRU(_QuantizedSequence):
    """``gatedrnn.GRU`` with int8 weights, both forms (``reset_after``); see ``QuantizedLSTM``."""

    _FLOAT = GRU


class QuantizedRNN(_QuantizedSequence):
    """``gatedrnn.RNN`` (tanh or relu) with int8 weights; see ``QuantizedLSTM``."""

    _FLOAT = RNN


class _QuantizedDeclared(_QuantizedSequence):
    """MinGRU, MinLSTM, SLSTM quantized: their own (torch.nn-style) argument checks."""

    _call_args = DeclaredRNN._call_args  # type: ignore[assignment]
    _initial_state = DeclaredRNN._initial_state
    _state_parts = DeclaredRNN._state_parts

    def _cell(self) -> Any:
        return CELLS[self.kind]

    def _engine(self, input: Any, return_gates: bool) -> str:
        packed = isinstance(input, PackedSequence)
        data = input.data if packed else input
        self._check_call(data)
        checks.check_input(type(self).__name__, data, self.input_size, torch.float32, packed=packed)
        return self._int8_engine(data, return_gates)


class QuantizedMinGRU(_QuantizedDeclared):
    """``gatedrnn.MinGRU`` with int8 weights; see ``QuantizedLSTM``."""

    _FLOAT = MinGRU


class QuantizedMinLSTM(_QuantizedDeclared):
    """``gatedrnn.MinLSTM`` with int8 weights; see ``QuantizedLSTM``."""

    _FLOAT = MinLSTM


class QuantizedSLSTM(_QuantizedDeclared):
    """``gatedrnn.SLSTM`` with int8 weights (head-wise included); see ``QuantizedLSTM``."""

    _FLOAT = SLSTM
