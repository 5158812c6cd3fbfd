"""Drop-in ``LSTM``, ``GRU`` and ``RNN``: torch.nn's contract, gatedrnn's engines and variants.

Shape legend (as torch.nn): N batch, L sequence length, D = 2 if bidirectional else 1, H_in input
size, H_cell hidden size, H_out = proj_size or hidden_size.
    input  (L, N, H_in), (N, L, H_in) with batch_first, (L, H_in) unbatched, or a PackedSequence
    h_0    (D·num_layers, N, H_out)       c_0 (LSTM) (D·num_layers, N, H_cell)
    output (L, N, D·H_out) or the PackedSequence form of it
Parameter names, shapes, gate order and default initialisation are torch.nn's, so ``state_dict``s
load both ways. The equations are in ``gatedrnn.cells``.

Example:
    >>> import torch, gatedrnn
    >>> lstm = gatedrnn.LSTM(10, 20, num_layers=2)
    >>> ref = torch.nn.LSTM(10, 20, num_layers=2)
    >>> _ = ref.load_state_dict(lstm.state_dict())
    >>> x = torch.randn(5, 3, 10)
    >>> torch.allclose(lstm(x)[0], ref(x)[0], atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import checks, functional, init, one_step
from .cells import GATES, CellOptions

_MODE = one_step.MODE


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


class RNNBase(nn.Module):
    """The shared machinery of LSTM, GRU and RNN; use those classes, not this one."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        engine: str = "auto",
        reset_after: bool = True,
        layer_norm: bool = False,
        peephole: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        zoneout_cell: float = 0.0,
        weight_drop: float = 0.0,
        forget_bias: float | None = None,
        init: str = "torch",
        chrono_max_len: int | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        checks.check_constructor(name, input_size, hidden_size, num_layers, bias, batch_first,
                                 dropout, proj_size)
        if engine not in functional.ENGINES:
            raise ValueError(f"engine must be one of {functional.ENGINES}, got {engine!r}")
        checks.check_variants(mode == "GRU", init, chrono_max_len, layer_norm, reset_after)
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        self.engine, self.reset_after = engine, bool(reset_after)
        self.layer_norm, self.peephole = bool(layer_norm), bool(peephole)
        self.recurrent_dropout = checks.check_probability("recurrent_dropout", recurrent_dropout)
        self.zoneout = checks.check_probability("zoneout", zoneout)
        self.zoneout_cell = checks.check_probability("zoneout_cell", zoneout_cell)
        self.weight_drop = checks.check_probability("weight_drop", weight_drop)
        self.forget_bias, self.init, self.chrono_max_len = forget_bias, init, chrono_max_len
        self._register(device, dtype)
        self.reset_parameters()

    # --- parameters -------------------------------------------------------------------------

    def _register(self, device: Any, dtype: torch.dtype | None) -> None:
        kw = {"device": device, "dtype": dtype}
        G, H = GATES[_MODE[self.mode]], self.hidden_size
        H_out = self.proj_size or H
        D = 2 if self.bidirectional else 1
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        extras = []
        for layer in range(self.num_layers):
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                in_size = self.input_size if layer == 0 else H_out * D
                shapes = {"weight_ih": (G * H, in_size), "weight_hh": (G * H, H_out)}
                if self.bias:
                    shapes.update(bias_ih=(G * H,), bias_hh=(G * H,))
                if self.proj_size:
                    shapes["weight_hr"] = (self.proj_size, H)
                names = [k + sfx for k in shapes]
                for full, shape in zip(names, shapes.values()):
                    self.register_parameter(full, nn.Parameter(torch.empty(shape, **kw)))
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
                if self.layer_norm:
                    for which, size in (("x", G * H), ("h", G * H), ("c", H)):
                        if which == "c" and self.mode != "LSTM":
                            continue
                        extras.append((f"layer_norm_{which}_weight{sfx}", (size,)))
                        extras.append((f"layer_norm_{which}_bias{sfx}", (size,)))
                if self.peephole:
                    extras.append((f"weight_peephole{sfx}", (3, H)))
        # Variant parameters come after torch.nn's, so that the default initialisation draws the
        # same numbers as torch.nn for the same seed.
        for full, shape in extras:
            self.register_parameter(full, nn.Parameter(torch.empty(shape, **kw)))

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, n) for n in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Parameters per layer and direction, as torch.nn's ``all_weights``."""
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """A no-op kept for torch.nn compatibility: our engines need no flat weight buffer."""

    def reset_parameters(self) -> None:
        """torch.nn's default init, then the variant parameters, then ``init``/``forget_bias``."""
        H = self.hidden_size
        init.default_uniform_(self._flat_weights, H)
        init.variant_defaults_(list(self.named_parameters()), H)
        for names in self._all_weights:
            p = {n.split("_l")[0]: getattr(self, n) for n in names}
            biases = [p["bias_ih"], p["bias_hh"]] if self.bias else []
            init.apply_scheme_(_MODE[self.mode], p["weight_ih"], p["weight_hh"], biases, H,
                               self.init, self.forget_bias, self.chrono_max_len)

    def _weights(self, k: int) -> dict[str, Tensor | None]:
        """The parameter dict of layer·D + direction k, in the engines' names."""
        names = self._all_weights[k]
        sfx = names[0][len("weight_ih"):]
        get = lambda n: getattr(self, n + sfx, None)  # noqa: E731 - a local shorthand
        w = {"w_ih": get("weight_ih"), "w_hh": get("weight_hh"), "b_ih": get("bias_ih"),
             "b_hh": get("bias_hh"), "w_hr": get("weight_hr"), "peephole": get("weight_peephole")}
        if self.weight_drop > 0 and self.training:
            # DropConnect on W_hh (Merity et al. 2017): a fresh mask per forward pass.
            w["w_hh"] = F.dropout(w["w_hh"], self.weight_drop, training=True)
        if self.layer_norm:
            for which in ("x", "h", "c"):
                w[f"ln_{which}_w"] = get(f"layer_norm_{which}_weight")
                w[f"ln_{which}_b"] = get(f"layer_norm_{which}_bias")
        return w

    # --- forward ----------------------------------------------------------------------------

    def _options(self) -> CellOptions:
        return CellOptions(_MODE[self.mode], self.reset_after, self.layer_norm, 1e-5,
                           self.zoneout, self.zoneout_cell, self.training)

    def _initial_states(self, hx: Any, x: Tensor, B: int, unbatched: bool,
                        order: Tensor | None) -> list[tuple[Tensor, ...]]:
        name, lstm = type(self).__name__, self.mode == "LSTM"
        LD = self.num_layers * (2 if self.bidirectional else 1)
        sizes = [self.proj_size or self.hidden_size] + ([self.hidden_size] if lstm else [])
        if hx is None:
            parts = [x.new_zeros(LD, B, s) for s in sizes]
        else:
            checks.check_state_arity(name, hx, lstm)
            parts = list(hx) if lstm else [hx]
            labels = ["h_0", "c_0"]
            for i, (p, s) in enumerate(zip(parts, sizes)):
                want = (LD, s) if unbatched else (LD, B, s)
                checks.check_hidden(name, labels[i], p, want, x.dtype, x.device)
            if unbatched:
                parts = [p.unsqueeze(1) for p in parts]
            if order is not None:
                parts = [p.index_select(1, order) for p in parts]
        return [tuple(p[k] for p in parts) for k in range(LD)]

    def forward(self, input: Tensor | PackedSequence, hx: Any = None, return_gates: bool = False):
        """Run the network; returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``), and the
        recorded gates as a third element when ``return_gates`` (see ``gatedrnn.cells``).

        ``return_gates`` is positional-or-keyword, not keyword-only, because torch's TorchScript ONNX
        exporter passes every defaulted parameter of ``forward`` positionally."""
        # One inference step with the state carried (see one_step.py); None when exporting.
        result = one_step.module_call(self, input, hx, return_gates)
        if result is not None:
            return result
        if _exporting():
            from . import export_path  # the exporters need traceable torch ops, not numba

            return export_path.export_forward(self, input, hx)
        name = type(self).__name__
        dtype = self.weight_ih_l0.dtype
        packed = isinstance(input, PackedSequence)
        sorted_idx = unsorted_idx = None
        if packed:
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
        B = x.shape[1]
        states = self._initial_states(hx, x, B, unbatched, sorted_idx)
        D = 2 if self.bidirectional else 1
        spec = functional.StackSpec(self.num_layers, D, self.dropout, self.recurrent_dropout,
                                    self.training)
        # A TorchScript trace records torch ops, and numba's are opaque to it: the reference engine.
        tracing = torch._C._get_tracing_state() is not None
        engine = "reference" if B == 0 or tracing else self.engine
        weights = [self._weights(k) for k in range(self.num_layers * D)]
        y, finals, gates = functional.stacked(x, states, weights, batch_sizes, self._options(),
                                              spec, engine, return_gates)
        state = [torch.stack([f[i] for f in finals]) for i in range(len(finals[0]))]
        if unsorted_idx is not None:
            state = [s.index_select(1, unsorted_idx) for s in state]
            if gates is not None:
                gates = {k: g.index_select(2, unsorted_idx) for k, g in gates.items()}
        if packed:
            out: Any = PackedSequence(pack_padded_sequence(y, lengths).data, batch_sizes,
                                      sorted_idx, unsorted_idx)
        elif unbatched:
            out = y.squeeze(1)
            state = [s.squeeze(1) for s in state]
            if gates is not None:
                gates = {k: g.squeeze(2) for k, g in gates.items()}
        else:
            out = y.transpose(0, 1) if self.batch_first else y
        result = (out, tuple(state) if self.mode == "LSTM" else state[0])
        return result + (gates,) if return_gates else result

    # --- description ------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as JSON-serialisable values (see ``gatedrnn.from_config``)."""
        cfg: dict[str, Any] = {"type": type(self).__name__}
        for key in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                    "bidirectional", "engine", "layer_norm", "recurrent_dropout", "zoneout",
                    "weight_drop", "forget_bias", "init", "chrono_max_len"):
            cfg[key] = getattr(self, key)
        if self.mode == "LSTM":
            cfg.update(proj_size=self.proj_size, peephole=self.peephole,
                       zoneout_cell=self.zoneout_cell)
        elif self.mode == "GRU":
            cfg["reset_after"] = self.reset_after
        else:
            cfg["nonlinearity"] = self.nonlinearity
            for key in ("layer_norm", "recurrent_dropout", "zoneout", "weight_drop", "forget_bias",
                        "init", "chrono_max_len"):
                del cfg[key]
        cfg["dtype"] = str(self.weight_ih_l0.dtype).removeprefix("torch.")
        return cfg

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        defaults = {"proj_size": 0, "num_layers": 1, "bias": True, "batch_first": False,
                    "dropout": 0.0, "bidirectional": False}
        for key, default in defaults.items():
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)}"
        variants = {"engine": "auto", "reset_after": True, "layer_norm": False, "peephole": False,
                    "recurrent_dropout": 0.0, "zoneout": 0.0, "zoneout_cell": 0.0,
                    "weight_drop": 0.0, "forget_bias": None, "init": "torch",
                    "chrono_max_len": None, "nonlinearity": "tanh"}
        cfg = self.get_config()
        for key, default in variants.items():
            if key in cfg and cfg[key] != default:
                s += f", {key}={cfg[key]!r}"
        return s


