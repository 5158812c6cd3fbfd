"""``gatedrnn.quantize(model)`` and ``gatedrnn.dequantize(model)``: whole models to int8 and back.

``quantize`` returns a copy of ``model`` (in evaluation mode) in which each recurrent module is
replaced by its int8 twin (``gatedrnn.modules.quantized``), and, with ``linear=True``, each
``nn.Linear`` by a ``QuantizedLinear``. torch.nn's own LSTM/GRU/RNN and cells are converted too
when their classes are in ``modules``: first to gatedrnn's class with the same weights (what
``gatedrnn.interop.from_torch`` does), then to int8.

Importing gatedrnn also registers the quantized classes in torch.ao's default dynamic
quantization mappings, so ``torch.ao.quantization.quantize_dynamic(model, {gatedrnn.LSTM})``
converts gatedrnn's modules to the same classes. torch matches its spec by exact type: with
``{torch.nn.LSTM}`` in the spec it skips gatedrnn.LSTM (a subclass), and it never replaces the
model itself, only modules inside it.

Example:
    >>> import torch, gatedrnn
    >>> net = torch.nn.Sequential(gatedrnn.GRU(4, 8, batch_first=True))
    >>> q = gatedrnn.quantize(net)
    >>> type(q[0]).__name__, type(gatedrnn.dequantize(q)[0]).__name__
    ('QuantizedGRU', 'GRU')
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.ao.quantization import quantization_mappings

from ..equations.quantized import dequantize_rows, quantize_rows
from . import checks
from .lstm_gru_rnn import from_config as float_from_config
from .patch import OURS, TORCH_CLASSES
from .quantized import (
    QuantizedGRU,
    QuantizedLSTM,
    QuantizedMinGRU,
    QuantizedMinLSTM,
    QuantizedRNN,
    QuantizedSLSTM,
    _QuantizedBase,
    is_quantized_param,
)
from .quantized_cells import QuantizedGRUCell, QuantizedLSTMCell, QuantizedRNNCell

# float class -> quantized class
QUANTIZED_CLASSES: dict[type[nn.Module], type[_QuantizedBase]] = {
    c._FLOAT: c for c in (QuantizedLSTM, QuantizedGRU, QuantizedRNN, QuantizedMinGRU,
                          QuantizedMinLSTM, QuantizedSLSTM, QuantizedLSTMCell, QuantizedGRUCell,
                          QuantizedRNNCell)}


class QuantizedLinear(nn.Module):
    """``nn.Linear`` with int8 weights, per output row, and input quantized per row at each call::

        y[b, r] = Σ_c x_q[b, c] · W_q[r, c] · s_x[b] · s_W[r] + bias[r]     (exact integer sums)

    Shapes as nn.Linear: input (*, in_features) float32, output (*, out_features). Inference only.
    """

    weight: Tensor  # int8 (out_features, in_features)
    weight_scale: Tensor  # float32 (out_features,)
    bias: Tensor | None  # float32 (out_features,)

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8,
                                                   device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, device=device))
        self.register_buffer("bias", torch.zeros(out_features, device=device) if bias else None)

    @classmethod
    def from_float(cls, mod: nn.Linear) -> QuantizedLinear:
        q = cls(mod.in_features, mod.out_features, mod.bias is not None, mod.weight.device)
        q.weight, q.weight_scale = quantize_rows(mod.weight)
        if mod.bias is not None:
            q.bias = mod.bias.detach().float().clone()
        return q.eval()

    def forward(self, input: Tensor) -> Tensor:
        if self.training:
            raise RuntimeError("QuantizedLinear is inference only (int8 weights have no "
                               "gradient): call .eval() on it")
        if input.dtype != torch.float32:
            raise ValueError(f"QuantizedLinear runs float32 input, got {input.dtype}: pass "
                             "input.float()")
        x_q, x_s = quantize_rows(input)
        # float64 holds the integer sums exactly (|acc| ≤ in_features · 127² ≪ 2⁵³)
        acc = (x_q.double() @ self.weight.double().T).float()  # (*, out)
        y = acc * x_s.unsqueeze(-1) * self.weight_scale
        return y if self.bias is None else y + self.bias

    def dequantize(self) -> nn.Linear:
        """The float32 nn.Linear these int8 weights stand for."""
        with torch.random.fork_rng(devices=[]):
            lin = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                            device=self.weight.device)
        with torch.no_grad():
            lin.weight.copy_(dequantize_rows(self.weight, self.weight_scale))
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin.eval()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


def _from_torch(mod: nn.Module) -> nn.Module:
    """gatedrnn's twin of one of torch.nn's recurrent modules or cells, with its weights."""
    name = next(n for n, c in TORCH_CLASSES.items() if type(mod) is c)
    kw: dict[str, Any] = {k: getattr(mod, k) for k in ("input_size", "hidden_size", "bias")}
    if not name.endswith("Cell"):
        kw.update({k: getattr(mod, k) for k in ("num_layers", "batch_first", "dropout",
                                                "bidirectional")})
        if name == "LSTM":
            kw["proj_size"] = mod.proj_size
    if name.startswith("RNN"):
        kw["nonlinearity"] = mod.nonlinearity
    with torch.random.fork_rng(devices=[]):  # its initial values are overwritten next
        twin = OURS[name](**kw, device=mod.weight_ih_l0.device if hasattr(mod, "weight_ih_l0")
                          else mod.weight_ih.device)
    twin.load_state_dict(mod.state_dict())
    return twin.eval()


def quantize(model: nn.Module, dtype: torch.dtype = torch.qint8, *,
             modules: Iterable[type] | None = None, linear: bool = False,
             inplace: bool = False) -> nn.Module:
    """``model`` with int8 recurrent modules (and linear layers when asked), in evaluation mode.

    Args:
        model: any module: a gatedrnn module itself, or a model containing them.
        dtype: torch.qint8 (the only one).
        modules: the classes to quantize, by exact type; None means every gatedrnn recurrent
            class (LSTM, GRU, RNN, MinGRU, MinLSTM, SLSTM, LSTMCell, GRUCell, RNNCell). Put
            torch.nn.LSTM (GRU, RNN, the cells) in it to convert torch.nn's modules too.
        linear: also replace each ``nn.Linear`` by a ``QuantizedLinear``.
        inplace: convert the modules inside ``model`` in place instead of in a copy (a model
            that is itself a recurrent module is replaced: use what this returns).

    Returns the quantized copy (or ``model``). Subclasses of the recurrent classes are left in
    float32 with a warning: their forward may not be the one the int8 twin runs.

    Example:
        >>> import torch, gatedrnn
        >>> q = gatedrnn.quantize(torch.nn.LSTM(3, 4), modules={torch.nn.LSTM})
        >>> q, q.weight_hh_l0.dtype
        (QuantizedLSTM(3, 4), torch.int8)
    """
    if dtype is not torch.qint8:
        raise ValueError(f"gatedrnn.quantize supports dtype=torch.qint8 only, got {dtype}")
    wanted = set(QUANTIZED_CLASSES) if modules is None else set(modules)
    torch_ones = {c for c in wanted if c in TORCH_CLASSES.values()}
    unknown = wanted - set(QUANTIZED_CLASSES) - torch_ones
    if unknown:
        names = sorted(getattr(c, "__name__", str(c)) for c in unknown)
        raise ValueError(f"gatedrnn.quantize cannot quantize {names}; it takes gatedrnn's recurrent "
                         "classes and torch.nn's LSTM, GRU, RNN and cells (linear=True for nn.Linear)")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()

    def convert(mod: nn.Module) -> nn.Module:
        cls = type(mod)
        if cls in torch_ones:
            twin = _from_torch(mod)
            return QUANTIZED_CLASSES[type(twin)].from_float(twin)
        if cls in wanted and cls in QUANTIZED_CLASSES:
            return QUANTIZED_CLASSES[cls].from_float(mod)
        if linear and isinstance(mod, nn.Linear) and cls is nn.Linear:
            return QuantizedLinear.from_float(mod)
        for base in QUANTIZED_CLASSES:
            if isinstance(mod, base) and base in wanted and cls not in QUANTIZED_CLASSES:
                warnings.warn(f"gatedrnn.quantize: {cls.__name__} subclasses gatedrnn.{base.__name__} "
                              "and is left in float32 (its forward may differ)", UserWarning,
                              stacklevel=3)
                break
        for name, child in list(mod.named_children()):
            setattr(mod, name, convert(child))
        return mod

    return convert(model)


def dequantize(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """``model`` with every quantized module replaced by its float32 module (W = W_q · s per row).

    Example:
        >>> import gatedrnn
        >>> gatedrnn.dequantize(gatedrnn.quantize(gatedrnn.LSTM(3, 4)))
        LSTM(3, 4)
    """
    if not inplace:
        model = copy.deepcopy(model)

    def convert(mod: nn.Module) -> nn.Module:
        if isinstance(mod, (_QuantizedBase, QuantizedLinear)):
            return mod.dequantize()
        for name, child in list(mod.named_children()):
            setattr(mod, name, convert(child))
        return mod

    return convert(model)


ALL_CLASSES: tuple[type[nn.Module], ...] = (*QUANTIZED_CLASSES.values(), QuantizedLinear)

# torch.ao.quantization.quantize_dynamic(model, {gatedrnn.LSTM, ...}) looks the classes up here.
for _float, _int8 in QUANTIZED_CLASSES.items():
    quantization_mappings.DEFAULT_DYNAMIC_QUANT_MODULE_MAPPINGS[_float] = _int8
# torch.load(weights_only=True) admits a pickled module whose classes are listed: added as
# gatedrnn's float classes are (``patch.SAFE_CLASSES``), as (class, path) pairs, so that a program's
# own ``with safe_globals([...])`` block does not take them away when it ends.
torch.serialization.add_safe_globals([(cls, f"{cls.__module__}.{cls.__qualname__}")
                                      for cls in ALL_CLASSES])


def float_form(tensors: dict[str, Tensor], config: dict[str, Any]
               ) -> tuple[dict[str, Tensor], dict[str, Any], str | None]:
    """A quantized module's saved tensors and config as its float module's (for the file checks of
    ``gatedrnn.interop.io``): the scales set aside, the type and dtype the float ones; and why
    the scales do not fit the int8 weights (one float32 scale per row of each), or None. A float
    module's are returned as they are."""
    if not str(config["type"]).startswith("Quantized"):
        return tensors, config, None
    floats = {n: t for n, t in tensors.items() if not n.endswith("_scale")}
    cfg = dict(config, type=str(config["type"]).removeprefix("Quantized"), dtype="float32")
    for name in sorted(set(tensors) - set(floats)):
        weight = tensors.get(name[: -len("_scale")])
        if weight is None or not is_quantized_param(name) or weight.dtype != torch.int8:
            return floats, cfg, f"tensor {name!r} scales no int8 weight"
        if tuple(tensors[name].shape) != tuple(weight.shape[:-1]) or tensors[name].dtype != torch.float32:
            return floats, cfg, f"tensor {name!r} is not one float32 scale per row of its weight"
    missing = [n for n, t in floats.items() if is_quantized_param(n) and n + "_scale" not in tensors]
    if missing:
        return floats, cfg, f"int8 weights without scales: {missing}"
    return floats, cfg, None


def from_config(config: dict[str, Any]) -> nn.Module:
    """``gatedrnn.from_config``, and a quantized module (int8 buffers at zero) from its
    ``get_config()``."""
    if not str(config.get("type")).startswith("Quantized"):
        return float_from_config(config)
    return checks.from_config(config, {c.__name__: c for c in QUANTIZED_CLASSES.values()})
