"""ONNX export of int8 modules, run in ONNX Runtime against the module: ONNX Runtime's
DynamicQuantizeLSTM for the LSTM, float32 weights with a warning for the rest."""

from __future__ import annotations

import io
import warnings

import onnx
import onnxruntime
import pytest
import torch

import gatedrnn


def _export(model: torch.nn.Module, x: torch.Tensor, dynamo: bool) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        if dynamo:
            dims = {0: torch.export.Dim("T"), 1: torch.export.Dim("B")} if x.dim() == 3 else None
            program = torch.onnx.export(model, (x,), dynamo=True, verbose=False,
                                        dynamic_shapes=(dims,) if dims else None)
            return program.model_proto.SerializeToString()
        buf = io.BytesIO()
        axes = {0: "T", 1: "B"} if x.dim() == 3 else {0: "B"}
        torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"], dynamic_axes={"x": axes})
        return buf.getvalue()


def _ops(data: bytes) -> set[tuple[str, str]]:
    return {(n.domain, n.op_type) for n in onnx.load_from_string(data).graph.node}


def _ort(data: bytes, x: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(data)
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


LSTMS = [dict(num_layers=2, bidirectional=True), dict(peephole=True, batch_first=True),
         dict(bias=False)]


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
@pytest.mark.parametrize("kw", LSTMS)
def test_lstm_exports_to_dynamic_quantize_lstm(kw: dict, dynamo: bool) -> None:
    torch.manual_seed(0)
    q = gatedrnn.quantize(gatedrnn.LSTM(16, 32, **kw))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # stays int8: no float32 fallback warning
        data = _export(q, torch.randn(5, 2, 16), dynamo)
    assert ("com.microsoft", "DynamicQuantizeLSTM") in _ops(data)
    assert not {op for _, op in _ops(data)} & {"LSTM", "Scan"}
    int8 = [t for t in onnx.load_from_string(data).graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8  # the weights stay int8 in the file
    x = torch.randn(9, 3, 16)  # another length and batch size
    with torch.no_grad():
        y = q(x)[0]
    # ONNX Runtime quantizes the activations per tensor (uint8, zero point), the module per row:
    # two int8 schemes on the same int8 weights; measured ≤ 0.004 over these configurations.
    assert float((_ort(data, x) - y).abs().max()) < 0.015


@pytest.mark.parametrize("make", [lambda: gatedrnn.GRU(8, 16, num_layers=2),
                                  lambda: gatedrnn.RNN(8, 16, nonlinearity="relu")])
def test_gru_rnn_export_float32_with_a_warning(make) -> None:
    torch.manual_seed(0)
    q = gatedrnn.quantize(make())
    with pytest.warns(UserWarning, match="float32 weights.*no int8 operator"):
        data = _export(q, torch.randn(5, 2, 8), dynamo=False)
    x = torch.randn(7, 3, 8)
    want = gatedrnn.dequantize(q)  # the exported model is the float32 network of the int8 weights
    with torch.no_grad():
        torch.testing.assert_close(_ort(data, x), want(x)[0], atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_proj_size_exports_a_float32_scan_with_a_warning() -> None:
    torch.manual_seed(0)
    q = gatedrnn.quantize(gatedrnn.LSTM(8, 16, proj_size=4))
    with pytest.warns(UserWarning, match="no proj_size"):
        data = _export(q, torch.randn(5, 2, 8), dynamo=True)
    x = torch.randn(7, 3, 8)
    with torch.no_grad():
        torch.testing.assert_close(_ort(data, x), gatedrnn.dequantize(q)(x)[0], atol=2e-5, rtol=1e-4)


def test_cell_exports_its_int8_scheme() -> None:
    torch.manual_seed(0)
    q = gatedrnn.quantize(gatedrnn.GRUCell(6, 8))
    data = _export(q, torch.randn(2, 6), dynamo=False)
    x = torch.randn(5, 6)
    # the reference engine's ops, traced: the same per-row scheme, so the same numbers
    torch.testing.assert_close(_ort(data, x), q(x), atol=1e-6, rtol=1e-6)
