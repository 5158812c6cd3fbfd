"""The torch.nn subclasses' machinery: ``RNNBase``, mixed into ``torch.nn.LSTM``, ``GRU`` and
``RNN`` (the classes are in ``lstm_gru_rnn``).

torch's constructor validates and registers torch's parameters, and torch's machinery
(``_flat_weights``, ``flatten_parameters``, ``_apply``, pickling, ``all_weights``) is torch's own.
This mixin adds gatedrnn's keyword-only options (engine, the variants, init), the head-wise
recurrent weight, the variant parameters, and the hooks through which the shared ``forward``
(``gatedrnn.modules.base``) runs them: torch.nn's argument checks (``checks.module_args``), the
engine choice of ``gatedrnn.engines.dispatch``, and torch's own forward as the "native" engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from ..engines import dispatch, one_step, stack
from ..engines.triton import check as triton_check
from ..equations.cells import GATES, CellOptions
from ..equations.kinds import CELLS, INT8_ENGINES
from . import checks, init
from .base import SequenceModule
from .scripting import VARIANTS, untorched

_MODE = one_step.MODE

# gatedrnn's keyword-only options and their defaults; each class accepts the ones it computes.
OPTIONS: dict[str, Any] = {
    "engine": "auto", "reset_after": True, "layer_norm": False, "peephole": False,
    "recurrent_dropout": 0.0, "zoneout": 0.0, "zoneout_cell": 0.0, "weight_drop": 0.0,
    "forget_bias": None, "init": "torch", "chrono_max_len": None, "num_heads": 1,
}
_OWNER = {"reset_after": "GRU", "peephole": "LSTM", "zoneout_cell": "LSTM"}


def engines_of(torch_name: str) -> tuple[str, ...]:
    """The engines a torch.nn subclass (a module or a cell) accepts: "auto", its cell's declared
    engines, "native". A cell is one step: the engines that run a whole sequence per call (the
    Triton GPU engine) have nothing to offer it."""
    cell = torch_name.endswith("Cell")
    torch_name = torch_name.removesuffix("Cell")
    mode = "rnn_tanh" if torch_name == "RNN" else torch_name.lower()
    # The int8 engines run quantized modules only (``gatedrnn.modules.quantized``).
    declared = [e for e in CELLS[mode].engines
                if not (cell and e == "triton") and e not in INT8_ENGINES]
    return ("auto", *declared, "native")


def take_options(obj: Any, kwargs: dict[str, Any], accepted: tuple[str, ...], gru: bool) -> None:
    """Pop gatedrnn's options out of ``kwargs`` (the rest is torch's), check them and store them
    on ``obj`` (every option, defaults for the ones this class does not take)."""
    name = type(obj).__name__
    for key in OPTIONS:
        if key in kwargs and key not in accepted:
            owner = _OWNER.get(key, "LSTM and GRU")
            raise TypeError(f"{name} got an unexpected keyword argument '{key}' ({owner} only)")
    given = {k: kwargs.pop(k, v) for k, v in OPTIONS.items()}
    obj.__dict__.update(checks.check_options(given, engines_of(type(obj)._TORCH.__name__), gru))
    obj.__dict__["last_engine"] = None
    obj.__dict__["_gated_ready"] = False  # torch's constructor calls reset_parameters: skip that


def option_defaults(cls: type) -> None:
    """Every option and ``last_engine`` at its default as a class attribute of ``cls``, read where
    an instance has none: a module torch.nn pickled, loaded as gatedrnn's class under
    ``gatedrnn.patch_torch()``, or one pickled before an option existed. (So torch's own
    ``__setstate__`` stays the one that runs.)"""
    for key, value in {**OPTIONS, "last_engine": None}.items():
        setattr(cls, key, value)


def refuse_native(obj: Any, return_gates: bool = False) -> None:
    """engine='native' with an option torch's ops cannot compute: say which, and who can."""
    on = untorched(obj, return_gates)
    if on:
        raise ValueError(f"{type(obj).__name__}: engine='native' runs torch's own ops, which have "
                         f"nothing for {', '.join(on)}; use engine='auto', 'fused' or 'reference'")


