"""What an int8 module (``gatedrnn.modules.quantized``) runs while an exporter traces it.

- ONNX export of a ``QuantizedLSTM`` without ``proj_size`` (and without layer norm, heads or
  zoneout, which ONNX's LSTM has no input for): one ONNX Runtime ``com.microsoft``
  ``DynamicQuantizeLSTM`` per layer, both directions in one op, its weights the module's int8
  weights and per-row scales unchanged (ONNX Runtime's contrib operator: W (D, I, 4H) and R (D, H, 4H)
  int8, transposed from torch's rows; W_scale, R_scale (D, 4H) one scale per row, zero points 0;
  gates in ONNX's order i, o, f, c). ONNX Runtime quantizes the activations itself (per tensor,
  uint8 with a zero point), so its outputs differ from the module's by about as much as two int8
  schemes do, not by rounding.
- Everything else (GRU, RNN, the newer cells, proj_size, layer norm, heads, ``torch.export``): the
  float32 network of the dequantized weights W = W_q · s, through the float path
  (``gatedrnn.export.graph``), with a warning that says the exported model is not int8: ONNX Runtime
  has no int8 operator for them (its quantizer rewrites LSTM only).

Example:
    >>> import io, warnings, onnxruntime, torch, gatedrnn
    >>> q = gatedrnn.quantize(gatedrnn.LSTM(3, 8, bidirectional=True))
    >>> buf = io.BytesIO()
    >>> torch.onnx.export(q, (torch.randn(5, 2, 3),), buf, dynamo=False, input_names=["x"],
    ...                   dynamic_axes={"x": {0: "T", 1: "B"}})
    >>> session = onnxruntime.InferenceSession(buf.getvalue())
    >>> [n.op_type for n in __import__("onnx").load_from_string(buf.getvalue()).graph.node
    ...  if n.domain == "com.microsoft"]
    ['DynamicQuantizeLSTM']
    >>> x = torch.randn(7, 3, 3)
    >>> y = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    >>> bool((y - q(x)[0]).abs().max() < 0.05)
    True
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
from torch import Tensor

from ..equations.quantized import dequantize_rows
from ..modules import checks
from ..modules.quantized import QuantizedLSTM, _TorchView
from . import graph

DQ_LSTM = "com.microsoft::DynamicQuantizeLSTM"


def export_forward(module: Any, input: Any, hx: Any = None, return_gates: bool = False) -> Any:
    """``module(input, hx)`` of an int8 module from exportable ops (see the module docstring)."""
    int8 = _int8_onnx_blockers(module)
    # (the TorchScript exporter passes return_gates as a traced value: only True asks for gates)
    if torch.onnx.is_in_onnx_export() and not int8 and return_gates is not True:
        return _int8_lstm(module, input, hx)
    why = ("ONNX Runtime has no int8 operator for it" if torch.onnx.is_in_onnx_export()
           else "this exporter has no int8 recurrent operator")
    if int8 and type(module) is QuantizedLSTM:
        why = f"ONNX Runtime's int8 LSTM has no {', '.join(int8)}"
    warnings.warn(f"{type(module).__name__} is exported with float32 weights (W = W_q · s): {why}. "
                  "The exported model computes the float32 network of the int8 weights.",
                  UserWarning, stacklevel=2)
    return graph.export_forward(_dequantized(module), input, hx, return_gates)


def _int8_onnx_blockers(module: Any) -> list[str]:
    """Why ``module`` has no DynamicQuantizeLSTM (empty: it has one)."""
    if type(module) is not QuantizedLSTM:
        return [type(module).__name__]
    on = [k for k in ("proj_size", "layer_norm", "zoneout", "zoneout_cell") if getattr(module, k)]
    return on + (["num_heads"] if int(module.num_heads) > 1 else [])


class _Dequantized(_TorchView):
    """The float32 module an int8 one stands for, as the float export path reads a module: its
    sizes and options, torch.nn's checks, and ``_weights(k)`` with W = W_q · s."""

    def __init__(self, q: Any) -> None:
        torch_cls = getattr(q._FLOAT, "_TORCH", torch.nn.RNNBase)
        super().__init__(q, torch_cls)
        for key, default in (("bias", True), ("dropout", 0.0), ("layer_norm", False),
                             ("peephole", False), ("zoneout", 0.0), ("zoneout_cell", 0.0),
                             ("num_heads", 1), ("reset_after", True), ("proj_size", 0)):
            setattr(self, key, getattr(q, key, default))
        self.training, self.recurrent_dropout, self.weight_drop = False, 0.0, 0.0
        declared = not hasattr(q._FLOAT, "_TORCH")
        self.kind = q.kind if declared else ""  # (the float path tells the two families so)
        self._options, self._q = q._options, q
        if declared:
            self._initial_state = q._initial_state

    def _weights(self, k: int) -> dict[str, Tensor | None]:
        w = self._q._int8_weights(self._q._suffixes[k])
        out: dict[str, Tensor | None] = {}
        for key, value in w.items():
            if key.endswith("_q"):
                scale = w[key[:-2] + "_s"]
                out[key[:-2]] = None if value is None or scale is None else dequantize_rows(value, scale)
            elif not key.endswith("_s"):
                out[key] = value
        return out


