"""Drop-in ``LSTMCell``, ``GRUCell`` and ``RNNCell``: torch.nn's cell classes, gatedrnn's engines.

Each is a subclass of torch.nn's (torch.nn's arguments, then gatedrnn's keyword-only options); one
call is one step of ``gatedrnn.equations.cells``: without autograd ``engines.one_step``, under
autograd ``engines.step_grad`` (one node, hand-derived backward), a variant the reference step.

Example:
    >>> import torch, gatedrnn
    >>> cell = gatedrnn.GRUCell(4, 8)
    >>> h = torch.zeros(2, 8)
    >>> for x in torch.randn(3, 2, 4):
    ...     h = cell(x, h)
    >>> h.shape
    torch.Size([2, 8])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..engines import dispatch, one_step, route, stack
from ..equations.cells import STEPS, CellOptions
from . import checks, init
from .base import record_engine
from .recurrent import OPTIONS, explicit_engine, option_defaults, refuse_native, take_options
from .scripting import ScriptGRUCell, ScriptLSTMCell, ScriptRNNCell

# (num_heads splits the recurrence of a whole module; a cell is torch.nn's dense step)
_CELL_OPTIONS = tuple(k for k in OPTIONS if k not in ("recurrent_dropout", "weight_drop",
                                                      "num_heads"))


# The type checker sees the mixin as the torch.nn.RNNCellBase it is mixed into; at run time it
# derives from nothing (see RNNCellBase).
if TYPE_CHECKING:
    _TorchRNNCellBase = nn.RNNCellBase
else:
    _TorchRNNCellBase = object


class RNNCellBase(_TorchRNNCellBase):
    """gatedrnn's behaviour, mixed into torch.nn's cells (``class LSTMCell(RNNCellBase,
    nn.LSTMCell)``); it derives from nothing, as ``gatedrnn.modules.recurrent.RNNBase``."""

    _TORCH: type[nn.RNNCellBase]
    # The cell's kind as a string, never as `self._TORCH is nn.LSTMCell`: under
    # gatedrnn.patch_torch() the name nn.LSTMCell is gatedrnn's class, not torch's.
    _KIND: str
    _GATES: int  # gate blocks stacked in weight_ih
    _ACCEPTS: tuple[str, ...] = _CELL_OPTIONS
    if TYPE_CHECKING:  # set by take_options (OPTIONS) and by torch's constructors
        engine: str
        reset_after: bool
        layer_norm: bool
        peephole: bool
        zoneout: float
        zoneout_cell: float
        forget_bias: float | None
        init: str
        chrono_max_len: int | None
        last_engine: str | None
        nonlinearity: str  # torch.nn.RNNCell's
    # (recurrent dropout and weight drop draw a mask per sequence or pass: defaults, never set)

    def __init__(self, input_size: int, hidden_size: int, *args: Any, **kwargs: Any) -> None:
        take_options(self, kwargs, self._ACCEPTS, gru=self._KIND == "gru")
        super().__init__(input_size, hidden_size, *args, **kwargs)  # torch's checks first
        # torch.nn's cells take any integer-like size (a 0-dim tensor, a numpy integer, a bool)
        # and bias=1, and run them: stored as the plain int and bool torch.nn reads them as.
        checks.normalise_cell(self)
        kw: dict[str, Any] = {"device": self.weight_ih.device, "dtype": self.weight_ih.dtype}
        G, H = self._GATES, self.hidden_size
        # Variant parameters after torch.nn's, so the default init draws torch.nn's numbers.
        if self.layer_norm:
            for which, size in (("x", G * H), ("h", G * H), ("c", H)):
                if which != "c" or self._KIND == "lstm":
                    for part in ("weight", "bias"):
                        self.register_parameter(f"layer_norm_{which}_{part}",
                                                nn.Parameter(torch.empty(size, **kw)))
        if self.peephole:
            self.weight_peephole = nn.Parameter(torch.empty(3, H, **kw))
        self.__dict__["_gated_ready"] = True
        self.reset_parameters()

    @property
    def cell_mode(self) -> str:
        """gatedrnn's name for the step: "lstm", "gru", "rnn_tanh" or "rnn_relu"."""
        if self._KIND == "lstm":
            return "lstm"
        if self._KIND == "gru":
            return "gru"
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return "rnn_" + self.nonlinearity

    @property
    def _variants(self) -> bool:
        return self.layer_norm or self.peephole or self.zoneout > 0 or self.zoneout_cell > 0

    def _torch_op(self) -> bool:
        return self.reset_after and not self._variants

    def reset_parameters(self) -> None:
        """torch.nn's default U(−1/√H, 1/√H), then the variants' and ``init``/``forget_bias``."""
        if not self.__dict__.get("_gated_ready", True):  # (unpickled: ready)
            return  # torch's constructor: draw once, after the variant parameters exist
        H = self.hidden_size
        biases: list[Tensor] = [self.bias_ih, self.bias_hh] if self.bias_ih is not None else []
        init.default_uniform_([self.weight_ih, self.weight_hh] + biases, H)
        init.variant_defaults_(list(self.named_parameters()), H)
        mode = "lstm" if self._KIND == "lstm" else "gru" if self._KIND == "gru" else "rnn"
        init.apply_scheme_(mode, self.weight_ih, self.weight_hh, biases, H, self.init,
                           self.forget_bias, self.chrono_max_len)

    def _engine(self, input: Any) -> str:
        if torch.jit.is_tracing():  # one step: torch's op where it has one, the equations' else
            return "native" if self._torch_op() else "reference"
        if self.engine == "native":
            refuse_native(self)
            return "native"
        if not isinstance(input, Tensor) or self.engine == "reference":
            return "reference"
        if self.engine != "auto":
            return explicit_engine(self.engine, input, checked=False)
        torch_op = self._torch_op()
        if torch_op and checks.autocast_on(input.device.type):
            return "native"  # torch.nn's numbers and dtypes under autocast (RNNBase._engine)
        training = torch.is_grad_enabled() and (self.weight_ih.requires_grad or input.requires_grad)
        batch = input.shape[0] if input.dim() == 2 else 1
        engine = dispatch.choose(input.device.type, self._TORCH.__name__, dispatch.dtype_key(input.dtype),
                                 torch_op=torch_op, simple=True, training=training, batch=batch,
                                 work=batch * self.hidden_size,  # a cell's T·N·H: one step
                                 hidden=self.hidden_size)
        if engine.startswith("fused") and not stack.fused_available():
            engine = "native" if torch_op else "reference"
        return engine

    def _reference_step(self, x: Tensor, parts: list[Tensor], dtype: torch.dtype | None = None
                        ) -> tuple[Tensor, ...]:
        """The step of ``gatedrnn.equations.cells`` under autograd (in ``dtype`` when given)."""
        # getattr: pruning and parametrizations turn a parameter into a plain attribute.
        get = lambda n: getattr(self, n, None)  # noqa: E731 - a local shorthand
        w = {"w_ih": get("weight_ih"), "w_hh": get("weight_hh"), "b_ih": get("bias_ih"),
             "b_hh": get("bias_hh"), "peephole": get("weight_peephole")}
        if self.layer_norm:
            for which in ("x", "h", "c"):
                w[f"ln_{which}_w"] = get(f"layer_norm_{which}_weight")
                w[f"ln_{which}_b"] = get(f"layer_norm_{which}_bias")
        if dtype is not None:
            w = {k: None if v is None else v.to(dtype) for k, v in w.items()}
        # Zoneout (Krueger et al. 2016): a fresh keep-mask every call in training, p in eval.
        zone = {}
        for key, p, state in (("zoneout_h", self.zoneout, parts[0]),
                              ("zoneout_c", self.zoneout_cell, parts[-1])):
            if p > 0:
                zone[key] = state.new_empty(state.shape).bernoulli_(p) if self.training \
                    else state.new_tensor(p)
        mode = self.cell_mode
        new, _ = STEPS[mode](x, tuple(parts), w, CellOptions(mode, self.reset_after, self.layer_norm),
                             **zone)
        return new

    def forward(self, input: Tensor, hx: Any = None) -> Any:
        """One step: returns h' (LSTMCell: (h', c'))."""
        if self.engine == "auto" or self.engine == "fused":
            # The step's route (torch's op, the streaming step kernel, the one-node training step
            # or the general step below), decided once per call signature (engines.route).
            return route.cell_call(self, input, hx, _general)
        return self._general(input, hx)

    def _general(self, input: Any, hx: Any) -> Any:
        """forward past the fast routes: torch.nn's checks, then the engine's step."""
        engine = self._engine(input)
        if engine == "fused" and self.engine == "auto" and torch.is_grad_enabled() \
                and self._torch_op():  # a training step step_grad refused (e.g. unbatched)
            engine = "native"
        if engine == "native":
            record_engine(self, engine)
            return self._TORCH.forward(self, input, hx)
        lstm = self._KIND == "lstm"
        x, parts, unbatched = checks.cell_args(self, input, hx, lstm, self._TORCH.__name__)
        self.cell_mode  # noqa: B018 - torch.nn checks the nonlinearity here
        if self.engine == "fused":  # torch.nn's checks passed: now the fused engine's device
            explicit_engine(self.engine, x)
        if lstm and parts[1].dtype != x.dtype:  # torch promotes; its op computes what it means
            if not self._torch_op():
                raise RuntimeError(f"c dtype ({parts[1].dtype}) does not match input dtype "
                                   f"({x.dtype})")
            record_engine(self, "native")
            return self._TORCH.forward(self, input, hx)
        dtype = x.dtype
        if engine == "fused-float32":
            x, parts = x.float(), [p.float() for p in parts]
        new = None
        if engine.startswith("fused"):  # e.g. hx None, unbatched: the step kernel, checked tensors
            new = one_step.cell_call(self, x, tuple(parts) if lstm else parts[0])
            if new is not None:
                new = new if lstm else (new,)
        if new is None:  # autograd, a variant, or memory the kernel cannot read by address
            cast = torch.float32 if engine == "fused-float32" else None
            new, engine = self._reference_step(x, parts, cast), "reference"
        record_engine(self, engine)
        new = tuple(s.to(dtype) for s in new)
        if unbatched:
            new = tuple(s.squeeze(0) for s in new)
        return new if lstm else new[0]

    def extra_repr(self) -> str:
        """torch.nn's description, then gatedrnn's options that are not at their defaults."""
        s = super().extra_repr()
        for key in self._ACCEPTS:
            if getattr(self, key) != OPTIONS[key]:
                s += f", {key}={getattr(self, key)!r}"
        return s


