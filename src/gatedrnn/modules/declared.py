"""``DeclaredRNN``: a sequence module built from a cell's declaration alone, for the cells with no
torch.nn twin (MinGRU, MinLSTM, SLSTM, and any cell registered in ``gatedrnn.equations.kinds``).

A subclass names its kind (``kind = "mingru"``); the declaration gives the parameters (its
``weights``, ``gates``, ``headwise``), the state (``state``), the step (for ``step()``) and the
engines. The forward is the house's (``gatedrnn.modules.base``); the checks follow torch.nn's order
and exception classes (``checks.check_constructor``, ``check_input``, ``check_hidden``).

Parameters per layer k and direction (suffix ``_reverse``), those the declaration lists:
``weight_ih_l{k}`` (G·H, in), ``weight_hh_l{k}`` (G·H, H) or (num_heads, G·d, d) when head-wise,
``bias_ih_l{k}``, ``bias_hh_l{k}`` (G·H,). All start at U(−1/√H, 1/√H), as torch.nn's.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ..engines import dispatch, stack
from ..engines.triton import check as triton_check
from ..equations.cells import CellOptions
from ..equations.kinds import CELLS, INT8_ENGINES, CellKind
from . import checks
from .base import SequenceModule, pack_state

# Every DeclaredRNN subclass by class name, for ``gatedrnn.from_config``.
CLASSES: dict[str, type[DeclaredRNN]] = {}
_PARTS = ("h_0", "c_0", "n_0", "m_0")


class DeclaredRNN(SequenceModule, nn.Module):
    """The shared machinery of the modules built from a declaration; use MinGRU, MinLSTM, SLSTM
    or subclass it with ``kind = "<a registered cell kind>"``."""

    kind = ""
    proj_size = 0  # torch.nn.RNNBase's attribute, read by code written for it (no projections here)
    if TYPE_CHECKING:
        weight_ih_l0: Tensor  # registered by _register

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            CLASSES[cls.__name__] = cls

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None, *, engine: str = "auto",
                 num_heads: int = 1) -> None:
        super().__init__()
        name, cell = type(self).__name__, self._cell()
        # (sizes come back as plain ints: torch.nn takes a bool size, a numpy integer layer count)
        input_size, hidden_size, num_layers, dropout = checks.check_constructor(
            name, input_size, hidden_size, num_layers, bias, batch_first, dropout, 0, bidirectional)
        # The int8 engines run quantized modules only (``gatedrnn.modules.quantized``).
        engines = ("auto", *(e for e in cell.engines if e not in INT8_ENGINES))
        if engine not in engines:
            raise ValueError(f"engine must be one of {engines} for {name}, got {engine!r}")
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads <= 0:
            raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads "
                             f"({num_heads})")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.engine, self.num_heads = bidirectional, engine, num_heads
        self.last_engine: str | None = None  # the engine of the last forward call ("auto"'s pick)
        self._register({"device": device, "dtype": dtype})
        self.reset_parameters()

    def _cell(self) -> CellKind:
        return CELLS[self.kind]

    def _register(self, kw: dict[str, Any]) -> None:
        cell, H, D, nh = self._cell(), self.hidden_size, 2 if self.bidirectional else 1, self.num_heads
        G = cell.gates
        self._all_weights: list[list[str]] = []
        for layer in range(self.num_layers):
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                shapes = {"weight_ih": (G * H, self.input_size if layer == 0 else H * D),
                          "weight_hh": (G * H, H) if nh == 1 else (nh, G * H // nh, H // nh),
                          "bias_ih": (G * H,), "bias_hh": (G * H,)}
                names = [n for n in shapes if n in cell.weights and (self.bias or "bias" not in n)]
                for n in names:
                    self.register_parameter(n + sfx, nn.Parameter(torch.empty(shapes[n], **kw)))
                self._all_weights.append([n + sfx for n in names])

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Parameters per layer and direction, as torch.nn's ``all_weights``."""
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def reset_parameters(self) -> None:
        """U(−1/√H, 1/√H) for every parameter (torch.nn's RNN default)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    # --- the house's hooks ----------------------------------------------------------------------

    def _weights(self, k: int) -> dict[str, Tensor | None]:
        sfx = self._all_weights[k][0][len("weight_ih"):]
        return {key: getattr(self, name + sfx, None) for key, name in
                (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
                 ("b_hh", "bias_hh"))}

    def _options(self) -> CellOptions:
        return CellOptions(self.kind, training=self.training)

    def _engine(self, input: Any, return_gates: bool) -> str:
        """The input checked (first, as torch.nn checks it), then the engine: the one asked for,
        or ``dispatch.choose``'s pick for "auto"."""
        name, packed = type(self).__name__, isinstance(input, PackedSequence)
        data = input.data if packed else input
        checks.check_input(name, data, self.input_size, self.weight_ih_l0.dtype, packed=packed)
        B = (int(input.batch_sizes[0]) if packed else 1 if data.dim() == 2
             else data.shape[0 if self.batch_first else 1])
        # Traces and torch.compile record torch ops, and numba's are opaque to them.
        tracing = torch._C._get_tracing_state() is not None or torch.compiler.is_compiling()
        if B == 0 or (tracing and self.engine != "scan"):
            return "reference"
        fusable = stack.fusable(data)
        if self.engine == "fused" and not fusable:
            raise RuntimeError(f"engine='fused' runs on CPU float32/float64 tensors only, got "
                               f"{data.dtype} on {data.device}; use engine='auto' or "
                               "engine='reference'")
        if self.engine == "triton":
            triton_check(data)  # a clear error off CUDA, naming the engines that would run
        if self.engine != "auto":
            return self.engine
        training = torch.is_grad_enabled() and (self.weight_ih_l0.requires_grad or data.requires_grad)
        engine = dispatch.choose(data.device.type, self.kind, dispatch.dtype_key(data.dtype),
                                 torch_op=False, simple=not packed, training=training, batch=B,
                                 triton=stack.triton_ready(self.kind, data),
                                 hidden=self.hidden_size)
        if engine not in self._cell().engines or not stack.has_engine(self.kind, engine):
            return "reference"  # (a cell without that engine, or numba missing)
        return engine

    def _call_args(self, input: Any, hx: Any) -> checks.ModuleArgs:
        name = type(self).__name__
        unsorted = order = None
        batch_sizes = lengths = None
        if isinstance(input, PackedSequence):
            data, batch_sizes, order, unsorted = input
            x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))  # (T, B, I) sorted
            unbatched = False
        else:
            unbatched = input.dim() == 2
            if unbatched:
                x = input.unsqueeze(1)
            else:
                x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
        checks.check_length(name, x.shape[0])
        state = self._initial_state(hx, x, unbatched, order)
        return checks.ModuleArgs(x, state, batch_sizes, lengths, unsorted, unbatched)

    # --- state ----------------------------------------------------------------------------------

    def _state_parts(self, hx: Any) -> list[Tensor]:
        name, n = type(self).__name__, len(self._cell().state)
        if n == 1:
            if not isinstance(hx, Tensor):
                raise checks.StateTypeError(f"{name} expects hx as a Tensor, got "
                                            f"{type(hx).__name__}")
            return [hx]
        if isinstance(hx, Tensor) or not isinstance(hx, (tuple, list)) or len(hx) != n:
            got = type(hx).__name__ + (f" of length {len(hx)}" if isinstance(hx, (tuple, list))
                                       else "")
            want = ", ".join(f"{s}_0" for s in self._cell().state)
            raise checks.StateTypeError(f"{name} expects hx as a tuple ({want}) of {n} tensors, "
                                        f"got {got}")
        return list(hx)

    def _initial_state(self, hx: Any, x: Tensor, unbatched: bool,
                       order: Tensor | None) -> list[Tensor]:
        """The state's parts, each (D·num_layers, B, H); zeros for hx None."""
        LD = self.num_layers * (2 if self.bidirectional else 1)
        B, H = x.shape[1], self.hidden_size
        if hx is None:
            return [x.new_zeros(LD, B, H) for _ in self._cell().state]
        parts = self._state_parts(hx)
        want = (LD, H) if unbatched else (LD, B, H)
        for s, p in zip(self._cell().state, parts):
            checks.check_hidden(type(self).__name__, f"{s}_0", p, want, x.dtype, x.device)
        if unbatched:
            parts = [p.unsqueeze(1) for p in parts]
        if order is not None:
            parts = [p.index_select(1, order) for p in parts]
        return parts

    # --- one step -------------------------------------------------------------------------------

    def step(self, x_t: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """One streaming step: the cell equations layer by layer, no time loop, no packing.

        Stepping T times equals one call on the sequence (the reference engine's equations; the
        other engines agree to rounding).

        Args:
            x_t: (N, H_in), or (H_in,) unbatched: the input of one step.
            state: As ``forward``'s hx (None: zeros).

        Returns:
            (y_t, new_state): y_t (N, H), the last layer's output (H,) unbatched; new_state shaped
            like the state ``forward`` returns.

        Raises:
            RuntimeError: For a bidirectional module (its reverse direction needs the whole
                sequence), or an input or state whose size or batch does not match.
            ValueError: An x_t that is not 1-D or 2-D, or of another dtype than the weights.

        Example:
            >>> import torch, gatedrnn
            >>> rnn = gatedrnn.MinLSTM(3, 8, num_layers=2).eval()
            >>> x = torch.randn(5, 4, 3)
            >>> state, ys = None, []
            >>> for x_t in x:
            ...     y_t, state = rnn.step(x_t, state)
            ...     ys.append(y_t)
            >>> torch.allclose(torch.stack(ys), rnn(x)[0], atol=1e-6)
            True
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
        parts = self._initial_state(state, x[None], unbatched, None)
        cell, finals = self._cell().step, []
        for layer in range(self.num_layers):
            new, _ = cell(x, tuple(p[layer] for p in parts), self._weights(layer))
            finals.append(new)
            x = new[0]
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, training=True)
        out = [torch.stack([f[i] for f in finals]) for i in range(len(finals[0]))]
        if unbatched:
            x, out = x.squeeze(0), [s.squeeze(1) for s in out]
        return x, pack_state(out)

    # --- description ----------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as JSON-serialisable values; ``gatedrnn.from_config`` inverts it.

        Returns:
            "type" (the class name), every constructor argument but ``device`` and ``dtype``, and
            "dtype" as a string ("float32", ...). safetensors files and checkpoints store it.

        Example:
            >>> import gatedrnn
            >>> cfg = gatedrnn.SLSTM(3, 8, num_heads=2).get_config()
            >>> cfg["type"], cfg["num_heads"], cfg["dtype"]
            ('SLSTM', 2, 'float32')
            >>> gatedrnn.from_config(cfg)
            SLSTM(3, 8, num_heads=2)
        """
        cfg: dict[str, Any] = {"type": type(self).__name__}
        for key in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                    "bidirectional", "engine"):
            cfg[key] = getattr(self, key)
        if self._cell().headwise:
            cfg["num_heads"] = self.num_heads
        cfg["dtype"] = str(self.weight_ih_l0.dtype).removeprefix("torch.")
        return cfg

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DeclaredRNN:
        """Build a module from ``get_config()``'s dict (its "type" picks the class)."""
        return checks.from_config(config, CLASSES)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                    "bidirectional": False, "engine": "auto", "num_heads": 1}
        for key, default in defaults.items():
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        return s
