"""``MinGRU``, ``MinLSTM`` and ``SLSTM``: the cells that came after, with torch.nn's shape of API.

Shape legend (as torch.nn): N batch, L sequence length, D = 2 if bidirectional else 1, H_in input
size, H hidden size.
    input  (L, N, H_in), (N, L, H_in) with batch_first, (L, H_in) unbatched, or a PackedSequence
    state  MinGRU, MinLSTM: h (D·num_layers, N, H);  SLSTM: a tuple (h, c, n, m) of those
    output (L, N, D·H) or the PackedSequence form of it
Parameters per layer k and direction (suffix ``_reverse``): ``weight_ih_l{k}`` (G·H, in) and
``bias_ih_l{k}`` (G·H,) with rows [z | h̃] (MinGRU, G = 2), [f | i | h̃] (MinLSTM, G = 3) or
[i | f | z | o] (SLSTM, G = 4); SLSTM also ``weight_hh_l{k}`` (4H, H), or (num_heads, 4d, d) with
``num_heads`` > 1, and ``bias_hh_l{k}`` (4H,). All start at U(−1/√H, 1/√H), as torch.nn's.
The equations are in ``gatedrnn.equations.cells``; the engines in ``gatedrnn.engines.min_slstm``.

Example:
    >>> import torch, gatedrnn
    >>> rnn = gatedrnn.SLSTM(3, 8, num_layers=2, num_heads=2)
    >>> out, (h, c, n, m) = rnn(torch.randn(5, 4, 3))
    >>> out.shape, h.shape, rnn.weight_hh_l0.shape
    (torch.Size([5, 4, 8]), torch.Size([2, 4, 8]), torch.Size([2, 16, 4]))
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..engines import min_slstm as engines
from ..equations.cells import NEW_STEPS
from . import checks

_LOG = logging.getLogger("gatedrnn")


class NewRNNBase(nn.Module):
    """The shared machinery of MinGRU, MinLSTM and SLSTM; use those classes, not this one."""

    kind = ""
    gates = 0
    proj_size = 0  # torch.nn.RNNBase's attribute, read by code written for it (no projections here)
    if TYPE_CHECKING:
        weight_ih_l0: Tensor  # registered by _register

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None, *, engine: str = "auto",
                 _num_heads: int = 1) -> None:
        super().__init__()
        name = type(self).__name__
        checks.check_constructor(name, input_size, hidden_size, num_layers, bias, batch_first,
                                 dropout, 0)
        if engine not in engines.ENGINES:
            raise ValueError(f"engine must be one of {engines.ENGINES}, got {engine!r}")
        if engine == "scan" and self.kind == "slstm":
            raise ValueError("engine='scan' is for MinGRU and MinLSTM only (sLSTM's gates see h)")
        if isinstance(_num_heads, bool) or not isinstance(_num_heads, int) or _num_heads <= 0:
            raise ValueError(f"num_heads must be a positive int, got {_num_heads!r}")
        if hidden_size % _num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads "
                             f"({_num_heads})")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.engine, self.num_heads = bidirectional, engine, _num_heads
        self.last_engine: str | None = None  # the engine of the last forward call ("auto"'s pick)
        self._register({"device": device, "dtype": dtype})
        self.reset_parameters()

    def _register(self, kw: dict[str, Any]) -> None:
        G, H, D = self.gates, self.hidden_size, 2 if self.bidirectional else 1
        nh = self.num_heads
        self._all_weights: list[list[str]] = []
        for layer in range(self.num_layers):
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                shapes: dict[str, tuple[int, ...]] = {
                    "weight_ih": (G * H, self.input_size if layer == 0 else H * D)}
                if self.kind == "slstm":
                    shapes["weight_hh"] = (G * H, H) if nh == 1 else (nh, G * H // nh, H // nh)
                if self.bias:
                    shapes["bias_ih"] = (G * H,)
                    if self.kind == "slstm":
                        shapes["bias_hh"] = (G * H,)
                for key, shape in shapes.items():
                    self.register_parameter(key + sfx, nn.Parameter(torch.empty(shape, **kw)))
                self._all_weights.append([key + sfx for key in shapes])

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Parameters per layer and direction, as torch.nn's ``all_weights``."""
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def reset_parameters(self) -> None:
        """U(−1/√H, 1/√H) for every parameter (torch.nn's RNN default)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def _weights(self, k: int) -> dict[str, Tensor | None]:
        sfx = self._all_weights[k][0][len("weight_ih"):]
        return {key: getattr(self, name + sfx, None) for key, name in
                (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
                 ("b_hh", "bias_hh"))}

    # --- state ------------------------------------------------------------------------------

    def _state_parts(self, hx: Any) -> list[Tensor]:
        name, n = type(self).__name__, 4 if self.kind == "slstm" else 1
        if n == 1:
            if not isinstance(hx, Tensor):
                raise checks.StateTypeError(f"{name} expects hx as a Tensor, got "
                                            f"{type(hx).__name__}")
            return [hx]
        if isinstance(hx, Tensor) or not isinstance(hx, (tuple, list)) or len(hx) != 4:
            got = type(hx).__name__ + (f" of length {len(hx)}" if isinstance(hx, (tuple, list))
                                       else "")
            raise checks.StateTypeError(f"{name} expects hx as a tuple (h_0, c_0, n_0, m_0) of "
                                        f"four tensors, got {got}")
        return list(hx)

    def _initial_states(self, hx: Any, x: Tensor, B: int, unbatched: bool,
                        order: Tensor | None) -> list[tuple[Tensor, ...]]:
        """Per layer·direction k, the state tuple (h,) or (h, c, n, m), each (B, H)."""
        LD = self.num_layers * (2 if self.bidirectional else 1)
        n = 4 if self.kind == "slstm" else 1
        if hx is None:
            parts = [x.new_zeros(LD, B, self.hidden_size) for _ in range(n)]
        else:
            parts = self._state_parts(hx)
            want = (LD, self.hidden_size) if unbatched else (LD, B, self.hidden_size)
            for label, p in zip(("h_0", "c_0", "n_0", "m_0"), parts):
                checks.check_hidden(type(self).__name__, label, p, want, x.dtype, x.device)
            if unbatched:
                parts = [p.unsqueeze(1) for p in parts]
            if order is not None:
                parts = [p.index_select(1, order) for p in parts]
        return [tuple(p[k] for p in parts) for k in range(LD)]

    def _pack_state(self, state: list[Tensor]) -> Any:
        return tuple(state) if self.kind == "slstm" else state[0]

    # --- forward ----------------------------------------------------------------------------

    def forward(self, input: Tensor | PackedSequence, hx: Any = None, return_gates: bool = False):
        """Run the network; returns ``(output, h_n)`` (SLSTM: ``(output, (h_n, c_n, n_n, m_n))``),
        and the recorded gates (``cells.NEW_GATE_NAMES``, each (D·num_layers, L, N, H)) as a
        third element when ``return_gates``."""
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            # A scan over the cells with a symbolic length, not the engines' loops (which a trace
            # would unroll at the traced length).
            from ..export import min_slstm

            return min_slstm.export_forward(self, input, hx, return_gates)
        name, dtype = type(self).__name__, self.weight_ih_l0.dtype
        sorted_idx = unsorted_idx = None
        batch_sizes: Tensor | None
        lengths: Tensor | None
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_idx, unsorted_idx = input
            checks.check_input(name, data, self.input_size, dtype, packed=True)
            x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))  # (T, B, I) sorted
            unbatched = False
        else:
            checks.check_input(name, input, self.input_size, dtype, packed=False)
            unbatched = input.dim() == 2
            if unbatched:
                x = input.unsqueeze(1)
            else:
                x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
            batch_sizes = lengths = None
        checks.check_length(name, x.shape[0])
        B, D = x.shape[1], 2 if self.bidirectional else 1
        states = self._initial_states(hx, x, B, unbatched, sorted_idx)
        # Traces and torch.compile record torch ops, and numba's are opaque to them.
        tracing = torch._C._get_tracing_state() is not None or torch.compiler.is_compiling()
        engine = "reference" if B == 0 or (tracing and self.engine != "scan") else self.engine
        engine = engines.resolve(engine, self.kind, x)
        if self.__dict__.get("last_engine") != engine:  # what ran, as modules.record_engine
            _LOG.debug("%s: engine %s (was %s)", name, engine, self.__dict__.get("last_engine"))
            self.__dict__["last_engine"] = engine
        weights = [self._weights(k) for k in range(self.num_layers * D)]
        y, finals, gates = engines.stacked(x, states, weights, batch_sizes, self.kind,
                                           self.num_layers, D, self.dropout, self.training,
                                           engine, return_gates)
        state = [torch.stack([f[i] for f in finals]) for i in range(len(finals[0]))]
        if unsorted_idx is not None:
            state = [s.index_select(1, unsorted_idx) for s in state]
            if gates is not None:
                gates = {k: g.index_select(2, unsorted_idx) for k, g in gates.items()}
        if lengths is not None:  # packed
            out: Any = PackedSequence(pack_padded_sequence(y, lengths).data, batch_sizes,
                                      sorted_idx, unsorted_idx)
        elif unbatched:
            out = y.squeeze(1)
            state = [s.squeeze(1) for s in state]
            if gates is not None:
                gates = {k: g.squeeze(2) for k, g in gates.items()}
        else:
            out = y.transpose(0, 1) if self.batch_first else y
        result = (out, self._pack_state(state))
        return result + (gates,) if return_gates else result

    def step(self, x_t: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """One streaming step: the cell equations layer by layer, no time loop, no packing.

        x_t (N, H_in) or (H_in,) unbatched; state as ``forward``'s hx (None: zeros). Returns
        (y_t, new_state): y_t (N, H) the last layer's output, new_state shaped like the state that
        ``forward`` returns. Stepping T times equals one call on the sequence.
        """
        name = type(self).__name__
        if self.bidirectional:
            raise RuntimeError(f"{name}.step runs forward in time; a bidirectional network needs "
                               "the whole sequence (call the module)")
        if isinstance(x_t, Tensor) and x_t.dim() not in (1, 2):
            raise ValueError(f"{name}.step: Expected x_t to be 1D or 2D, got {x_t.dim()}D instead")
        # packed=True: the rank is checked above (a step has one dimension less than a sequence)
        checks.check_input(name, x_t, self.input_size, self.weight_ih_l0.dtype, packed=True)
        unbatched = x_t.dim() == 1
        x = x_t.unsqueeze(0) if unbatched else x_t  # (N, I)
        states = self._initial_states(state, x[None], x.shape[0], unbatched, None)
        cell, finals = NEW_STEPS[self.kind], []
        for layer in range(self.num_layers):
            new, _ = cell(x, states[layer], self._weights(layer))
            finals.append(new)
            x = new[0]
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        out = [torch.stack([f[i] for f in finals]) for i in range(len(finals[0]))]
        if unbatched:
            x, out = x.squeeze(0), [s.squeeze(1) for s in out]
        return x, self._pack_state(out)

    # --- description ------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as JSON-serialisable values (see ``from_config``)."""
        cfg: dict[str, Any] = {"type": type(self).__name__}
        for key in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                    "bidirectional", "engine"):
            cfg[key] = getattr(self, key)
        if self.kind == "slstm":
            cfg["num_heads"] = self.num_heads
        cfg["dtype"] = str(self.weight_ih_l0.dtype).removeprefix("torch.")
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> NewRNNBase:
        """Build a module from ``get_config()``'s dict (its "type" picks the class)."""
        return from_config(config)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                    "bidirectional": False, "engine": "auto", "num_heads": 1}
        for key, default in defaults.items():
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        return s


