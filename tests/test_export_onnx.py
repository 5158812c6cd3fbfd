"""ONNX export of gatedrnn modules, checked against ONNX Runtime running the exported file.

Each exported model is run at sizes other than the traced ones (the time and batch axes are
dynamic), with and without an initial state, and must match gatedrnn's eager output to 1e-5.
Both of torch 2.13's exporters are covered: TorchScript (dynamo=False) and dynamo (the default).
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
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

TRACE_SIZE, RUN_SIZES = (5, 2), [(7, 3), (1, 1)]  # (T, B)


def export(model: Net, case: Case, dynamo: bool) -> bytes:
    args = inputs(case, *TRACE_SIZE)
    if dynamo:
        return export_dynamo(model, case, args)
    names = ["x", "h0", "c0"][: len(args)]
    x_axes, state_axes = axes(case)
    buf = io.BytesIO()
    axes_by_name = {"x": x_axes, **{n: state_axes for n in names[1:]}}
    torch.onnx.export(model, tuple(args), buf, dynamo=False, input_names=names,
                      dynamic_axes=axes_by_name)
    return buf.getvalue()


def assert_matches_eager(model: Net, case: Case, model_bytes: bytes) -> None:
    assert_ort_matches_eager(model, case, model_bytes, RUN_SIZES, atol=1e-5, rtol=0)


def op_types(model_bytes: bytes) -> set[str]:
    proto = onnx.load_from_string(model_bytes)
    onnx.checker.check_model(proto, full_check=True)  # a valid model, shapes and types included
    return {n.op_type for n in proto.graph.node}


NATIVE = [
    Case("LSTM", dict(num_layers=2, bidirectional=True), hx=True),
    Case("LSTM", dict(peephole=True, batch_first=True, bias=False)),
    Case("LSTM", dict(peephole=True, num_layers=2, bidirectional=True), hx=True),
    Case("GRU", dict(num_layers=2, bidirectional=True, batch_first=True)),
    Case("GRU", dict(reset_after=False, bidirectional=True), hx=True),
    Case("GRU", dict(reset_after=False, num_layers=2, bias=False)),
    Case("RNN", dict(nonlinearity="relu", bidirectional=True), hx=True),
    Case("RNN", dict(num_layers=2, batch_first=True)),
    Case("LSTM", dict(peephole=True, bidirectional=True), hx=True, unbatched=True),
]
NATIVE_OP = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "RNN"}


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("case", NATIVE, ids=[f"{c.kind}-{c.kwargs}-hx{c.hx}-u{c.unbatched}" for c in NATIVE])
def test_native_ops_match_onnxruntime(case: Case, dynamo: bool) -> None:
    model = build(case)
    model_bytes = export(model, case, dynamo)
    # ONNX's own recurrent operator, and no loop: what runtimes accelerate.
    ops = op_types(model_bytes)
    assert NATIVE_OP[case.kind] in ops and "Scan" not in ops and "Loop" not in ops, ops
    assert_matches_eager(model, case, model_bytes)


@st.composite
def native_cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
    kwargs: dict[str, Any] = dict(num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                                  batch_first=draw(st.booleans()), bias=draw(st.booleans()))
    if kind == "LSTM":
        kwargs["peephole"] = draw(st.booleans())
    elif kind == "GRU":
        kwargs["reset_after"] = draw(st.booleans())
    else:
        kwargs["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    return Case(kind, kwargs, hx=draw(st.booleans()), unbatched=draw(st.booleans()))


@settings(max_examples=15, deadline=None)
@given(case=native_cases())
def test_torchscript_export_property(case: Case) -> None:
    # The fast exporter, over random configurations; the dynamo exporter gets the fixed list above.
    model = build(case)
    assert_matches_eager(model, case, export(model, case, dynamo=False))


LOOP = [
    Case("LSTM", dict(layer_norm=True, bidirectional=True), hx=True),
    Case("LSTM", dict(proj_size=2, zoneout=0.2, zoneout_cell=0.1, num_layers=2)),
    Case("GRU", dict(layer_norm=True, zoneout=0.3, batch_first=True)),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", LOOP, ids=[f"{c.kind}-{c.kwargs}" for c in LOOP])
def test_options_without_an_onnx_op_export_as_a_scan(case: Case) -> None:
    model = build(case)
    model_bytes = export(model, case, dynamo=True)
    assert "Scan" in op_types(model_bytes)
    assert_matches_eager(model, case, model_bytes)


def test_torchscript_exporter_names_the_option_it_cannot_express() -> None:
    case = Case("LSTM", dict(layer_norm=True, proj_size=2))
    with pytest.raises(RuntimeError, match=r"layer_norm=True, proj_size=2.*dynamo=True"):
        export(build(case), case, dynamo=False)


@pytest.mark.filterwarnings("ignore:# 'dynamic_axes' is not recommended:UserWarning")
@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
def test_the_plain_export_call_works() -> None:
    # What a user types: no dynamo= (True by default in torch 2.13), dynamic_axes as of old.
    assert torch.onnx.export.__kwdefaults__["dynamo"] is True
    case = Case("GRU", dict(reset_after=False, num_layers=2))
    model = build(case)
    buf = io.BytesIO()
    torch.onnx.export(model, (inputs(case, *TRACE_SIZE)[0],), buf, input_names=["x"],
                      dynamic_axes={"x": {0: "T", 1: "B"}}, verbose=False)
    assert_matches_eager(model, case, buf.getvalue())


def test_a_bare_module_exports_with_torchscript() -> None:
    rnn = gatedrnn.LSTM(I, H).eval()
    torch.onnx.export(rnn, (torch.randn(5, 2, I),), io.BytesIO(), dynamo=False)


def test_random_options_in_training_mode_are_refused() -> None:
    rnn = gatedrnn.GRU(I, H, recurrent_dropout=0.2)  # training mode: the masks are random
    with pytest.raises(RuntimeError, match=r"recurrent_dropout=0\.2.*model\.eval\(\)"):
        torch.export.export(rnn, (torch.randn(5, 2, I),))


def test_packed_sequences_are_refused_with_a_reason() -> None:
    from gatedrnn.export.graph import export_forward

    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, I), torch.tensor([5, 3]))
    with pytest.raises(NotImplementedError, match="PackedSequence.*padded"):
        export_forward(gatedrnn.LSTM(I, H), packed)


def test_docstring_examples_run() -> None:
    import doctest

    from gatedrnn.export import graph

    result = doctest.testmod(graph)
    assert result.failed == 0 and result.attempted > 0
