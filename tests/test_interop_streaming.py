"""Streaming: a sequence fed in pieces gives exactly the outputs of the whole sequence at once."""

from __future__ import annotations

import doctest
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.interop import streaming
from gatedrnn.interop.streaming import Stream

I, H = 3, 4


@st.composite
def modules(draw: st.DrawFn) -> torch.nn.Module:
    kind = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
    lib = draw(st.sampled_from([gatedrnn, torch.nn]))  # torch.nn's modules stream the same way
    kw: dict[str, Any] = dict(num_layers=draw(st.integers(1, 2)), batch_first=draw(st.booleans()))
    if lib is gatedrnn:
        kw["engine"] = draw(st.sampled_from(["reference", "auto"]))
        if kind == "LSTM":
            kw.update(peephole=draw(st.booleans()), zoneout=draw(st.sampled_from([0.0, 0.3])))
        if kind == "GRU":
            kw["reset_after"] = draw(st.booleans())
    torch.manual_seed(draw(st.integers(0, 99)))
    return getattr(lib, kind)(I, H, **kw).eval()


def whole(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(x)[0]


@settings(max_examples=25, deadline=None)
@given(module=modules(), T=st.integers(1, 9), B=st.integers(1, 3), data=st.data())
def test_chunks_give_the_whole_sequence(module: Any, T: int, B: int, data: Any) -> None:
    time_dim = 1 if module.batch_first else 0
    x = torch.randn((B, T, I) if module.batch_first else (T, B, I))
    cuts = sorted(data.draw(st.sets(st.integers(1, T - 1), max_size=3))) if T > 1 else []
    stream = Stream(module)
    with torch.no_grad():
        pieces = [stream.chunk(p) for p in torch.tensor_split(x, cuts, dim=time_dim)]
    torch.testing.assert_close(torch.cat(pieces, dim=time_dim), whole(module, x), atol=1e-6, rtol=0)
    # The carried state is the final state of the whole run.
    with torch.no_grad():
        final = module(x)[1]
    for got, want in zip(torch.utils._pytree.tree_leaves(stream.state),
                         torch.utils._pytree.tree_leaves(final), strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_steps_batched_and_unbatched(kind: str) -> None:
    module = getattr(gatedrnn, kind)(I, H, batch_first=True).eval()
    x = torch.randn(2, 6, I)  # (B, T, I)
    stream = Stream(module)
    with torch.no_grad():
        y = torch.stack([stream.step(x[:, t]) for t in range(6)], dim=1)  # each step (B, H)
    torch.testing.assert_close(y, whole(module, x), atol=1e-6, rtol=0)
    stream = Stream(module)
    with torch.no_grad():
        y = torch.stack([stream.step(x[0, t]) for t in range(6)])  # unbatched: each step (H,)
    torch.testing.assert_close(y, whole(module, x[0]), atol=1e-6, rtol=0)


def test_reset_restarts_only_the_given_rows() -> None:
    module = gatedrnn.LSTM(I, H, num_layers=2).eval()
    x = torch.randn(5, 2, I)
    stream = Stream(module)
    with torch.no_grad():
        stream.chunk(x[:3])
        stream.reset(rows=[1])  # row 1 starts a new sequence at t = 3; row 0 carries on
        y = stream.chunk(x[3:])
    torch.testing.assert_close(y[:, 0], whole(module, x[:, :1])[3:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(y[:, 1], whole(module, x[3:, 1:])[:, 0], atol=1e-6, rtol=0)


def test_state_is_detached_unless_asked() -> None:
    module = gatedrnn.GRU(I, H)
    stream = Stream(module)
    stream.chunk(torch.randn(3, 1, I))
    assert not stream.state.requires_grad
    stream = Stream(module, detach=False)  # truncated BPTT keeps the graph
    stream.chunk(torch.randn(3, 1, I))
    assert stream.state.requires_grad


@pytest.mark.parametrize("module", [gatedrnn.GRU(I, H, bidirectional=True),
                                    torch.nn.LSTM(I, H, bidirectional=True)], ids=["gatedrnn", "torch"])
def test_bidirectional_modules_cannot_stream(module: Any) -> None:
    with pytest.raises(ValueError, match=r"bidirectional=True\) cannot stream.*reverse direction"):
        Stream(module)


def test_only_recurrent_modules_stream() -> None:
    with pytest.raises(TypeError, match="Linear"):
        Stream(torch.nn.Linear(3, 4))


def test_docstring_examples_run() -> None:
    result = doctest.testmod(streaming)
    assert result.failed == 0 and result.attempted > 0
