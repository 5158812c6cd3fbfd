"""What a gatedrnn module runs while ``torch.onnx.export`` or ``torch.export.export`` traces it.

The eager engines loop in Python or in numba, which no exporter can trace into a graph that works
for other sequence lengths. So while exporting, the modules' forward (``gatedrnn.modules.base``)
hands over to ``export_forward``, which builds the same network from ops the exporters understand:

- ONNX export, either exporter: ONNX's own LSTM / GRU / RNN operators, one per layer (both
  directions in one op). They express everything torch.nn has plus peepholes (input P) and the
  reset-before GRU (``linear_before_reset=0``). Gate order and weight layout are translated here.
  - dynamo=True (the default in torch 2.13): ``torch.onnx.ops.symbolic_multi_out``.
  - dynamo=False (TorchScript): an ``autograd.Function`` whose ``symbolic`` emits the op.
- Options no ONNX operator has (layer_norm, proj_size, zoneout in evaluation) and plain
  ``torch.export``: a ``scan`` over ``gatedrnn.equations.cells``, the same equations as eager, traced once
  with a symbolic sequence length. The dynamo ONNX exporter turns it into an ONNX ``Scan``; the
  TorchScript exporter cannot, so it refuses with an error that names the option.
- The cells ONNX has no operator for (MinGRU, MinLSTM, SLSTM, any declared cell): always the scan
  over their equations (``torch.export``: a ``scan`` node per layer and direction; the dynamo ONNX
  exporter: an ONNX ``Scan``), gates included with ``return_gates``; the TorchScript exporter is
  refused, as it would record the loop unrolled at the traced length.

Random options in training mode (dropout, recurrent_dropout, zoneout, weight_drop) are refused:
an exported graph cannot reproduce gatedrnn's masks, so ``model.eval()`` first. PackedSequence
inputs are refused (pytorch #49936): export with padded tensors.

ONNX layouts (the ONNX operator specification, https://onnx.ai/onnx/operators/onnx__LSTM.html and
onnx__GRU.html): LSTM gates i, o, f, c and peepholes i, o, f; GRU gates z, r, h;
W (D, G·H, I), R (D, G·H, H), B (D, 2·G·H) = [W_b, R_b]; Y (T, D, B, H), Y_h / Y_c (D, B, H).

Example:
    >>> import io, onnxruntime, torch, gatedrnn
    >>> model = torch.nn.Sequential(gatedrnn.GRU(3, 4, num_layers=2, reset_after=False)).eval()
    >>> buf = io.BytesIO()
    >>> torch.onnx.export(model, (torch.randn(5, 2, 3),), buf, dynamo=False, input_names=["x"],
    ...                   dynamic_axes={"x": {0: "T", 1: "B"}})
    >>> session = onnxruntime.InferenceSession(buf.getvalue())
    >>> x = torch.randn(7, 3, 3)  # another length and batch size
    >>> y_onnx = session.run(None, {"x": x.numpy()})[0]
    >>> torch.allclose(torch.from_numpy(y_onnx), model(x)[0], atol=1e-5)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..equations.kinds import CELLS
from ..modules import checks
from ..modules.quantized import _QuantizedBase

# ONNX's block order, as indices into torch.nn's blocks (LSTM i|f|g|o, GRU r|z|n).
_ONNX_ORDER = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN_TANH": [0], "RNN_RELU": [0]}
_PEEPHOLE_ORDER = [0, 2, 1]  # gatedrnn rows i, f, o -> ONNX i, o, f
_ONNX_OP = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}
_RANDOM_OPTIONS = ("dropout", "recurrent_dropout", "zoneout", "zoneout_cell", "weight_drop")
# The int8 modules' export: ONNX Runtime's int8 LSTM, else their float32 weights. It builds on this
# file, so ``gatedrnn.export.quantized`` installs it here when imported (``gatedrnn.export`` does).
_int8_export: Callable[..., Any] | None = None


def set_int8_export(export: Callable[..., Any]) -> None:
    global _int8_export
    _int8_export = export


def export_forward(module: Any, input: Any, hx: Any = None, return_gates: bool = False) -> Any:
    """``module(input, hx, return_gates)`` built from exportable ops; returns what ``forward``
    returns. The one entry point of the exporters, for every sequence module.

    The house's forward (``gatedrnn.modules.base``) calls it while ``torch.onnx.is_in_onnx_export()``
    or ``torch.compiler.is_exporting()`` is true (``gatedrnn.export`` installs it there); it is not
    meant to be called directly. The torch.nn subclasses do not record gates while exporting.

    Example:
        >>> import torch, gatedrnn
        >>> lstm = gatedrnn.LSTM(3, 4, peephole=True).eval()
        >>> ep = torch.export.export(lstm, (torch.randn(6, 2, 3),))
        >>> x = torch.randn(6, 2, 3)
        >>> torch.allclose(ep.module()(x)[0], lstm(x)[0], atol=1e-6)
        True
        >>> rnn = gatedrnn.MinGRU(3, 4, num_layers=2, bidirectional=True).eval()
        >>> T = torch.export.Dim("T")
        >>> ep = torch.export.export(rnn, (torch.randn(6, 2, 3),), dynamic_shapes=({0: T},))
        >>> x = torch.randn(11, 2, 3)
        >>> torch.allclose(ep.module()(x)[0], rnn(x)[0], atol=1e-6)
        True
    """
    name = type(module).__name__
    if isinstance(module, _QuantizedBase) and _int8_export is not None:  # ``export.quantized``
        return _int8_export(module, input, hx, return_gates)
    _refuse_unexportable(module, input)
    if getattr(module, "kind", ""):  # a module built from a declaration (MinGRU, ...)
        return _declared_forward(module, input, hx, return_gates)
    # The TorchScript tracer records sizes as tensors, so a Python comparison of them would warn
    # (TracerWarning) and bake the traced size in; it validates nothing the ONNX model keeps.
    if not torch.jit.is_tracing():
        args = checks.module_args(module, input, hx)  # torch.nn's checks and exceptions
        x, states, unbatched = args.x, args.state, args.unbatched  # (T, B, I), each (L·D, B, ·)
    else:
        x, unbatched = _time_major(module, input)
        states = _initial_states(module, hx, x, unbatched)
    onnx = torch.onnx.is_in_onnx_export()
    loop_only = _loop_only_options(module)
    if onnx and not loop_only:
        y, finals = _native_stack(module, x, states, dynamo=torch.compiler.is_exporting())
    elif onnx and not torch.compiler.is_exporting():
        raise RuntimeError(
            f"{name}({', '.join(loop_only)}) has no ONNX operator, and the TorchScript-based "
            "exporter (dynamo=False) cannot express the loop that computes it. Export with "
            "torch.onnx.export(..., dynamo=True), which emits an ONNX Scan."
        )
    else:
        y, finals, _ = _scan_stack(module, x, states, record=False)
    return _shaped(module, y, finals, unbatched, None)


def _declared_forward(module: Any, input: Any, hx: Any, return_gates: bool) -> Any:
    """A module without an ONNX operator (MinGRU, MinLSTM, SLSTM, ...): a scan per layer and
    direction over its cell (``kinds.CellKind.step``), with its own checks."""
    name = type(module).__name__
    if torch.onnx.is_in_onnx_export() and not torch.compiler.is_exporting():
        raise RuntimeError(
            f"{name} cannot be exported with the TorchScript-based exporter (dynamo=False): it "
            "would record the time loop unrolled at the traced length, and it cannot emit an ONNX "
            "Scan. Export with torch.onnx.export(..., dynamo=True) (the default), which emits a "
            "Scan that runs at any sequence length."
        )
    checks.check_input(name, input, module.input_size, module.weight_ih_l0.dtype, packed=False)
    x, unbatched = _time_major(module, input)
    checks.check_length(name, x.shape[0])
    states = module._initial_state(hx, x, unbatched, None)  # each (L·D, B, H)
    y, finals, gates = _scan_stack(module, x, states, record=return_gates)
    return _shaped(module, y, finals, unbatched, gates)


def _time_major(module: Any, input: Tensor) -> tuple[Tensor, bool]:
    """x (T, B, I) and whether the input was unbatched."""
    if input.dim() == 2:
        return input.unsqueeze(1), True
    return (input.transpose(0, 1) if module.batch_first else input), False


def _shaped(module: Any, y: Tensor, finals: list[Tensor], unbatched: bool,
            gates: dict[str, Tensor] | None) -> Any:
    """The output in the input's form: ``(output, state)``, and the gates when recorded."""
    if unbatched:
        y, finals = y.squeeze(1), [s.squeeze(1) for s in finals]
        gates = None if gates is None else {g: v.squeeze(2) for g, v in gates.items()}
    elif module.batch_first:
        y = y.transpose(0, 1)
    result = (y, finals[0] if len(finals) == 1 else tuple(finals))
    return result if gates is None else result + (gates,)


