"""Drop-in ``LSTMCell``, ``GRUCell`` and ``RNNCell``: one step, torch.nn's parameters and checks.

Shapes: input (N, H_in) or (H_in,) unbatched; h (N, H) and, for the LSTM, c (N, H). The equations
are in ``gatedrnn.cells``; a cell call runs exactly that step.

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

from typing import Any

import torch
from torch import Tensor, nn

from . import checks, init, one_step
from .cells import GATES, STEPS, CellOptions


class RNNCellBase(nn.Module):
    """Shared machinery of the cells; use LSTMCell, GRUCell or RNNCell."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, bias: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None, *,
                 reset_after: bool = True, engine: str = "auto", layer_norm: bool = False,
                 peephole: bool = False, zoneout: float = 0.0, zoneout_cell: float = 0.0,
                 forget_bias: float | None = None, init: str = "torch",
                 chrono_max_len: int | None = None) -> None:
        super().__init__()
        checks.check_constructor(type(self).__name__, input_size, hidden_size, 1, bias, False,
                                 0.0, 0)
        if engine not in ("auto", "reference", "fused"):
            raise ValueError(f"engine must be 'auto', 'reference' or 'fused', got {engine!r}")
        checks.check_variants(mode == "gru", init, chrono_max_len, layer_norm, reset_after)
        self.mode, self.input_size, self.hidden_size, self.bias = mode, input_size, hidden_size, bias
        self.reset_after, self.engine = bool(reset_after), engine
        self.layer_norm, self.peephole = bool(layer_norm), bool(peephole)
        self.zoneout = checks.check_probability("zoneout", zoneout)
        self.zoneout_cell = checks.check_probability("zoneout_cell", zoneout_cell)
        self.forget_bias, self.init, self.chrono_max_len = forget_bias, init, chrono_max_len
        kw = {"device": device, "dtype": dtype}
        G = GATES[mode]
        self.weight_ih = nn.Parameter(torch.empty(G * hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(G * hidden_size, hidden_size, **kw))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G * hidden_size, **kw))
            self.bias_hh = nn.Parameter(torch.empty(G * hidden_size, **kw))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        # Variant parameters after torch.nn's, so the default init draws torch.nn's numbers.
        if self.layer_norm:
            for which, size in (("x", G * hidden_size), ("h", G * hidden_size), ("c", hidden_size)):
                if which != "c" or mode == "lstm":
                    for part in ("weight", "bias"):
                        self.register_parameter(f"layer_norm_{which}_{part}",
                                                nn.Parameter(torch.empty(size, **kw)))
        if self.peephole:
            self.weight_peephole = nn.Parameter(torch.empty(3, hidden_size, **kw))
        self._opts = CellOptions(mode, self.reset_after, self.layer_norm)
        self.reset_parameters()

    @property
    def _variants(self) -> bool:
        return self.layer_norm or self.peephole or self.zoneout > 0 or self.zoneout_cell > 0

    def reset_parameters(self) -> None:
        """torch.nn's default U(−1/√H, 1/√H), then the variants' and ``init``/``forget_bias``."""
        H = self.hidden_size
        init.default_uniform_([self.weight_ih, self.weight_hh]
                              + ([self.bias_ih, self.bias_hh] if self.bias else []), H)
        init.variant_defaults_(list(self.named_parameters()), H)
        biases = [self.bias_ih, self.bias_hh] if self.bias else []
        init.apply_scheme_(self.mode, self.weight_ih, self.weight_hh, biases, H, self.init,
                           self.forget_bias, self.chrono_max_len)

    def _check(self, input: Tensor, hx: Any) -> tuple[Tensor, list[Tensor], bool]:
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if input.dtype != self.weight_ih.dtype:
            raise ValueError(f"{name}: input dtype ({input.dtype}) does not match weight dtype "
                             f"({self.weight_ih.dtype})")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"{name}: input has inconsistent input_size: got "
                               f"{input.shape[-1]} expected {self.input_size}")
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        lstm = self.mode == "lstm"
        if hx is None:
            parts = [x.new_zeros(x.shape[0], self.hidden_size) for _ in range(2 if lstm else 1)]
        else:
            checks.check_state_arity(name, hx, lstm)
            parts = list(hx) if lstm else [hx]
            for label, p in zip(("h", "c"), parts):
                want = (self.hidden_size,) if unbatched else (x.shape[0], self.hidden_size)
                if isinstance(p, Tensor) and not unbatched and p.dim() == 2 \
                        and p.shape[0] != x.shape[0]:
                    raise RuntimeError(f"{name}: Input batch size {x.shape[0]} doesn't match "
                                       f"hidden {label} batch size {p.shape[0]}")
                checks.check_hidden(name, label, p, want, x.dtype, x.device)
            if unbatched:
                parts = [p.unsqueeze(0) for p in parts]
        return x, parts, unbatched

    def _fusable(self, x: Tensor) -> bool:
        """Whether the engine setting lets the numba step kernel take a call (no variants)."""
        fusable = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
        if self.engine == "fused" and not fusable:
            raise RuntimeError("engine='fused' runs on CPU float32/float64 tensors only")
        return fusable and self.engine != "reference" and not self._variants

    def _reference_step(self, x: Tensor, parts: list[Tensor]) -> tuple[Tensor, ...]:
        ps = self._parameters
        w = {"w_ih": ps["weight_ih"], "w_hh": ps["weight_hh"], "b_ih": ps["bias_ih"],
             "b_hh": ps["bias_hh"], "peephole": ps.get("weight_peephole")}
        if self.layer_norm:
            for which in ("x", "h", "c"):
                w[f"ln_{which}_w"] = ps.get(f"layer_norm_{which}_weight")
                w[f"ln_{which}_b"] = ps.get(f"layer_norm_{which}_bias")
        # Zoneout (Krueger et al. 2016): a fresh keep-mask every call in training, p in eval.
        zone = {}
        for key, p, state in (("zoneout_h", self.zoneout, parts[0]),
                              ("zoneout_c", self.zoneout_cell, parts[-1])):
            if p > 0:
                zone[key] = state.new_empty(state.shape).bernoulli_(p) if self.training \
                    else state.new_tensor(p)
        new, _ = STEPS[self.mode](x, tuple(parts), w, self._opts, **zone)
        return new

    def forward(self, input: Tensor, hx: Any = None) -> Any:
        """One step: returns h' (LSTMCell: (h', c'))."""
        new = one_step.cell_call(self, input, hx)  # the streaming step, when it is one
        if new is not None:
            return new
        x, parts, unbatched = self._check(input, hx)
        if self._fusable(x):  # e.g. hx None, unbatched: the step kernel on the checked tensors
            new = one_step.cell_call(self, x, tuple(parts) if self.mode == "lstm" else parts[0])
            if new is not None:
                new = new if self.mode == "lstm" else (new,)
        if new is None:  # autograd, a variant, or memory the kernel cannot read by address
            new = self._reference_step(x, parts)
        if unbatched:
            new = tuple(s.squeeze(0) for s in new)
        return new if self.mode == "lstm" else new[0]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.mode in ("rnn_relu",):
            s += ", nonlinearity='relu'"
        defaults = {"reset_after": True, "engine": "auto", "layer_norm": False, "peephole": False,
                    "zoneout": 0.0, "zoneout_cell": 0.0, "forget_bias": None, "init": "torch",
                    "chrono_max_len": None}
        for key, default in defaults.items():
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        return s


