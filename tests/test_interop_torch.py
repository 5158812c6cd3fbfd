"""torch.nn ↔ gatedrnn conversion: same outputs and states as the torch.nn peer, both ways."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.interop import torch_nn
from gatedrnn.interop.torch_nn import from_torch, to_torch

I, H = 3, 5


def flat(out: Any) -> list[torch.Tensor]:
    return torch.utils._pytree.tree_leaves(out)


@st.composite
def torch_modules(draw: st.DrawFn) -> torch.nn.Module:
    kind = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
    kw: dict[str, Any] = dict(num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                              batch_first=draw(st.booleans()), bias=draw(st.booleans()),
                              dtype=draw(st.sampled_from([torch.float32, torch.float64])))
    if kind == "LSTM":
        kw["proj_size"] = draw(st.sampled_from([0, 2]))
    if kind == "RNN":
        kw["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    torch.manual_seed(draw(st.integers(0, 99)))
    return getattr(torch.nn, kind)(I, H, **kw).eval()


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")  # torch's own
@settings(max_examples=20, deadline=None)
@given(ref=torch_modules())
def test_from_torch_and_back_compute_what_torch_computes(ref: torch.nn.Module) -> None:
    dtype = ref.weight_ih_l0.dtype
    x = torch.randn((2, 4, I) if ref.batch_first else (4, 2, I), dtype=dtype)
    ours = from_torch(ref, engine="reference")
    back = to_torch(ours)
    assert type(back) is type(ref) and not ours.training and back.weight_ih_l0.dtype == dtype
    with torch.no_grad():
        want = flat(ref(x))
        for got in (flat(ours(x)), flat(back(x))):
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


def test_from_torch_refuses_options_that_change_the_equations() -> None:
    with pytest.raises(ValueError, match="reset_after"):
        from_torch(torch.nn.GRU(I, H), reset_after=False)
    with pytest.raises(ValueError, match="peephole"):
        from_torch(torch.nn.LSTM(I, H), peephole=True)
    with pytest.raises(TypeError, match="Linear"):
        from_torch(torch.nn.Linear(I, H))


@pytest.mark.parametrize("module,option", [
    (gatedrnn.GRU(I, H, reset_after=False), "reset_after=False"),
    (gatedrnn.LSTM(I, H, peephole=True), "peephole=True"),
    (gatedrnn.LSTM(I, H, layer_norm=True), "layer_norm=True"),
    (gatedrnn.LSTM(I, H, zoneout_cell=0.1), "zoneout_cell=0.1"),
])
def test_to_torch_names_the_option_torch_lacks(module: Any, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        to_torch(module)


def test_training_only_options_are_dropped_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="recurrent_dropout=0.3"):
        ref = to_torch(gatedrnn.GRU(I, H, recurrent_dropout=0.3))
    assert isinstance(ref, torch.nn.GRU)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(torch_nn)
    assert result.failed == 0 and result.attempted > 0
