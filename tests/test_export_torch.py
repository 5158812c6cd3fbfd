"""``torch.export.export`` and ``torch.compile`` of models that contain gatedrnn modules.

Both must give eager's results, for the reference and the fused engine. torch.export goes through
``gatedrnn.export.graph`` (a scan over the cells, with symbolic time and batch sizes); torch.compile
runs the engines themselves.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn

I, H = 3, 4


class Head(torch.nn.Module):
    """A small model around a recurrent layer: what people export, not the layer alone."""

    def __init__(self, rnn: torch.nn.Module) -> None:
        super().__init__()
        self.rnn, self.out = rnn, torch.nn.Linear(rnn.hidden_size * (2 if rnn.bidirectional else 1)
                                                  if not getattr(rnn, "proj_size", 0)
                                                  else rnn.proj_size * (2 if rnn.bidirectional else 1), 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        y, state = self.rnn(x)
        return self.out(y), state


def build(kind: str, dtype: torch.dtype = torch.float32, **kwargs: Any) -> Head:
    torch.manual_seed(0)
    return Head(getattr(gatedrnn, kind)(I, H, **kwargs)).to(dtype).eval()


def has_fused(kind: str) -> bool:
    """The fused GRU and RNN kernels are another engineer's work in progress: test them once they land."""
    return importlib.util.find_spec(f"gatedrnn.engines.kernels.{kind.lower()}") is not None


def leaves(out: Any) -> list[torch.Tensor]:
    return torch.utils._pytree.tree_leaves(out)


def assert_same(got: Any, want: Any, atol: float = 1e-5) -> None:
    for g, w in zip(leaves(got), leaves(want), strict=True):
        torch.testing.assert_close(g, w, atol=atol, rtol=0)


# --- torch.export ---------------------------------------------------------------------------------


@st.composite
def configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
    kw: dict[str, Any] = dict(num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                              batch_first=draw(st.booleans()), bias=draw(st.booleans()),
                              engine=draw(st.sampled_from(["reference", "fused"] if has_fused(kind)
                                                          else ["reference"])))
    if kind == "LSTM":
        kw.update(peephole=draw(st.booleans()), layer_norm=draw(st.booleans()),
                  proj_size=draw(st.sampled_from([0, 2])), zoneout=draw(st.sampled_from([0.0, 0.2])))
    elif kind == "GRU":
        kw["reset_after"] = draw(st.booleans())
        kw["layer_norm"] = kw["reset_after"] and draw(st.booleans())
    else:
        kw["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    return kind, kw


@settings(max_examples=12, deadline=None)
@given(config=configs())
def test_torch_export_matches_eager_at_other_sizes(config: tuple[str, dict[str, Any]]) -> None:
    # float64, so that the exported scan (the reference equations) and an eager fused kernel must
    # agree to rounding: in float32 a layer norm over H=4 units magnifies rounding to ~1e-4.
    kind, kw = config
    model = build(kind, torch.float64, **kw)
    T, B = torch.export.Dim("T"), torch.export.Dim("B")
    shape = (2, 5, I) if kw["batch_first"] else (5, 2, I)
    x = torch.randn(shape, dtype=torch.float64)
    dims = {0: B, 1: T} if kw["batch_first"] else {0: T, 1: B}
    program = torch.export.export(model, (x,), dynamic_shapes=(dims,))
    for size in [(7, 3), (2, 1)]:  # (T, B), neither of them the traced one
        shape = size[::-1] + (I,) if kw["batch_first"] else size + (I,)
        x = torch.randn(shape, dtype=torch.float64)
        with torch.no_grad():
            assert_same(program.module()(x), model(x), atol=1e-10)


def test_torch_export_keeps_the_recurrence_as_one_loop() -> None:
    # A scan, not T unrolled steps: the graph does not grow with the traced length.
    program = torch.export.export(build("GRU", num_layers=2), (torch.randn(9, 2, I),))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert sum("scan" in t for t in targets) == 2, targets


# --- torch.compile --------------------------------------------------------------------------------


COMPILE = [("LSTM", {}), ("GRU", {"reset_after": False}), ("RNN", {"nonlinearity": "relu"})]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["reference", "fused"])
@pytest.mark.parametrize("kind,kw", COMPILE, ids=[k for k, _ in COMPILE])
def test_torch_compile_matches_eager(kind: str, kw: dict[str, Any], engine: str) -> None:
    if engine == "fused" and not has_fused(kind):
        pytest.skip(f"no fused {kind} kernel yet")
    torch._dynamo.reset()  # each case compiles from scratch, not from another case's cache
    model = build(kind, engine=engine, **kw).train()
    compiled = torch.compile(model)
    x = torch.randn(4, 2, I, requires_grad=True)
    got, want = compiled(x), model(x)
    assert_same(got, want)
    # The backward pass too: gradients of the input and of every parameter.
    grads = [torch.autograd.grad(out[0].square().sum(), [x, *model.parameters()]) for out in (got, want)]
    assert_same(grads[0], grads[1])
