"""Export of MinGRU, MinLSTM and SLSTM (``gatedrnn.export.graph``): a scan over the cells.

Each model is exported at one (T, B) and run at others, T=1 and longer than traced among them,
by ONNX Runtime (dynamo ONNX exporter) or by the ExportedProgram (torch.export), and compared with
eager. The graph must hold one loop per layer and direction and no unrolled step. The TorchScript
exporter, which can only unroll, is refused, as are PackedSequence inputs and random options in
training mode.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.export import export_forward
from onnx_helpers import (
    Case,
    H,
    I,
    Net,
    assert_ort_matches_eager,
    axes,
    build,
    export_dynamo,
    inputs,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TRACE_SIZE, RUN_SIZES = (5, 2), [(1, 1), (9, 3), (2, 1)]  # (T, B)
# float32 against eager: over the ONNX cases below at these sizes and T = 40, the largest error
# measured was 9.5e-7 (SLSTM's normaliser n, |n| ≈ 4.5, which grows with T). The ops are the
# cells', only rounded in another order, so atol 1e-5 leaves a tenfold margin.
TOL = dict(atol=1e-5, rtol=1e-5)
# Ops of a step; at the top level of the graph they would mean an unrolled loop.
STEP_OPS = {"Sigmoid", "Exp", "Tanh", "Div", "Softplus", "Log", "Max", "Where"}


def export_onnx(model: Net, case: Case) -> bytes:
    return export_dynamo(model, case, inputs(case, *TRACE_SIZE))


def loops(case: Case) -> int:
    return case.kwargs.get("num_layers", 1) * (2 if case.kwargs.get("bidirectional") else 1)


ONNX_CASES = [
    Case("MinGRU", dict(num_layers=2, bidirectional=True), hx=True),
    Case("MinGRU", dict(batch_first=True, bias=False)),
    Case("MinLSTM", dict(num_layers=2, batch_first=True), hx=True),
    Case("MinLSTM", dict(bidirectional=True), hx=True, unbatched=True),
    Case("SLSTM", dict(num_layers=2, num_heads=2), hx=True),
    Case("SLSTM", dict(bidirectional=True, batch_first=True)),
    Case("SLSTM", dict(num_heads=2, bidirectional=True, bias=False), hx=True, unbatched=True),
]
FAST = {4}  # the rest are marked slow: an ONNX export takes several seconds


@pytest.mark.parametrize("case", [c if i in FAST else pytest.param(c, marks=pytest.mark.slow)
                                  for i, c in enumerate(ONNX_CASES)],
                         ids=[f"{c.kind}-{c.kwargs}-hx{c.hx}-u{c.unbatched}" for c in ONNX_CASES])
def test_onnx_scan_runs_at_any_length_and_batch(case: Case) -> None:
    model = build(case)
    model_bytes = export_onnx(model, case)
    proto = onnx.load_from_string(model_bytes)
    onnx.checker.check_model(proto, full_check=True)
    top = [n.op_type for n in proto.graph.node]
    assert top.count("Scan") == loops(case), top  # one loop per layer and direction
    assert not STEP_OPS & set(top), top  # and no step outside them
    assert_ort_matches_eager(model, case, model_bytes, RUN_SIZES, **TOL)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["MinGRU", "MinLSTM", "SLSTM"]))
    kw: dict[str, Any] = dict(num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                              batch_first=draw(st.booleans()), bias=draw(st.booleans()))
    if kind == "SLSTM":
        kw["num_heads"] = draw(st.sampled_from([1, 2, 4]))
    return Case(kind, kw, hx=draw(st.booleans()), unbatched=draw(st.booleans()))


@settings(max_examples=8, deadline=None)
@given(case=cases())
def test_torch_export_matches_eager_at_other_sizes(case: Case) -> None:
    model = build(case)
    args = inputs(case, *TRACE_SIZE)
    x_axes, state_axes = axes(case)
    dims = {name: torch.export.Dim(name) for name in ("T", "B")}
    shapes = [{k: dims[v] for k, v in x_axes.items()}]
    shapes += [{k: dims[v] for k, v in state_axes.items()} or None] * (len(args) - 1)
    program = torch.export.export(model, tuple(args), dynamic_shapes=tuple(shapes))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert sum("scan" in t for t in targets) == loops(case), targets
    for T, B in RUN_SIZES:
        args = inputs(case, T, B)
        with torch.no_grad():
            got, want = program.module()(*args), model(*args)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, **TOL)


@pytest.mark.parametrize("kind", ["MinLSTM", "SLSTM"])
def test_torch_export_records_the_gates(kind: str) -> None:
    torch.manual_seed(0)
    rnn = getattr(gatedrnn, kind)(I, H, num_layers=2, bidirectional=True).eval()
    T = torch.export.Dim("T")
    program = torch.export.export(rnn, (torch.randn(5, 2, I), None, True),
                                  dynamic_shapes=({0: T}, None, None))
    x = torch.randn(8, 2, I)
    with torch.no_grad():
        got, want = program.module()(x, None, True)[2], rnn(x, return_gates=True)[2]
    assert list(got) == list(want)
    for name in want:
        assert got[name].shape == want[name].shape  # (L·D, T, B, H)
        torch.testing.assert_close(got[name], want[name], **TOL)


@pytest.mark.parametrize("kind", ["MinGRU", "MinLSTM", "SLSTM"])
def test_the_torchscript_exporter_is_refused_with_the_way_out(kind: str) -> None:
    rnn = getattr(gatedrnn, kind)(I, H).eval()
    with pytest.raises(RuntimeError, match=r"TorchScript.*dynamo=False.*dynamo=True"):
        torch.onnx.export(rnn, (torch.randn(5, 2, I),), io.BytesIO(), dynamo=False)


def test_a_plain_trace_is_refused_with_the_ways_that_work() -> None:
    # torch.jit.trace would unroll the time loop into a graph of one length; the exporters
    # (torch.export, torch.onnx.export) build the scan and take any length.
    rnn = gatedrnn.MinGRU(I, H).eval()
    with pytest.raises(RuntimeError, match=r"torch\.export.*dynamo=True"):
        torch.jit.trace(rnn, (torch.randn(5, 2, I),), check_trace=False)


def test_dropout_in_training_mode_is_refused() -> None:
    rnn = gatedrnn.SLSTM(I, H, num_layers=2, dropout=0.2)  # training mode: random masks
    with pytest.raises(RuntimeError, match=r"dropout=0\.2.*model\.eval\(\)"):
        torch.export.export(rnn, (torch.randn(5, 2, I),))


def test_packed_sequences_are_refused_with_a_reason() -> None:
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, I), torch.tensor([5, 3]))
    with pytest.raises(NotImplementedError, match="PackedSequence.*padded"):
        export_forward(gatedrnn.MinLSTM(I, H), packed)