class MinGRU(NewRNNBase):
    """minGRU (Feng et al. 2024); equations in ``gatedrnn.equations.cells.mingru_cell``. A third of a GRU's
    parameters, no recurrent weight: engines "fused" (sequential numba scan), "scan" (log-space
    parallel scan), "reference"."""

    kind, gates = "mingru", 2


class MinLSTM(NewRNNBase):
    """minLSTM (Feng et al. 2024); equations in ``gatedrnn.equations.cells.minlstm_cell``. Engines as
    ``MinGRU``'s."""

    kind, gates = "minlstm", 3


class SLSTM(NewRNNBase):
    """sLSTM (Beck et al. 2024, xLSTM); equations in ``gatedrnn.equations.cells.slstm_cell``. The state is
    (h, c, n, m). ``num_heads`` > 1 makes the recurrence head-wise (block-diagonal): weight_hh of
    shape (num_heads, 4d, d), d = hidden_size / num_heads. Engines "fused" and "reference"."""

    kind, gates = "slstm", 4

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None, *, engine: str = "auto",
                 num_heads: int = 1) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype, engine=engine, _num_heads=num_heads)


CLASSES: dict[str, type[NewRNNBase]] = {"MinGRU": MinGRU, "MinLSTM": MinLSTM, "SLSTM": SLSTM}


def from_config(config: dict[str, Any]) -> NewRNNBase:
    """Build a MinGRU, MinLSTM or SLSTM from its ``get_config()``.

    Example:
        >>> from gatedrnn.modules.min_slstm import SLSTM, from_config
        >>> from_config(SLSTM(3, 8, num_heads=4).get_config())
        SLSTM(3, 8, num_heads=4)
    """
    return checks.from_config(config, CLASSES)
