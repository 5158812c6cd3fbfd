"""Under CPU autocast, engine="auto" gives torch.nn's outputs: the same dtypes and the same bits
(and where torch's op fails, the LSTM's float16 training, float32 math).

torch's recurrent ops run their products in the autocast dtype under autocast, and the LSTM's and
the RNN's return it; the fused engines compute in float32. So where torch has an op for the
call, auto runs it, whichever route (the streaming step, the lean path, the general path) would
otherwise take the call.
"""

from __future__ import annotations

import pytest
import torch

import gatedrnn
from gatedrnn.engines import route

SHAPES = [(5, 3, 8), (1, 1, 8), (3, 1, 8), (8,)]  # (T, B, I), streaming, lean, unbatched cell-size


def _pair(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(8, 16)
    ours = getattr(gatedrnn, name)(8, 16)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_modules_give_torch_nns_outputs_under_autocast(name: str, grad: bool, dtype) -> None:
    ref, ours = _pair(name)
    if name == "LSTM" and grad and dtype == torch.float16:
        for shape in ((5, 3, 8), (40, 3, 8), (2, 1, 8), (5, 64, 8)):  # whatever the table picks
            x = torch.randn(shape)
            with torch.autocast("cpu", dtype=dtype):
                with pytest.raises(RuntimeError, match="primitive"):
                    ref(x)  # torch 2.13's oneDNN LSTM: no float16 training on the CPU
                y = ours(x)[0]  # the float32 math instead: never worse than torch.nn
            y.sum().backward()
            assert ours.last_engine != "native"
            torch.testing.assert_close(y, ref.float()(x)[0], rtol=1e-5, atol=1e-6)
        return
    for shape in SHAPES[:3]:
        x = torch.randn(shape)
        for _ in range(2):  # the first call decides the route, the second takes the cached one
            with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=dtype):
                a, b = ref(x)[0], ours(x)[0]
            assert a.dtype == b.dtype and torch.equal(a, b), (shape, ours.last_engine)
            assert ours.last_engine == "native"
        # outside autocast the same signature takes its own route again
        with torch.set_grad_enabled(grad):
            assert ours(x)[0].dtype == torch.float32


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells_give_torch_nns_outputs_under_autocast(name: str, grad: bool) -> None:
    ref, ours = _pair(name)
    for shape in ((3, 8), (1, 8), (8,)):
        x = torch.randn(shape)
        for _ in range(2):
            with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
                a, b = _first(ref(x)), _first(ours(x))
            assert a.dtype == b.dtype and torch.equal(a, b), shape


def test_an_explicit_engine_keeps_its_float32_math() -> None:
    ref, ours = _pair("LSTM")
    ours.engine = "fused"
    x = torch.randn(5, 3, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = ours(x)[0]
    assert y.dtype == torch.float32 and ours.last_engine == "fused"
    assert route.of(ours, x) is None  # (outside autocast this signature has no route yet)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("make", [
    lambda: gatedrnn.LSTM(8, 16, layer_norm=True), lambda: gatedrnn.GRU(8, 16, engine="fused"),
    lambda: gatedrnn.MinGRU(8, 16), lambda: gatedrnn.SLSTM(8, 16)], ids=["ln", "fused", "mingru", "slstm"])
def test_what_torch_has_no_op_for_keeps_float32_math(make, dtype) -> None:
    """The fused kernels never see autocast's half-precision products (numba reads no float16)."""
    torch.manual_seed(0)
    m, x = make(), torch.randn(5, 3, 8)
    want = m(x)[0]
    with torch.autocast("cpu", dtype=dtype):
        got = m(x)[0]
    got.sum().backward()
    assert got.dtype == torch.float32 and torch.equal(got, want)
