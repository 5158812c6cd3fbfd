"""Drop-in ``LSTM``, ``GRU`` and ``RNN``: torch.nn's classes, gatedrnn's engines and variants.

``gatedrnn.LSTM`` is a ``torch.nn.LSTM`` (GRU and RNN likewise): torch's constructor validates
and registers torch's parameters, and torch's machinery (``_flat_weights``, ``flatten_parameters``,
``_apply``, pickling, ``all_weights``) is torch's own. gatedrnn adds keyword-only options (engine,
the variants, init) and the engines that run them.

Shape legend (as torch.nn): N batch, L sequence length, D = 2 if bidirectional else 1, H_in input
size, H_cell hidden size, H_out = proj_size or hidden_size.
    input  (L, N, H_in), (N, L, H_in) with batch_first, (L, H_in) unbatched, or a PackedSequence
    h_0    (D·num_layers, N, H_out)       c_0 (LSTM) (D·num_layers, N, H_cell)
    output (L, N, D·H_out) or the PackedSequence form of it
Parameter names, shapes, gate order and default initialisation are torch.nn's, so ``state_dict``s
load both ways (with ``num_heads`` > 1, weight_hh is head-wise: see ``LSTM``). The equations are
in ``gatedrnn.equations.cells``.

Engines (``engine=``): "native" is torch.nn's own forward (its ``_VF`` ops: cuDNN, oneDNN), bit for
bit torch.nn; "fused" the numba CPU kernels (bfloat16/float16 computed in float32); "reference" the
eager loop over ``gatedrnn.equations.cells``; "auto" (default) picks per call from the measured table in
``gatedrnn.engines.dispatch``. After every call ``module.last_engine`` names the engine that ran ("native",
"fused", "fused-float32" or "reference"), and the logger ``"gatedrnn"`` writes a DEBUG line when
that choice changes.

Example:
    >>> import torch, gatedrnn
    >>> lstm = gatedrnn.LSTM(10, 20, num_layers=2)
    >>> isinstance(lstm, torch.nn.LSTM)
    True
    >>> ref = torch.nn.LSTM(10, 20, num_layers=2)
    >>> _ = ref.load_state_dict(lstm.state_dict())
    >>> x = torch.randn(5, 3, 10)
    >>> torch.allclose(lstm(x)[0], ref(x)[0], atol=1e-5)
    True
    >>> lstm.last_engine in ("native", "fused")
    True
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from ..engines import dispatch, lean_path, one_step, stack
from ..equations.cells import GATES, CellOptions
from . import checks, init

_MODE = one_step.MODE
_LOG = logging.getLogger("gatedrnn")

# gatedrnn's keyword-only options and their defaults; each class accepts the ones it computes.
OPTIONS: dict[str, Any] = {
    "engine": "auto", "reset_after": True, "layer_norm": False, "peephole": False,
    "recurrent_dropout": 0.0, "zoneout": 0.0, "zoneout_cell": 0.0, "weight_drop": 0.0,
    "forget_bias": None, "init": "torch", "chrono_max_len": None, "num_heads": 1,
}
_OWNER = {"reset_after": "GRU", "peephole": "LSTM", "zoneout_cell": "LSTM"}
# The options torch has no op for; forget_bias and init only change initial values.
VARIANTS = ("layer_norm", "peephole", "recurrent_dropout", "zoneout", "zoneout_cell",
            "weight_drop")


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


def take_options(obj: Any, kwargs: dict[str, Any], accepted: tuple[str, ...], gru: bool) -> None:
    """Pop gatedrnn's options out of ``kwargs`` (the rest is torch's), check them and store them
    on ``obj`` (every option, defaults for the ones this class does not take)."""
    name = type(obj).__name__
    for key in OPTIONS:
        if key in kwargs and key not in accepted:
            owner = _OWNER.get(key, "LSTM and GRU")
            raise TypeError(f"{name} got an unexpected keyword argument '{key}' ({owner} only)")
    given = {k: kwargs.pop(k, v) for k, v in OPTIONS.items()}
    obj.__dict__.update(checks.check_options(given, dispatch.ENGINES, gru))
    obj.__dict__["last_engine"] = None
    obj.__dict__["_gated_ready"] = False  # torch's constructor calls reset_parameters: skip that


def record_engine(obj: Any, engine: str) -> str:
    """Set ``last_engine``; log when the choice changes."""
    if obj.__dict__.get("last_engine") != engine:
        _LOG.debug("%s: engine %s (was %s)", type(obj).__name__, engine,
                   obj.__dict__.get("last_engine"))
        obj.__dict__["last_engine"] = engine
    return engine


def refuse_native(obj: Any, return_gates: bool = False) -> None:
    """engine='native' with an option torch's ops cannot compute: say which, and who can."""
    on = [f"{k}={getattr(obj, k)!r}" for k in VARIANTS if getattr(obj, k)]
    if getattr(obj, "num_heads", 1) > 1:
        on.append(f"num_heads={obj.num_heads}")
    if not obj.reset_after:
        on.append("reset_after=False")
    if return_gates:
        on.append("return_gates=True")
    if on:
        raise ValueError(f"{type(obj).__name__}: engine='native' runs torch's own ops, which have "
                         f"nothing for {', '.join(on)}; use engine='auto', 'fused' or 'reference'")