def explicit_engine(engine: str, x: Tensor, checked: bool = True) -> str:
    """engine='fused' on a device/dtype it cannot run: a clear error; half precision runs in
    float32 through it. engine='triton' off CUDA (without Triton's interpreter): a clear error.

    ``checked=False`` before torch.nn's argument checks have run: a device the fused engine cannot
    run on then gives "reference", and the caller asks again with the checked input, so that
    torch.nn's own exception (a 4-D input's ValueError, say) comes before the device's."""
    if engine == "triton":
        triton_check(x)
        return engine
    if engine != "fused" or dispatch.dtype_key(x.dtype) == "other":
        return "reference" if engine == "fused" else engine  # (torch.nn's dtype error follows)
    if x.device.type != "cpu" and not checked:
        return "reference"
    if x.device.type != "cpu":
        raise RuntimeError(f"engine='fused' runs on CPU floating tensors only, got {x.dtype} on "
                           f"{x.device}; use engine='auto', 'native' or 'reference'")
    if not stack.fused_available():
        raise RuntimeError("engine='fused' needs numba, which does not import here")
    return "fused-float32" if dispatch.dtype_key(x.dtype) in dispatch.HALF else "fused"


# The type checker sees the mixin as the torch.nn.RNNBase it is mixed into; at run time it derives
# from nothing but the house (see RNNBase).
if TYPE_CHECKING:
    class _TorchRNNBase(SequenceModule, nn.RNNBase):  # type: ignore[misc]
        pass
else:
    _TorchRNNBase = SequenceModule


