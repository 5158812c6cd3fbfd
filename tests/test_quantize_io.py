"""Quantized models kept and moved: state_dict, torch.save/torch.load (weights_only),
interop.save_model/load_model, dequantize, torch.ao's quantize_dynamic, torch.nn's modules,
linear layers and streaming."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import gatedrnn
from gatedrnn.equations.quantized import quantize_rows
from gatedrnn.interop.io import CheckpointError, load_model, save_model
from gatedrnn.interop.streaming import Stream

FLOATS = [
    lambda: gatedrnn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, batch_first=True),
    lambda: gatedrnn.LSTM(3, 6, peephole=True, layer_norm=True, zoneout=0.1),
    lambda: gatedrnn.GRU(3, 6, reset_after=False, bias=False, num_heads=2),
    lambda: gatedrnn.RNN(3, 6, nonlinearity="relu", num_layers=2),
    lambda: gatedrnn.MinGRU(3, 6), lambda: gatedrnn.MinLSTM(3, 6, bidirectional=True),
    lambda: gatedrnn.SLSTM(3, 6, num_heads=2),
]


def _out(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return m(x)[0]


@pytest.mark.parametrize("make", FLOATS)
def test_save_load_round_trips(make, tmp_path: Path) -> None:
    torch.manual_seed(0)
    q = gatedrnn.quantize(make())
    x = torch.randn(2, 5, 3) if q.batch_first else torch.randn(5, 2, 3)
    y = _out(q, x)
    # state_dict into a module built from the config
    fresh = type(q)(**{k: v for k, v in q.get_config().items() if k not in ("type", "dtype")})
    fresh.load_state_dict(q.state_dict())
    assert torch.equal(_out(fresh.eval(), x), y)
    # torch.save of the module, torch.load with weights_only=True
    buf = io.BytesIO()
    torch.save(q, buf)
    buf.seek(0)
    assert torch.equal(_out(torch.load(buf, weights_only=True), x), y)
    # safetensors: int8 tensors and their scales
    save_model(q, tmp_path / "q.safetensors")
    back = load_model(tmp_path / "q.safetensors")
    assert type(back) is type(q) and back.get_config() == q.get_config()
    assert torch.equal(_out(back, x), y)
    assert back.weight_ih_l0.dtype == torch.int8


def test_load_model_refuses_bad_scales(tmp_path: Path) -> None:
    q = gatedrnn.quantize(gatedrnn.GRU(3, 4))
    save_model(q, tmp_path / "q.safetensors")
    bad = gatedrnn.quantize(gatedrnn.GRU(3, 4))
    bad.weight_ih_l0_scale = torch.ones(5)  # one scale too many
    save_model(bad, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="scale"):
        load_model(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError):  # a float GRU's file does not load into a quantized one
        save_model(gatedrnn.GRU(3, 4), tmp_path / "f.safetensors")
        load_model(tmp_path / "f.safetensors", gatedrnn.quantize(gatedrnn.GRU(3, 4)))


@pytest.mark.parametrize("make", FLOATS + [lambda: gatedrnn.LSTMCell(3, 6, layer_norm=True),
                                           lambda: gatedrnn.GRUCell(3, 6), lambda: gatedrnn.RNNCell(3, 6)])
def test_dequantize_round_trip(make) -> None:
    q = gatedrnn.quantize(make())
    f = gatedrnn.dequantize(q)
    assert type(f) is q._FLOAT and not f.training
    for name, t in q.named_buffers():
        if t.dtype == torch.int8:  # W = W_q · s, and quantizing that gives W_q and s back
            w = getattr(f, name)
            torch.testing.assert_close(w, t.float() * getattr(q, name + "_scale").unsqueeze(-1))
            q2, s2 = quantize_rows(w)
            assert torch.equal(q2, t)
            torch.testing.assert_close(s2, getattr(q, name + "_scale"), rtol=1e-6, atol=0)
    assert torch.equal(gatedrnn.quantize(f).state_dict()["weight_ih" + ("" if "Cell" in type(f).__name__
                                                                        else "_l0")],
                       q.state_dict()["weight_ih" + ("" if "Cell" in type(f).__name__ else "_l0")])


def test_isinstance_and_model_level() -> None:
    net = nn.Sequential(gatedrnn.LSTM(3, 4), nn.Linear(4, 2))
    q = gatedrnn.quantize(net, linear=True)
    assert isinstance(q[0], gatedrnn.QuantizedLSTM) and not isinstance(q[0], nn.LSTM)
    assert isinstance(q[1], gatedrnn.QuantizedLinear)
    assert type(net[0]) is gatedrnn.LSTM  # a copy: the model itself is unchanged
    back = gatedrnn.dequantize(q)
    assert type(back[0]) is gatedrnn.LSTM and type(back[1]) is nn.Linear


def test_linear_is_exact_int8() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(12, 5)
    q = gatedrnn.QuantizedLinear.from_float(lin)
    x = torch.randn(2, 3, 12)
    x_q, x_s = quantize_rows(x)
    w_q, w_s = quantize_rows(lin.weight)
    want = (x_q.long() @ w_q.long().T).float() * x_s[..., None] * w_s + lin.bias
    torch.testing.assert_close(q(x), want.detach(), atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        y = lin(x)
    # against float32: at most 0.0125 of max |y| measured over 50 seeds
    assert float((q(x) - y).abs().max()) < 0.03 * float(y.abs().max())
    with pytest.raises(ValueError, match="float32"):
        q(x.double())


def test_torch_nn_modules_when_asked() -> None:
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, num_layers=2, proj_size=2, batch_first=True)
    net = nn.Sequential(ref)
    assert type(gatedrnn.quantize(net)[0]) is nn.LSTM  # not asked: left alone
    q = gatedrnn.quantize(net, modules={nn.LSTM})[0]
    want = gatedrnn.quantize(gatedrnn.interop.torch_nn.from_torch(ref))
    x = torch.randn(2, 4, 3)
    assert torch.equal(_out(q, x), _out(want, x))
    cell = gatedrnn.quantize(nn.GRUCell(3, 4), modules={nn.GRUCell})
    assert type(cell) is gatedrnn.QuantizedGRUCell


def test_subclass_is_left_float_with_a_warning() -> None:
    class MyGRU(gatedrnn.GRU):
        pass

    with pytest.warns(UserWarning, match="MyGRU"):
        q = gatedrnn.quantize(nn.Sequential(MyGRU(3, 4)))
    assert type(q[0]) is MyGRU


def test_quantize_dynamic_with_gatedrnn_classes() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(gatedrnn.GRU(3, 4), gatedrnn.LSTMCell(4, 4))
    with warnings.catch_warnings():  # torch's eager quantization API warns it is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        q = torch.ao.quantization.quantize_dynamic(net, {gatedrnn.GRU, gatedrnn.LSTMCell})
        skipped = torch.ao.quantization.quantize_dynamic(net, {nn.GRU, nn.LSTMCell})
    assert type(q[0]) is gatedrnn.QuantizedGRU and type(q[1]) is gatedrnn.QuantizedLSTMCell
    assert torch.equal(q[0].weight_hh_l0, gatedrnn.quantize(net[0]).weight_hh_l0)
    # torch matches its spec by exact type: gatedrnn's subclasses of nn.GRU are not nn.GRU there
    assert type(skipped[0]) is gatedrnn.GRU and type(skipped[1]) is gatedrnn.LSTMCell


@pytest.mark.parametrize("make", [lambda: gatedrnn.LSTM(3, 8, num_layers=2, proj_size=4),
                                  lambda: gatedrnn.GRU(3, 8, reset_after=False),
                                  lambda: gatedrnn.SLSTM(3, 8)])
def test_streaming_equals_whole_sequence(make) -> None:
    torch.manual_seed(0)
    q = gatedrnn.quantize(make())
    x = torch.randn(6, 1, 3)  # B = 1, the streaming case
    stream = Stream(q)
    ys = torch.stack([stream.step(x_t) for x_t in x])
    # x is quantized per (t, b) row and h per step, so steps and the whole call agree
    torch.testing.assert_close(ys, _out(q, x), atol=1e-6, rtol=0)