option_defaults(RNNCellBase)


def _general(m: Any, input: Any, hx: Any) -> Any:
    return m._general(input, hx)


class LSTMCell(ScriptLSTMCell, RNNCellBase, nn.LSTMCell):
    """Drop-in ``torch.nn.LSTMCell`` (a subclass of it): one step of ``gatedrnn.equations.cells.lstm_cell``.

    Equations: ``gatedrnn.equations.cells.lstm_cell`` (gates i|f|g|o, torch.nn's order), with
    m = 1: a cell has no recurrent dropout. Without options they are torch.nn.LSTMCell's.

    Args:
        input_size: The number of features H_in of the input x.
        hidden_size: The number of features H of the state h and c.
        bias: If False, no ``bias_ih`` and ``bias_hh``.
        device: Where the parameters are made.
        dtype: The parameters' dtype.
        engine: "auto", "fused", "reference" or "native" (see the note on engines).
        layer_norm: Layer-normalise the input and recurrent products and the cell state.
        peephole: Gates i, f, o also see c (Gers et al. 2002).
        zoneout: Probability of keeping each unit of h from the previous step (training).
        zoneout_cell: Zoneout's probability for c.
        forget_bias: The forget gate's total bias b_ih + b_hh starts at this value (None: torch's
            init).
        init: "torch" (U(−1/√H, 1/√H)), "orthogonal" or "chrono" (Tallec & Ollivier 2018).
        chrono_max_len: The longest dependency to expect, for ``init="chrono"``.
        **kwargs: Nothing else: another class's option (``reset_after`` here, say) raises a
            TypeError naming the classes that take it.

    Inputs:
        - **input** (N, H_in) or (H_in,) unbatched.
        - **hx** optional tuple (h_0, c_0), each (N, H) or (H,) unbatched; zeros when omitted.

    Outputs:
        - **(h_1, c_1)**, each (N, H) or (H,) unbatched: the next state.

    Attributes:
        engine (str): The engine setting, as the argument; a plain attribute, change it at any time.
        weight_ih (Tensor): (4H, H_in), rows i | f | g | o.
        weight_hh (Tensor): (4H, H), rows i | f | g | o.
        bias_ih (Tensor): (4H,).
        bias_hh (Tensor): (4H,). All four start at U(−1/√H, 1/√H), as torch.nn's.
        layer_norm_x_weight (Tensor): With layer_norm: ``layer_norm_{x,h}_{weight,bias}`` (4H,) and
            ``layer_norm_c_{weight,bias}`` (H,), starting at ones and zeros.
        weight_peephole (Tensor): With peephole: (3, H), rows i, f, o, starting at U(−1/√H, 1/√H).
        last_engine (str | None): The engine of the last call ("native", "fused", "fused-float32" or
            "reference"); None before the first.

    Recurrent dropout and weight drop draw one mask per sequence or forward pass, which a single
    step cannot know: use ``gatedrnn.LSTM`` for them.

    Raises:
        ValueError: At construction: an option out of its range, an unknown ``engine`` or
            ``init``. At a call: an input that is not 1-D or 2-D (as torch.nn), or
            ``engine="native"`` with a variant (torch has no op for it).
        TypeError: At construction: an option of another class (``reset_after`` here), or an
            argument of a type torch.nn refuses.
        RuntimeError: At a call: an input or a state whose size, batch or device does not match
            the cell (torch.nn's checks and messages), or a forced engine that cannot run it.

    Note: Engines
        ``engine="auto"`` (default) picks per call: on the CPU in float32/float64, a call
        without autograd runs the numba step kernel (``"fused"``); a call autograd records runs
        one autograd node with a hand-derived backward (``"fused"``, ``engines.step_grad``) for
        LSTMCell and GRUCell and torch's own cell op (``"native"``) for RNNCell, whose op is
        already small; a variant runs the reference step (torch has no op for it); off the CPU,
        torch's op. ``"fused"`` always takes the step kernels where it can (plain tensors, with
        or without autograd); bfloat16/float16 compute in float32
        (``last_engine == "fused-float32"``). ``"native"`` is torch.nn's own
        forward, bit for bit; ``"reference"`` the eager step of ``gatedrnn.equations.cells``.
        Engines agree to 1e-5 in float32 (1e-10 in float64), not bit for bit; each engine gives
        the same bits on every call and at any ``torch.set_num_threads``. The numba kernels
        compile on the first call (seconds) and are cached on disk (numba's ``cache=True``), so
        later processes start fast.

    Example:
        >>> import torch, gatedrnn
        >>> cell = gatedrnn.LSTMCell(3, 5, peephole=True)
        >>> h, c = cell(torch.randn(2, 3))
        >>> h.shape, c.shape, cell.weight_peephole.shape
        (torch.Size([2, 5]), torch.Size([2, 5]), torch.Size([3, 5]))
    """

    _TORCH, _GATES, _KIND = nn.LSTMCell, 4, "lstm"
    _ACCEPTS = tuple(k for k in _CELL_OPTIONS if k != "reset_after")

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None, *, engine: str = "auto",
                 layer_norm: bool = False, peephole: bool = False, zoneout: float = 0.0,
                 zoneout_cell: float = 0.0, forget_bias: float | None = None, init: str = "torch",
                 chrono_max_len: int | None = None, **kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype, engine=engine,
                         layer_norm=layer_norm, peephole=peephole, zoneout=zoneout,
                         zoneout_cell=zoneout_cell, forget_bias=forget_bias, init=init,
                         chrono_max_len=chrono_max_len, **kwargs)