def _refuse_unexportable(module: Any, input: Any) -> None:
    name = type(module).__name__
    if isinstance(input, torch.nn.utils.rnn.PackedSequence):
        raise NotImplementedError(
            f"{name}: PackedSequence inputs cannot be exported (the exporters cannot trace "
            "pack_padded_sequence, pytorch #49936); export the module with the padded tensor"
        )
    if module.training:
        on = [k for k in _RANDOM_OPTIONS if getattr(module, k, 0.0) > 0]
        if module.num_layers == 1 and "dropout" in on:
            on.remove("dropout")  # as in torch.nn: dropout acts between layers, so here never
        if on:
            raise RuntimeError(
                f"{name} is in training mode with {', '.join(f'{k}={getattr(module, k)}' for k in on)}: "
                "an exported graph cannot reproduce these random masks. Call model.eval() before "
                "exporting."
            )


def _loop_only_options(module: Any) -> list[str]:
    """The options set on ``module`` that ONNX's LSTM/GRU/RNN operators cannot express."""
    on = []
    if module.layer_norm:
        on.append("layer_norm=True")
    if module.proj_size:
        on.append(f"proj_size={module.proj_size}")
    for key in ("zoneout", "zoneout_cell"):
        if getattr(module, key, 0.0) > 0:
            on.append(f"{key}={getattr(module, key)}")
    if getattr(module, "num_heads", 1) > 1:  # (ONNX's R is dense; the scan's cells take heads)
        on.append(f"num_heads={module.num_heads}")
    return on