class LSTMCell(RNNCellBase):
    """Drop-in ``torch.nn.LSTMCell``; equations in ``gatedrnn.cells.lstm_cell``.

    Keyword-only variants (all off by default): layer_norm, peephole, zoneout, zoneout_cell,
    forget_bias, init ("torch" | "orthogonal" | "chrono") and chrono_max_len, as in
    ``gatedrnn.LSTM``. Parameters of the variants: ``layer_norm_{x,h,c}_{weight,bias}`` and
    ``weight_peephole`` (3, H), rows i, f, o. Recurrent dropout and weight drop draw one mask per
    sequence or forward pass, which a single step cannot know: use ``gatedrnn.LSTM`` for them.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None, **variants: Any) -> None:
        if "reset_after" in variants:
            raise TypeError("LSTMCell got an unexpected keyword argument 'reset_after' (GRU only)")
        super().__init__("lstm", input_size, hidden_size, bias, device, dtype, **variants)


class GRUCell(RNNCellBase):
    """Drop-in ``torch.nn.GRUCell``; ``reset_after=False`` is Cho et al.'s form.

    Keyword-only variants as ``LSTMCell`` less the LSTM-only peephole and zoneout_cell
    (layer_norm needs reset_after=True).
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None, **variants: Any) -> None:
        for key in ("peephole", "zoneout_cell"):
            if key in variants:
                raise TypeError(f"GRUCell got an unexpected keyword argument '{key}' (LSTM only)")
        super().__init__("gru", input_size, hidden_size, bias, device, dtype, **variants)


class RNNCell(RNNCellBase):
    """Drop-in ``torch.nn.RNNCell`` (tanh or relu), the ungated baseline: no variants."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device: Any = None,
                 dtype: torch.dtype | None = None, *, engine: str = "auto") -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__("rnn_" + nonlinearity, input_size, hidden_size, bias, device, dtype,
                         engine=engine)