class GRUCell(ScriptGRUCell, RNNCellBase, nn.GRUCell):
    """Drop-in ``torch.nn.GRUCell`` (a subclass of it): one step of ``gatedrnn.equations.cells.gru_cell``.

    Equations: ``gatedrnn.equations.cells.gru_cell`` (gates r|z|n, torch.nn's order), with
    m = 1: a cell has no recurrent dropout. Without options they are torch.nn.GRUCell's.

    Args:
        input_size: The number of features H_in of the input x.
        hidden_size: The number of features H of the state h.
        bias: If False, no ``bias_ih`` and ``bias_hh``.
        device: Where the parameters are made.
        dtype: The parameters' dtype.
        engine: "auto", "fused", "reference" or "native" (see the note on engines).
        reset_after: True is torch.nn's and cuDNN's form (the reset gate after W_hh h); False is
            Cho et al.'s original (before it), Keras' ``reset_after=False``.
        layer_norm: Layer-normalise the input and recurrent products (needs reset_after=True).
        zoneout: Probability of keeping each unit of h from the previous step (training).
        forget_bias: The update gate's total bias starts at this value (None: torch's init).
        init: "torch" (U(−1/√H, 1/√H)), "orthogonal" or "chrono" (Tallec & Ollivier 2018).
        chrono_max_len: The longest dependency to expect, for ``init="chrono"``.
        **kwargs: Nothing else: another class's option (``peephole`` here, say) raises a
            TypeError naming the classes that take it.

    Inputs:
        - **input** (N, H_in) or (H_in,) unbatched.
        - **hx** optional h_0, (N, H) or (H,) unbatched; zeros when omitted.

    Outputs:
        - **h_1** (N, H) or (H,) unbatched: the next state.

    Attributes:
        engine (str): The engine setting, as the argument; a plain attribute, change it at any time.
        weight_ih (Tensor): (3H, H_in), rows r | z | n.
        weight_hh (Tensor): (3H, H), rows r | z | n.
        bias_ih (Tensor): (3H,).
        bias_hh (Tensor): (3H,). All four start at U(−1/√H, 1/√H), as torch.nn's.
        layer_norm_x_weight (Tensor): With layer_norm: ``layer_norm_{x,h}_{weight,bias}`` (3H,),
            starting at ones and zeros.
        last_engine (str | None): The engine of the last call ("native", "fused", "fused-float32" or
            "reference"); None before the first.

    Raises:
        ValueError: As ``LSTMCell``'s; also ``layer_norm`` with ``reset_after=False``.
        TypeError: As ``LSTMCell``'s (``peephole`` here, say).
        RuntimeError: As ``LSTMCell``'s.

    Note: Engines
        As ``LSTMCell``'s (under autograd, RNNCell runs torch's own cell op, already small).

    Example:
        >>> import torch, gatedrnn
        >>> cell = gatedrnn.GRUCell(3, 5, reset_after=False)
        >>> cell(torch.randn(3)).shape
        torch.Size([5])
    """

    _TORCH, _GATES, _KIND = nn.GRUCell, 3, "gru"
    _ACCEPTS = tuple(k for k in _CELL_OPTIONS if k not in ("peephole", "zoneout_cell"))

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None, *, engine: str = "auto",
                 reset_after: bool = True, layer_norm: bool = False, zoneout: float = 0.0,
                 forget_bias: float | None = None, init: str = "torch",
                 chrono_max_len: int | None = None, **kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype, engine=engine,
                         reset_after=reset_after, layer_norm=layer_norm, zoneout=zoneout,
                         forget_bias=forget_bias, init=init, chrono_max_len=chrono_max_len,
                         **kwargs)