def _initial_states(module: Any, hx: Any, x: Tensor, unbatched: bool) -> list[Tensor]:
    """[h0] or [h0, c0], each (L·D, B, ·): hx as given (a trace checks nothing), or zeros."""
    lstm = module.mode == "LSTM"
    LD = module.num_layers * (2 if module.bidirectional else 1)
    sizes = [module.proj_size or module.hidden_size] + ([module.hidden_size] if lstm else [])
    if hx is None:
        return [x.new_zeros(LD, x.shape[1], s) for s in sizes]
    parts = list(hx) if lstm else [hx]
    return [p.unsqueeze(1) for p in parts] if unbatched else parts


# --- the loop: a scan over gatedrnn.equations.cells --------------------------------------------------------


def _cell(module: Any) -> Any:
    """The step the scan runs: the cell's equations (``kinds.CellKind.step``); for the torch.nn
    cells with their options, evaluation-mode zoneout as the expectation p·old + (1 − p)·new (a
    float p says so to the cell)."""
    opts = module._options()
    kind = CELLS[opts.mode]
    if not kind.variants:
        return kind.step
    zone_h, zone_c = opts.zoneout or None, opts.zoneout_cell or None

    def cell(x_t: Tensor, s: tuple[Tensor, ...], weights: dict[str, Tensor]
             ) -> tuple[tuple[Tensor, ...], dict[str, Tensor]]:
        return kind.step(x_t, s, weights, opts, zoneout_h=zone_h, zoneout_c=zone_c)

    return cell