def explicit_engine(engine: str, x: Tensor) -> str:
    """engine='fused' on a device/dtype it cannot run: a clear error; half precision runs in
    float32 through it."""
    if engine != "fused" or dispatch.dtype_key(x.dtype) == "other":
        return "reference" if engine == "fused" else engine  # (torch.nn's dtype error follows)
    if x.device.type != "cpu":
        raise RuntimeError(f"engine='fused' runs on CPU floating tensors only, got {x.dtype} on "
                           f"{x.device}; use engine='auto', 'native' or 'reference'")
    if not stack.fused_available():
        raise RuntimeError("engine='fused' needs numba, which does not import here")
    return "fused-float32" if dispatch.dtype_key(x.dtype) == "half" else "fused"


_EAGER: Any = None


def _eager_forward() -> Any:
    """``RNNBase._forward`` out of Dynamo's sight. Dynamo refuses to trace a torch.nn.RNNBase
    ("Dynamo does not support RNN, GRU, or LSTM"), so under torch.compile the module runs eagerly,
    as torch.nn.LSTM does; without this, Dynamo would still trace the functions it calls one by
    one. Made on first use, since torch.compiler.disable imports Dynamo (seconds)."""
    global _EAGER
    if _EAGER is None:
        _EAGER = torch.compiler.disable(RNNBase._forward)
    return _EAGER


# The type checker sees the mixin as the torch.nn.RNNBase it is mixed into; at run time it derives
# from nothing (see RNNBase).
if TYPE_CHECKING:
    _TorchRNNBase = nn.RNNBase
else:
    _TorchRNNBase = object


class RNNBase(_TorchRNNBase):
    """gatedrnn's behaviour, mixed into torch.nn.LSTM / GRU / RNN (``class LSTM(RNNBase, nn.LSTM)``).

    It derives from nothing, so a third-party mixin that derives from ``torch.nn.RNNBase`` can sit
    in front of it (``class X(Mixin, gatedrnn.LSTM)``) and the cooperative ``__init__`` chain still
    runs through torch's constructor.
    """

    _TORCH: type[nn.RNNBase]  # the torch.nn class: its forward is the native engine
    _ACCEPTS: tuple[str, ...] = tuple(OPTIONS)
    num_heads: int = 1  # (a class default too: modules pickled before the option have none)
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        take_options(self, kwargs, self._ACCEPTS, gru=self._TORCH.__name__ == "GRU")
        super().__init__(*args, **kwargs)  # torch's checks, parameters, flat weights
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
        if not self.__dict__.get("_gated_ready"):
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
            return explicit_engine(self.engine, data)
        torch_op = self._torch_op() and not return_gates
        packed = isinstance(input, PackedSequence)
        B = (int(input.batch_sizes[0]) if packed else data.shape[0 if self.batch_first else 1]
             if data.dim() == 3 else 1)
        training = torch.is_grad_enabled() and (self.weight_ih_l0.requires_grad or data.requires_grad)
        kind = "RNN" if self.mode.startswith("RNN") else self.mode
        engine = dispatch.choose(data.device.type, kind, dispatch.dtype_key(data.dtype),
                                 torch_op=torch_op, simple=not (packed or self.proj_size),
                                 training=training, batch=B)
        if engine.startswith("fused") and (B == 0 or not stack.fused_available()):
            engine = "native" if torch_op else "reference"
        return engine

    def forward(self, input: Tensor | PackedSequence, hx: Any = None, return_gates: bool = False):
        """Run the network; returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``), and the
        recorded gates as a third element when ``return_gates`` (see ``gatedrnn.equations.cells``).

        ``return_gates`` is positional-or-keyword, not keyword-only, because torch's TorchScript ONNX
        exporter passes every defaulted parameter of ``forward`` positionally."""
        if self.engine == "auto" or self.engine == "fused":
            # One inference step with the state carried (see one_step.py); None otherwise.
            result = one_step.module_call(self, input, hx, return_gates)
            if result is not None:
                record_engine(self, "fused")
                return result
            # A short sequence at a small batch (see lean_path.py), which records its engine.
            result = lean_path.module_call(self, input, hx, return_gates)
            if result is not None:
                return result
        if "torch._dynamo" in sys.modules:  # (not imported: nobody is compiling)
            return _eager_forward()(self, input, hx, return_gates)
        return self._forward(input, hx, return_gates)

    def _forward(self, input: Any, hx: Any, return_gates: bool) -> Any:
        """forward past the streaming step."""
        if _exporting():
            from ..export import graph  # the exporters need traceable torch ops, not numba

            return graph.export_forward(self, input, hx)
        engine = record_engine(self, self._engine(input, return_gates))
        if engine == "native":
            if self.mode == "LSTM" and hx is not None and isinstance(input, PackedSequence):
                checks.packed_lstm_state(self, input.data, input.batch_sizes, hx)
            return self._TORCH.forward(self, input, hx)
        a = checks.module_args(self, input, hx)
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
        y, finals, gates = stack.stacked(x, states, weights, a.batch_sizes, self._options(),
                                              spec, "reference" if engine == "reference" else "fused",
                                              return_gates)
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
        result = (out, tuple(out_state) if self.mode == "LSTM" else out_state[0])
        return result + (gates,) if return_gates else result

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