class RNNCell(ScriptRNNCell, RNNCellBase, nn.RNNCell):
    """Drop-in ``torch.nn.RNNCell`` (a subclass of it), Elman's step (``gatedrnn.equations.cells.rnn_cell``).

    Equations: ``gatedrnn.equations.cells.rnn_cell``, with m = 1: a cell has no recurrent dropout.

    Args:
        input_size: The number of features H_in of the input x.
        hidden_size: The number of features H of the state h.
        bias: If False, no ``bias_ih`` and ``bias_hh``.
        nonlinearity: φ, "tanh" or "relu".
        device: Where the parameters are made.
        dtype: The parameters' dtype.
        engine: "auto", "fused", "reference" or "native" (see the note on engines).
        **kwargs: Nothing else: another class's option (``layer_norm`` here, say) raises a
            TypeError naming the classes that take it.

    Inputs:
        - **input** (N, H_in) or (H_in,) unbatched.
        - **hx** optional h_0, (N, H) or (H,) unbatched; zeros when omitted.

    Outputs:
        - **h_1** (N, H) or (H,) unbatched: the next state.

    Attributes:
        engine (str): The engine setting, as the argument; a plain attribute, change it at any time.
        weight_ih (Tensor): (H, H_in).
        weight_hh (Tensor): (H, H).
        bias_ih (Tensor): (H,).
        bias_hh (Tensor): (H,). All four start at U(−1/√H, 1/√H), as torch.nn's.
        last_engine (str | None): The engine of the last call ("native", "fused" or "reference"); None before
            the first.

    Raises:
        ValueError: As ``LSTMCell``'s, and an unknown ``nonlinearity``.
        TypeError: As ``LSTMCell``'s (``layer_norm`` here, say).
        RuntimeError: As ``LSTMCell``'s.

    Note: Engines
        As ``LSTMCell``'s (under autograd, RNNCell runs torch's own cell op, already small).

    Example:
        >>> import torch, gatedrnn
        >>> cell = gatedrnn.RNNCell(3, 5, nonlinearity="relu", engine="fused")
        >>> with torch.no_grad():
        ...     h = cell(torch.randn(2, 3), torch.zeros(2, 5))
        >>> h.shape, cell.last_engine
        (torch.Size([2, 5]), 'fused')
    """

    _TORCH, _GATES, _KIND = nn.RNNCell, 1, "rnn"
    _ACCEPTS = ("engine",)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device: Any = None, dtype: torch.dtype | None = None,
                 *, engine: str = "auto", **kwargs: Any) -> None:
        super().__init__(input_size, hidden_size, bias, nonlinearity, device, dtype,
                         engine=engine, **kwargs)