class LSTM(RNNBase):
    """Drop-in ``torch.nn.LSTM``; equations in ``gatedrnn.cells.lstm_cell``.

    Extra keyword-only options: engine, layer_norm, peephole, recurrent_dropout, zoneout,
    zoneout_cell, weight_drop, forget_bias, init, chrono_max_len (see the README).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__("LSTM", *args, **kwargs)


class GRU(RNNBase):
    """Drop-in ``torch.nn.GRU``; equations in ``gatedrnn.cells.gru_cell``.

    ``reset_after=False`` gives Cho et al.'s original GRU (Keras' reset_after=False).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "proj_size" in kwargs or len(args) > 7:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        for key in ("peephole", "zoneout_cell"):
            if key in kwargs:
                raise TypeError(f"GRU got an unexpected keyword argument '{key}' (LSTM only)")
        super().__init__("GRU", *args, **kwargs)


class RNN(RNNBase):
    """Drop-in ``torch.nn.RNN`` (Elman, tanh or relu), the ungated baseline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        args = list(args)
        nonlinearity = args.pop(3) if len(args) > 3 else kwargs.pop("nonlinearity", "tanh")
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        if len(args) > 7:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        allowed = {"engine"}
        for key in kwargs:
            if key not in allowed and key not in ("num_layers", "bias", "batch_first", "dropout",
                                                   "bidirectional", "device", "dtype",
                                                   "input_size", "hidden_size"):
                raise TypeError(f"RNN got an unexpected keyword argument '{key}'")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_" + nonlinearity.upper(), *args, **kwargs)


def from_config(config: dict[str, Any]) -> RNNBase:
    """Build a module from ``module.get_config()``; the inverse of get_config.

    Example:
        >>> import gatedrnn
        >>> gatedrnn.from_config(gatedrnn.GRU(3, 5, reset_after=False).get_config())
        GRU(3, 5, reset_after=False)
    """
    cfg = dict(config)
    kind = cfg.pop("type", None)
    classes = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}
    if kind not in classes:
        raise ValueError(f"config 'type' must be one of {sorted(classes)}, got {kind!r}")
    dtype = cfg.pop("dtype", None)
    if dtype is not None:
        if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise ValueError(f"config 'dtype' is not a torch dtype: {dtype!r}")
        cfg["dtype"] = getattr(torch, dtype)
    return classes[kind](**cfg)