class LSTM(RNNBase, nn.LSTM):
    """Drop-in ``torch.nn.LSTM`` (a subclass of it); equations in ``gatedrnn.equations.cells.lstm_cell``.

    Extra keyword-only options: engine, layer_norm, peephole, recurrent_dropout, zoneout,
    zoneout_cell, weight_drop, forget_bias, init, chrono_max_len, num_heads (see the README).

    ``num_heads`` = nh > 1 makes the recurrence head-wise (block-diagonal): H splits into nh blocks
    of d = H / nh units whose gates see only their own block of h, and ``weight_hh_l{k}`` has shape
    (nh, 4d, d), head j's rows stacked per gate i|f|g|o (``gatedrnn.equations.cells.headwise_product``). It
    starts at U(−1/√H, 1/√H) like every weight (orthogonal per head and gate with
    ``init="orthogonal"``). Engines "fused" and "reference"; not with proj_size.

    Example:
        >>> import gatedrnn
        >>> gatedrnn.LSTM(3, 8, num_heads=2).weight_hh_l0.shape
        torch.Size([2, 16, 4])
    """

    _TORCH = nn.LSTM
    _ACCEPTS = tuple(k for k in OPTIONS if k != "reset_after")


class GRU(RNNBase, nn.GRU):
    """Drop-in ``torch.nn.GRU`` (a subclass of it); equations in ``gatedrnn.equations.cells.gru_cell``.

    ``reset_after=False`` gives Cho et al.'s original GRU (Keras' reset_after=False). Extra options
    as ``LSTM`` less peephole and zoneout_cell; with ``num_heads`` = nh > 1, ``weight_hh_l{k}`` is
    (nh, 3d, d), head j's rows stacked per gate r|z|n.
    """

    _TORCH = nn.GRU
    _ACCEPTS = tuple(k for k in OPTIONS if k not in ("peephole", "zoneout_cell"))


class RNN(RNNBase, nn.RNN):
    """Drop-in ``torch.nn.RNN`` (Elman, tanh or relu; a subclass of it), the ungated baseline.

    The one extra option is ``engine``."""

    _TORCH = nn.RNN
    _ACCEPTS = ("engine",)


def from_config(config: dict[str, Any]) -> RNNBase:
    """Build a module from ``module.get_config()``; the inverse of get_config (every gatedrnn
    module: LSTM, GRU, RNN, MinGRU, MinLSTM, SLSTM).

    Example:
        >>> import gatedrnn
        >>> gatedrnn.from_config(gatedrnn.GRU(3, 5, reset_after=False).get_config())
        GRU(3, 5, reset_after=False)
    """
    from . import min_slstm  # MinGRU, MinLSTM, SLSTM

    classes = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN, **min_slstm.CLASSES}
    return checks.from_config(config, classes)