@functools.cache
def _view_class(name: str) -> type[_Dequantized]:
    return type(name, (_Dequantized,), {})  # named as the module, for the float path's messages


def _dequantized(module: Any) -> _Dequantized:
    return _view_class(type(module).__name__)(module)


def _int8_lstm(module: Any, input: Any, hx: Any) -> Any:
    """One DynamicQuantizeLSTM per layer; the output in the input's form, as ``forward``'s."""
    graph._refuse_unexportable(module, input)
    view = _dequantized(module)
    if not torch.jit.is_tracing():
        args = checks.module_args(view, input, hx)  # torch.nn's checks and exceptions
        x, states, unbatched = args.x, args.state, args.unbatched  # (T, B, I), each (L·D, B, H)
    else:
        x, unbatched = graph._time_major(view, input)
        states = graph._initial_states(view, hx, x, unbatched)
    H, D = module.hidden_size, 2 if module.bidirectional else 1
    attrs: dict[str, Any] = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    layer_in, finals = x, ([], [])  # type: tuple[Tensor, tuple[list[Tensor], list[Tensor]]]
    blocks = lambda t: graph._onnx_blocks(t, "LSTM")  # noqa: E731 - torch's i|f|g|o -> i|o|f|c
    for layer in range(module.num_layers):
        ws = [module._int8_weights(module._suffixes[layer * D + d]) for d in range(D)]
        W = torch.stack([blocks(w["w_ih_q"]).T for w in ws])  # (D, I, 4H) int8
        R = torch.stack([blocks(w["w_hh_q"]).T for w in ws])  # (D, H, 4H) int8
        W_s = torch.stack([blocks(w["w_ih_s"]) for w in ws])  # (D, 4H)
        R_s = torch.stack([blocks(w["w_hh_s"]) for w in ws])
        zero = torch.zeros(D, 4 * H, dtype=torch.int8)
        B = None
        if module.bias:
            B = torch.stack([torch.cat([blocks(w["b_ih"]), blocks(w["b_hh"])]) for w in ws])  # (D, 8H)
        P = None
        if module.peephole:
            P = torch.stack([w["peephole"][graph._PEEPHOLE_ORDER].reshape(-1) for w in ws])  # (D, 3H)
        init = [s[layer * D:(layer + 1) * D] for s in states]  # each (D, B, H)
        # DynamicQuantizeLSTM's inputs: ONNX LSTM's (X, W, R, B, sequence_lens, initial_h,
        # initial_c, P), then W_scale, W_zero_point, R_scale, R_zero_point.
        inputs = [layer_in, W, R, B, None, *init, P, W_s, zero, R_s, zero]
        y, h_n, c_n = graph._recurrent_op(DQ_LSTM, inputs, attrs, 3, torch.compiler.is_exporting())
        layer_in = y.transpose(1, 2).flatten(2)  # (T, D, B, H) -> (T, B, D·H)
        finals[0].append(h_n)
        finals[1].append(c_n)
    return graph._shaped(view, layer_in, [torch.cat(f) for f in finals], unbatched, None)


graph.set_int8_export(export_forward)