class RNNBase(_TorchRNNBase):
    """gatedrnn's behaviour, mixed into torch.nn.LSTM / GRU / RNN (``class LSTM(RNNBase, nn.LSTM)``).

    It derives from nothing, so a third-party mixin that derives from ``torch.nn.RNNBase`` can sit
    in front of it (``class X(Mixin, gatedrnn.LSTM)``) and the cooperative ``__init__`` chain still
    runs through torch's constructor.
    """

    _TORCH: type[nn.RNNBase]  # the torch.nn class: its forward is the native engine
    _ACCEPTS: tuple[str, ...] = tuple(OPTIONS)
    _FAST_PATHS = True
    _EAGER_UNDER_DYNAMO = True
    # (a class default too: modules pickled before the option have none). Not annotated: TorchScript
    # reads the class annotations as the attributes' types, and a string is none to it.
    num_heads = 1
    if TYPE_CHECKING:  # set by take_options (OPTIONS) and by torch's constructors
        engine: str
        reset_after: bool
        layer_norm: bool
        peephole: bool
        recurrent_dropout: float
        zoneout: float
        zoneout_cell: float
        weight_drop: float
        forget_bias: float | None
        init: str
        chrono_max_len: int | None
        last_engine: str | None
        nonlinearity: str  # torch.nn.RNN's
        weight_ih_l0: Tensor

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # The classes' signatures list what each takes; this turns Python's bare "unexpected
        # keyword argument" for an option of another class into one that says whose it is, and
        # proj_size on a GRU or RNN into torch.nn's ValueError.
        name = cls._TORCH.__name__
        for key in kwargs:
            if key in OPTIONS and key not in cls._ACCEPTS:
                owner = _OWNER.get(key, "LSTM and GRU")
                raise TypeError(f"{name} got an unexpected keyword argument '{key}' ({owner} only)")
        if "proj_size" in kwargs and name != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if name == "RNN":  # torch.nn.RNN checks it first, before a missing argument
            nonlinearity = args[3] if len(args) > 3 else kwargs.get("nonlinearity", "tanh")
            if nonlinearity not in ("tanh", "relu"):
                raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                                 "'relu'.")
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        take_options(self, kwargs, self._ACCEPTS, gru=self._TORCH.__name__ == "GRU")
        super().__init__(*args, **kwargs)  # torch's checks, parameters, flat weights
        # After torch's constructor, so that torch's own exception wins where it refuses an
        # argument; then what its op would refuse at the first call (bidirectional="no",
        # num_layers=True), and the sizes torch took (LSTM(3, True)) stored as plain ints.
        checks.normalise_module(self)
        self._register_heads()
        self._register_variants()
        self.__dict__["_gated_ready"] = True
        self.reset_parameters()

    # --- parameters -------------------------------------------------------------------------

    def _register_heads(self) -> None:
        """With num_heads = nh > 1, each weight_hh becomes the head-wise (nh, G·d, d), d = H / nh
        (``cells.headwise_product``), in the place of torch's (G·H, H): same name, same position
        in the parameter order, and torch's ``_flat_weights`` kept in step."""
        nh, H = self.num_heads, self.hidden_size
        if nh == 1:
            return
        name = type(self).__name__
        if H % nh:
            raise ValueError(f"hidden_size ({H}) must be divisible by num_heads ({nh})")
        if self.proj_size:
            raise ValueError(f"{name}: num_heads={nh} with proj_size={self.proj_size} is not "
                             "defined (the heads split h, which the projection mixes); use one")
        G = GATES[_MODE[self.mode]]
        for names in self._all_weights:
            old = getattr(self, names[1])  # weight_hh_l{k}{_reverse}
            setattr(self, names[1], nn.Parameter(old.new_empty(nh, G * H // nh, H // nh)))
        self._init_flat_weights()  # torch's weak references to the new parameters

    def flatten_parameters(self) -> None:
        """torch.nn's (cuDNN's packed weights); nothing with num_heads > 1, whose head-wise W_hh
        has no cuDNN layout (and no engine reads a packed buffer then)."""
        if self.__dict__.get("num_heads", 1) == 1:
            super().flatten_parameters()

    def _register_variants(self) -> None:
        """Variant parameters, after torch.nn's so that the default init draws torch's numbers."""
        kw: dict[str, Any] = {"device": self.weight_ih_l0.device, "dtype": self.weight_ih_l0.dtype}
        G, H = GATES[_MODE[self.mode]], self.hidden_size
        for names in self._all_weights:
            sfx = names[0][len("weight_ih"):]
            if self.layer_norm:
                for which, size in (("x", G * H), ("h", G * H), ("c", H)):
                    if which == "c" and self.mode != "LSTM":
                        continue
                    for part in ("weight", "bias"):
                        self.register_parameter(f"layer_norm_{which}_{part}{sfx}",
                                                nn.Parameter(torch.empty(size, **kw)))
            if self.peephole:
                self.register_parameter(f"weight_peephole{sfx}", nn.Parameter(torch.empty(3, H, **kw)))

    def reset_parameters(self) -> None:
        """torch.nn's default init, then the variant parameters, then ``init``/``forget_bias``."""
        if not self.__dict__.get("_gated_ready", True):  # (unpickled: ready)
            return  # called from torch's constructor, before the variants exist: draw once, later
        H = self.hidden_size
        init.default_uniform_(cast("list[Tensor]", self._flat_weights), H)  # all set by now
        init.variant_defaults_(list(self.named_parameters()), H)
        for names in self._all_weights:
            p = {n.split("_l")[0]: getattr(self, n) for n in names}
            biases = [p["bias_ih"], p["bias_hh"]] if self.bias else []
            init.apply_scheme_(_MODE[self.mode], p["weight_ih"], p["weight_hh"], biases, H,
                               self.init, self.forget_bias, self.chrono_max_len)

    def _weights(self, k: int) -> dict[str, Tensor | None]:
        """The parameter dict of layer·D + direction k, in the engines' names."""
        sfx = self._all_weights[k][0][len("weight_ih"):]
        # getattr, not self._parameters: pruning and parametrizations replace a parameter by a
        # plain attribute or a property of the same name.
        get = lambda n: getattr(self, n + sfx, None)  # noqa: E731 - a local shorthand
        w = {"w_ih": get("weight_ih"), "w_hh": get("weight_hh"), "b_ih": get("bias_ih"),
             "b_hh": get("bias_hh"), "w_hr": get("weight_hr"), "peephole": get("weight_peephole")}
        if self.weight_drop > 0 and self.training:
            # DropConnect on W_hh (Merity et al. 2017): a fresh mask per forward pass.
            w["w_hh"] = F.dropout(cast(Tensor, w["w_hh"]), self.weight_drop, training=True)
        if self.layer_norm:
            for which in ("x", "h", "c"):
                w[f"ln_{which}_w"] = get(f"layer_norm_{which}_weight")
                w[f"ln_{which}_b"] = get(f"layer_norm_{which}_bias")
        return w

    # --- forward ----------------------------------------------------------------------------

    def _options(self) -> CellOptions:
        return CellOptions(_MODE[self.mode], self.reset_after, self.layer_norm, 1e-5,
                           self.zoneout, self.zoneout_cell, self.training)

    def _torch_op(self) -> bool:
        return (self.reset_after and self.num_heads == 1
                and not any(getattr(self, k) for k in VARIANTS))

    def _untorched(self, return_gates: bool) -> list[str]:
        return untorched(self, return_gates)

    def _engine(self, input: Any, return_gates: bool) -> str:
        """The engine for this call (see ``gatedrnn.engines.dispatch``)."""
        if self.engine == "native":
            refuse_native(self, return_gates)
            return "native"
        data = input.data if isinstance(input, PackedSequence) else input
        if not isinstance(data, Tensor) or self.engine == "reference":
            return "reference"  # (a non-tensor: the reference path raises torch.nn's error)
        if torch._C._get_tracing_state() is not None:
            return "reference"  # a TorchScript trace records torch ops; numba's are opaque to it
        if self.engine != "auto":
            return explicit_engine(self.engine, data, checked=False)
        torch_op = self._torch_op() and not return_gates
        training = torch.is_grad_enabled() and (self.weight_ih_l0.requires_grad or data.requires_grad)
        dev = data.device.type
        # (torch 2.13's oneDNN LSTM cannot train under float16 autocast: there, the float32 math,
        # whatever the table says.)
        autocast = torch_op and checks.autocast_on(dev)
        no_native = (autocast and self.mode == "LSTM" and training
                     and torch.get_autocast_dtype(dev) == torch.float16)
        if autocast and not no_native:
            # torch's op under autocast runs its products in the autocast dtype (and returns it,
            # for the LSTM and the RNN): the drop-in gives torch.nn's numbers and dtypes.
            return "native"
        packed = isinstance(input, PackedSequence)
        B = (int(input.batch_sizes[0]) if packed else data.shape[0 if self.batch_first else 1]
             if data.dim() == 3 else 1)
        kind = "RNN" if self.mode.startswith("RNN") else self.mode
        T = (len(input.batch_sizes) if packed else data.shape[1 if self.batch_first else 0]
             if data.dim() == 3 else data.shape[0] if data.dim() else 1)
        engine = dispatch.choose(data.device.type, kind, dispatch.dtype_key(data.dtype),
                                 torch_op=torch_op, simple=not (packed or self.proj_size),
                                 training=training, batch=B, proj=bool(self.proj_size),
                                 triton=stack.triton_ready(self.mode.lower(), data),
                                 work=T * B * self.hidden_size,  # (a plan's borders need it)
                                 hidden=self.hidden_size)
        if no_native and engine == "native":
            engine = "fused"
        if engine.startswith("fused") and (B == 0 or not stack.fused_available()):
            engine = "native" if torch_op and not no_native else "reference"
        return engine

    def _native(self, input: Any, hx: Any) -> Any:
        if self.mode == "LSTM" and hx is not None and isinstance(input, PackedSequence):
            checks.packed_lstm_state(self, input.data, input.batch_sizes, hx,
                                     input.sorted_indices)
        return self._TORCH.forward(self, input, hx)

    def _call_args(self, input: Any, hx: Any) -> checks.ModuleArgs:
        args = checks.module_args(self, input, hx)
        if self.engine == "fused":  # torch.nn's checks passed: now the fused engine's device
            explicit_engine(self.engine, args.x)
        return args

    # --- description ------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as JSON-serialisable values (see ``gatedrnn.from_config``)."""
        cfg: dict[str, Any] = {"type": self._TORCH.__name__}
        for key in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                    "bidirectional", "engine", "layer_norm", "recurrent_dropout", "zoneout",
                    "weight_drop", "forget_bias", "init", "chrono_max_len", "num_heads"):
            cfg[key] = getattr(self, key)
        if self.mode == "LSTM":
            cfg.update(proj_size=self.proj_size, peephole=self.peephole,
                       zoneout_cell=self.zoneout_cell)
        elif self.mode == "GRU":
            cfg["reset_after"] = self.reset_after
        else:
            cfg["nonlinearity"] = self.nonlinearity
            for key in ("layer_norm", "recurrent_dropout", "zoneout", "weight_drop", "forget_bias",
                        "init", "chrono_max_len", "num_heads"):
                del cfg[key]
        cfg["dtype"] = str(self.weight_ih_l0.dtype).removeprefix("torch.")
        return cfg

    def extra_repr(self) -> str:
        """torch.nn's description, then gatedrnn's options that are not at their defaults."""
        s = super().extra_repr()
        cfg = self.get_config()
        if cfg.get("nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={cfg['nonlinearity']!r}"
        for key, default in OPTIONS.items():
            if key in cfg and cfg[key] != default:
                s += f", {key}={cfg[key]!r}"
        return s


option_defaults(RNNBase)