def _scan_stack(module: Any, x: Tensor, states: list[Tensor], record: bool
                ) -> tuple[Tensor, list[Tensor], dict[str, Tensor] | None]:
    """The layer stack as one ``scan`` per layer and direction: y (T, B, D·H_out), the final
    state's parts each (L·D, B, ·), and when ``record`` the gates each (L·D, T, B, H)."""
    cell = _cell(module)
    D = 2 if module.bidirectional else 1
    layer_in = x
    finals: list[list[Tensor]] = [[] for _ in states]
    recorded: list[dict[str, Tensor]] = []
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            y, final, gates = scan_cell(cell, layer_in, tuple(s[k] for s in states),
                                        module._weights(k), reverse=d == 1, record=record)
            outs.append(y)  # (T, B, H_out)
            for acc, s in zip(finals, final):
                acc.append(s)
            if gates is not None:
                recorded.append(gates)
        # No dropout between layers: in training mode with dropout the export was refused.
        layer_in = outs[0] if D == 1 else torch.cat(outs, dim=-1)  # (T, B, D·H_out)
    gates_out = None
    if record:
        gates_out = {g: torch.stack([r[g] for r in recorded]) for g in (recorded[0] if recorded else ())}
    return layer_in, [torch.stack(acc) for acc in finals], gates_out


def scan_cell(cell: Any, x: Tensor, state: tuple[Tensor, ...], w: dict[str, Tensor | None],
              reverse: bool, record: bool = False
              ) -> tuple[Tensor, list[Tensor], dict[str, Tensor] | None]:
    """``cell`` (x_t, state, weights) -> (new state, gates) run over time as one ``scan``.

    x (T, B, I), each state (B, ·); weights that are None are left out of the cell's dict.
    Returns y (T, B, ·) = the first state entry at every step, the final state, and, when
    ``record``, the gates each stacked to (T, B, ·) (else None). Reverse runs from t = T−1 to 0.
    """
    # The operator itself, not torch._higher_order_ops.scan.scan: that wrapper compiles the body
    # with dynamo and caches it across calls, and in torch 2.13 re-checking a cached body's guards
    # against the next layer's shapes pins the symbolic batch size ("marked B as dynamic but your
    # code specialized it"). The operator traces the body directly. Both are private in 2.13, so
    # the import is here, where only an export reaches it.
    from torch._higher_order_ops.scan import scan_op

    names = [k for k, v in w.items() if v is not None]
    n = len(state)
    gate_names: list[str] = []

    def body(*args: Tensor) -> list[Tensor]:
        # args: the carried state, x_t (B, I), then the weights (scan's additional inputs).
        weights = dict(zip(names, args[n + 1:]))
        new, gates = cell(args[n], tuple(args[:n]), weights)
        gate_names[:] = list(gates) if record else []
        # A scan output may not alias its carry or another output, hence the clones.
        return [*new, new[0].clone(), *(gates[k].clone() for k in gate_names)]

    xs = x.flip(0) if reverse else x  # (T, B, I), in the order of the steps
    out = scan_op(body, list(state), [xs], tuple(w[k] for k in names))
    final, ys = list(out[:n]), [y.flip(0) if reverse else y for y in out[n:]]
    return ys[0], final, dict(zip(gate_names, ys[1:])) if record else None


# --- ONNX's own operators --------------------------------------------------------------------------


def _onnx_blocks(t: Tensor, mode: str) -> Tensor:
    """Reorder a (G·H, ...) weight or (G·H,) bias from torch.nn's gate blocks to ONNX's."""
    order = _ONNX_ORDER[mode]
    if len(order) == 1:
        return t
    H = t.shape[0] // len(order)
    # Slices rather than chunk(): ONNX's constant folding folds Slice into the weights, not Split.
    return torch.cat([t[j * H:(j + 1) * H] for j in order], dim=0)


def _native_stack(module: Any, x: Tensor, states: list[Tensor], dynamo: bool
                  ) -> tuple[Tensor, list[Tensor]]:
    """One ONNX recurrent op per layer; returns y (T, B, D·H), finals [(L·D, B, H), ...]."""
    mode, H = module.mode, module.hidden_size
    D = 2 if module.bidirectional else 1
    attrs: dict[str, Any] = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if mode == "GRU":
        attrs["linear_before_reset"] = int(module.reset_after)
    elif mode != "LSTM":
        attrs["activations"] = ["Tanh" if mode == "RNN_TANH" else "Relu"] * D
    layer_in = x
    finals: list[list[Tensor]] = [[] for _ in states]
    for layer in range(module.num_layers):
        ws = [module._weights(layer * D + d) for d in range(D)]
        W = torch.stack([_onnx_blocks(w["w_ih"], mode) for w in ws])  # (D, G·H, I)
        R = torch.stack([_onnx_blocks(w["w_hh"], mode) for w in ws])  # (D, G·H, H)
        B = None
        if module.bias:
            B = torch.stack([torch.cat([_onnx_blocks(w["b_ih"], mode), _onnx_blocks(w["b_hh"], mode)])
                             for w in ws])  # (D, 2·G·H)
        P = None
        if module.peephole:
            P = torch.stack([w["peephole"][_PEEPHOLE_ORDER].reshape(-1) for w in ws])  # (D, 3H)
        init = [s[layer * D:(layer + 1) * D] for s in states]  # each (D, B, H)
        # ONNX inputs: X, W, R, B, sequence_lens (absent: every row runs all T steps), initial
        # state(s), and for the LSTM the peepholes P.
        inputs = [layer_in, W, R, B, None, *init] + ([P] if mode == "LSTM" else [])
        y, *final = _recurrent_op(_ONNX_OP[mode], inputs, attrs, len(states) + 1, dynamo)
        layer_in = y.transpose(1, 2).flatten(2)  # (T, D, B, H) -> (T, B, D·H)
        for acc, s in zip(finals, final):
            acc.append(s)  # (D, B, H)
    return layer_in, [torch.cat(acc) for acc in finals]


def _recurrent_op(op: str, inputs: list[Tensor | None], attrs: dict[str, Any], n_out: int,
                  dynamo: bool) -> list[Tensor]:
    """Emit ONNX ``op``; its outputs Y (T, D, B, H) and the final state(s) (D, B, H)."""
    if dynamo:
        if not hasattr(torch.onnx, "ops"):
            raise RuntimeError("exporting gatedrnn with dynamo=True needs torch>=2.8 (torch.onnx.ops); "
                               "use torch.onnx.export(..., dynamo=False)")
        x, h0 = inputs[0], inputs[5]
        assert x is not None and h0 is not None  # X and the initial state are always given
        T, (D, B, H) = x.shape[0], h0.shape
        shapes = [(T, D, B, H)] + [(D, B, H)] * (n_out - 1)
        return list(torch.onnx.ops.symbolic_multi_out(
            op, inputs, attrs, dtypes=[x.dtype] * n_out, shapes=shapes))
    # The tracer keeps only plain scalars as non-tensor arguments, so the attributes travel as
    # ints and strings, in a fixed order.
    reset = attrs.get("linear_before_reset", -1)
    activation = attrs.get("activations", [""])[0]
    return list(_TorchScriptOp.apply(op, attrs["direction"], attrs["hidden_size"], reset, activation,
                                     *inputs))


class _TorchScriptOp(torch.autograd.Function):
    """An ONNX recurrent op for the TorchScript exporter, which calls ``symbolic`` to emit it.

    ``forward`` only has to give the tracer tensors of the right shapes; the values come from ONNX.
    """

    @staticmethod
    def forward(ctx: Any, op: str, direction: str, hidden: int, reset: int, activation: str,
                *inputs: Tensor | None) -> tuple[Tensor, ...]:
        x, h0 = inputs[0], inputs[5]  # (T, B, I), (D, B, H)
        assert x is not None and h0 is not None  # always given (see _native_stack)
        y = x.new_zeros(x.shape[0], *h0.shape)
        return (y,) + tuple(h0.new_zeros(h0.shape) for _ in range(2 if op.endswith("LSTM") else 1))

    @staticmethod
    def symbolic(g: Any, op: str, direction: str, hidden: int, reset: int, activation: str,
                 *inputs: Any) -> Any:
        D = 2 if direction == "bidirectional" else 1
        kwargs: dict[str, Any] = {"direction_s": direction, "hidden_size_i": hidden}
        if reset >= 0:
            kwargs["linear_before_reset_i"] = reset
        if activation:
            kwargs["activations_s"] = [activation] * D
        values = [_absent(g) if v is None else v for v in inputs]
        return g.op(op, *values, outputs=3 if op.endswith("LSTM") else 2, **kwargs)


def _absent(g: Any) -> Any:
    """An omitted optional ONNX input, the way the TorchScript exporter spells one."""
    node = g.op("prim::Constant")
    node.setType(torch._C.OptionalType.ofTensor())
    return node
