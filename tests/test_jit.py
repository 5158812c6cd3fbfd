"""TorchScript and dynamic quantization: ``torch.jit.trace``, ``torch.jit.script`` and
``torch.ao.quantization.quantize_dynamic`` on gatedrnn's modules, against torch.nn's.

- trace: a configuration torch has an op for records torch's op, so the traced graph is right at
  every sequence length and batch size (before, the trace unrolled the time loop and returned the
  traced number of steps for any input); the rest is refused at trace time, never truncated.
- script: the scripted module runs torch's op on the eager module's own parameters, the eager model
  is left as it was, and the scripted model saves and loads; the rest is refused by name.
- quantize_dynamic matches exact types: what it does with gatedrnn's classes, pinned.

torch.nn's own trace warns (TracerWarning) where its argument checks compare traced sizes; the
traces here do the same, hence the filter.
"""

import io
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import gatedrnn
from gatedrnn.engines import lean_path, one_step, step_grad

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")

_OP = {"LSTM": "aten::lstm", "GRU": "aten::gru", "RNN": "aten::rnn_tanh"}


def _twins(name, kw, torch_kw=None):
    """A gatedrnn module and torch.nn's with the same weights."""
    ours = getattr(gatedrnn, name)(3, 4, **kw)
    theirs = getattr(nn, name)(3, 4, **(kw if torch_kw is None else torch_kw))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _flat(out):
    """Every tensor of a (nested) output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)]


configs = st.fixed_dictionaries({
    "num_layers": st.integers(1, 2), "bidirectional": st.booleans(),
    "batch_first": st.booleans(), "bias": st.booleans()})


class _Packs(nn.Module):
    """Packs inside forward, as models do: the packed call is what the trace or script records."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, lengths):
        y, h = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
        return pad_packed_sequence(y)[0], h


class _Head(nn.Module):
    """A model around a recurrent module: the module's output feeds a Linear."""

    def __init__(self, rnn, out_features):
        super().__init__()
        self.rnn, self.fc = rnn, nn.Linear(out_features, 2)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y)


# --- torch.jit.trace -------------------------------------------------------------------------------


@settings(max_examples=15)  # (each example traces twice: ~0.5 s)
@given(name=st.sampled_from(["LSTM", "GRU", "RNN"]), kw=configs, proj=st.booleans(),
       lengths=st.tuples(st.integers(1, 7), st.integers(1, 7)), batches=st.tuples(
           st.integers(1, 3), st.integers(1, 3)))
def test_trace_records_torch_op_at_every_length(name, kw, proj, lengths, batches):
    if proj and name == "LSTM":
        kw = {**kw, "proj_size": 2}
    ours, theirs = _twins(name, kw)
    (T1, T2), (B1, B2) = lengths, batches
    shape = (lambda T, B: (B, T, 3)) if kw["batch_first"] else (lambda T, B: (T, B, 3))
    traced = torch.jit.trace(ours, torch.randn(shape(T1, B1)))
    traced_torch = torch.jit.trace(theirs, torch.randn(shape(T1, B1)))
    assert _OP[name] in [n.kind() for n in traced.graph.nodes()]
    x = torch.randn(shape(T2, B2))
    for a, b, c in zip(_flat(traced(x)), _flat(traced_torch(x)), _flat(theirs(x)), strict=True):
        assert a.shape == c.shape
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the same op on the same weights
        torch.testing.assert_close(a, c)


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_trace_packed_matches_torch(name):
    ours, theirs = _twins(name, {"bidirectional": True, "num_layers": 2})
    x, lengths = torch.randn(5, 3, 3), torch.tensor([5, 2, 4])
    traced = torch.jit.trace(_Packs(ours), (x, lengths))
    x, lengths = torch.randn(8, 4, 3), torch.tensor([3, 8, 1, 6])
    for a, b in zip(_flat(traced(x, lengths)), _flat(_Packs(theirs)(x, lengths)), strict=True):
        torch.testing.assert_close(a, b)


def test_trace_pruned_module():
    """A traced module is traced, not compiled: pruning's forward pre-hook, which TorchScript's
    compiler refuses, traces as it does on torch.nn's LSTM."""
    lstm = gatedrnn.LSTM(3, 4)
    prune.l1_unstructured(lstm, "weight_hh_l0", 0.5)
    traced = torch.jit.trace(lstm, torch.randn(5, 2, 3))
    x = torch.randn(7, 2, 3)
    torch.testing.assert_close(traced(x)[0], lstm(x)[0])


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_trace_cells_any_batch(name):
    ours, theirs = _twins(name, {})
    traced = torch.jit.trace(ours, torch.randn(2, 3))
    traced_torch = torch.jit.trace(theirs, torch.randn(2, 3))
    for x in (torch.randn(5, 3), torch.randn(1, 3)):
        for a, b in zip(_flat(traced(x)), _flat(traced_torch(x)), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_trace_cell_variants_record_the_step():
    """A cell is one step: its variants trace as the step's equations, right at any batch."""
    cell = gatedrnn.LSTMCell(3, 4, layer_norm=True, peephole=True)
    traced = torch.jit.trace(cell, torch.randn(2, 3))
    x = torch.randn(5, 3)
    for a, b in zip(traced(x), cell(x), strict=True):
        torch.testing.assert_close(a, b)


def test_fast_paths_never_run_while_tracing(monkeypatch):
    """The streaming and lean paths call numba, which a trace cannot see: a trace of a call they
    would take (one step at B = 1, engine="fused") must record torch's op instead."""
    ran = []
    for mod, fn in ((one_step, "module_call"), (one_step, "module_run"), (lean_path, "module_call"),
                    (one_step, "cell_call"), (step_grad, "cell_call")):
        original = getattr(mod, fn)

        def spy(*args, _original=original, **kwargs):
            result = _original(*args, **kwargs)
            ran.append(result is not None and torch.jit.is_tracing())
            return result

        monkeypatch.setattr(mod, fn, spy)
    for engine in ("fused", "auto"):
        lstm = gatedrnn.LSTM(3, 4, engine=engine).eval()
        with torch.no_grad():
            traced = torch.jit.trace(lstm, torch.randn(1, 1, 3))
        x = torch.randn(6, 2, 3)
        torch.testing.assert_close(traced(x)[0], lstm(x)[0])
        cell = gatedrnn.GRUCell(3, 4, engine=engine)
        traced = torch.jit.trace(cell, torch.randn(1, 3))
        assert traced(torch.randn(4, 3)).shape == (4, 4)
    assert ran and not any(ran)


_NO_OP = {"layer_norm": lambda: gatedrnn.LSTM(3, 4, layer_norm=True),
          "peephole": lambda: gatedrnn.LSTM(3, 4, peephole=True),
          "zoneout": lambda: gatedrnn.GRU(3, 4, zoneout=0.1),
          "recurrent_dropout": lambda: gatedrnn.LSTM(3, 4, recurrent_dropout=0.2),
          "weight_drop": lambda: gatedrnn.GRU(3, 4, weight_drop=0.2),
          "reset_after=False": lambda: gatedrnn.GRU(3, 4, reset_after=False),
          "num_heads": lambda: gatedrnn.LSTM(3, 4, num_heads=2),
          "MinGRU": lambda: gatedrnn.MinGRU(3, 4), "MinLSTM": lambda: gatedrnn.MinLSTM(3, 4),
          "SLSTM": lambda: gatedrnn.SLSTM(3, 4)}


@pytest.mark.parametrize("named", list(_NO_OP))
def test_trace_refuses_what_torch_has_no_op_for(named):
    """Refused at trace time, in training and in evaluation: never a truncated graph."""
    module = _NO_OP[named]()
    for mode in (True, False):
        with pytest.raises(RuntimeError, match=rf"{named.split('=')[0]}.*torch\.export.*dynamo=True"):
            torch.jit.trace(module.train(mode), torch.randn(5, 2, 3))


def test_trace_refuses_return_gates():
    lstm = gatedrnn.LSTM(3, 4)
    with pytest.raises(RuntimeError, match=r"return_gates=True.*torch\.export"):
        torch.jit.trace(lambda x: lstm(x, return_gates=True)[0], torch.randn(5, 2, 3))


# --- torch.jit.script ------------------------------------------------------------------------------


def _scripted_twins(model_ours, model_theirs):
    """Script both models; check that the eager model is left as it was and shares parameters."""
    children = {n: (type(m), m) for n, m in model_ours.named_children()}
    params = dict(model_ours.named_parameters())
    s_ours, s_theirs = torch.jit.script(model_ours), torch.jit.script(model_theirs)
    assert {n: (type(m), m) for n, m in model_ours.named_children()} == children
    assert all(p is params[n] for n, p in model_ours.named_parameters())
    for n, p in s_ours.named_parameters():  # the eager module's Parameter objects, not copies
        assert p is params[n]
    return s_ours, s_theirs


def _round_trip(scripted):
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    return torch.jit.load(buf)


@settings(max_examples=15)  # (each example scripts twice: ~0.5 s)
@given(name=st.sampled_from(["LSTM", "GRU", "RNN"]), kw=configs, proj=st.booleans(),
       T=st.integers(1, 6), B=st.integers(1, 3), relu=st.booleans())
def test_script_matches_torch_script(name, kw, proj, T, B, relu):
    if proj and name == "LSTM":
        kw = {**kw, "proj_size": 2}
    if relu and name == "RNN":
        kw = {**kw, "nonlinearity": "relu"}
    ours, theirs = _twins(name, kw)
    H = kw.get("proj_size") or 4
    out = H * (2 if kw["bidirectional"] else 1)
    model = _Head(ours, out)
    ref = _Head(theirs, out)
    ref.fc.load_state_dict(model.fc.state_dict())
    s_ours, s_theirs = _scripted_twins(model, ref)
    x = torch.randn((B, T, 3) if kw["batch_first"] else (T, B, 3))
    torch.testing.assert_close(s_ours(x), s_theirs(x), rtol=0, atol=0)
    torch.testing.assert_close(_round_trip(s_ours)(x), s_theirs(x), rtol=0, atol=0)
    torch.testing.assert_close(model(x), ref(x))  # and the eager model still runs as before


def test_scripted_file_loads_without_gatedrnn(tmp_path):
    """The saved program holds torch's operators only: a process that never imports gatedrnn
    (as libtorch in C++) loads and runs it."""
    model = _Head(gatedrnn.LSTM(3, 4, num_layers=2, batch_first=True), 4)
    torch.jit.save(torch.jit.script(model), tmp_path / "model.pt")
    x = torch.randn(2, 7, 3)
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch; m = torch.jit.load('model.pt'); "
            "torch.save(m(torch.load('x.pt')), 'y.pt'); assert 'gatedrnn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    torch.testing.assert_close(torch.load(tmp_path / "y.pt"), model(x))


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_script_packed_and_unbatched(name):
    ours, theirs = _twins(name, {"bidirectional": True})
    s_ours, s_theirs = _scripted_twins(_Packs(ours), _Packs(theirs))
    x, lengths = torch.randn(6, 3, 3), torch.tensor([4, 6, 2])
    for a, b in zip(_flat(s_ours(x, lengths)), _flat(s_theirs(x, lengths)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    s_ours, s_theirs = _scripted_twins(_Head(ours, 8), _Head(theirs, 8))
    s_theirs.fc.weight.data.copy_(s_ours.fc.weight.data)
    s_theirs.fc.bias.data.copy_(s_ours.fc.bias.data)
    x = torch.randn(5, 3)  # unbatched
    torch.testing.assert_close(s_ours(x), s_theirs(x), rtol=0, atol=0)
    with pytest.raises(torch.jit.Error, match="input_size"):  # torch.nn's check, scripted
        s_ours(torch.randn(5, 2, 7))


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
@pytest.mark.parametrize("bias", [True, False])
def test_script_cells(name, bias):
    ours, theirs = _twins(name, {"bias": bias})
    s_ours, s_theirs = _scripted_twins(nn.Sequential(ours), nn.Sequential(theirs))
    s_ours, s_theirs = torch.jit.script(ours), torch.jit.script(theirs)  # callable from Python
    for x in (torch.randn(2, 3), torch.randn(3)):
        for a, b in zip(_flat(s_ours(x)), _flat(s_theirs(x)), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        for a, b in zip(_flat(_round_trip(s_ours)(x)), _flat(s_theirs(x)), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert type(ours) is getattr(gatedrnn, name) and ours(torch.randn(2, 3)) is not None


@pytest.mark.parametrize("make, named", [
    (lambda: gatedrnn.LSTM(3, 4, layer_norm=True), "layer_norm=True"),
    (lambda: gatedrnn.LSTM(3, 4, peephole=True), "peephole=True"),
    (lambda: gatedrnn.GRU(3, 4, zoneout=0.1), "zoneout=0.1"),
    (lambda: gatedrnn.GRU(3, 4, reset_after=False), "reset_after=False"),
    (lambda: gatedrnn.LSTM(3, 4, num_heads=2), "num_heads=2"),
    (lambda: gatedrnn.MinGRU(3, 4), "MinGRU"), (lambda: gatedrnn.MinLSTM(3, 4), "MinLSTM"),
    (lambda: gatedrnn.SLSTM(3, 4), "SLSTM"),
    (lambda: gatedrnn.LSTMCell(3, 4, zoneout_cell=0.1), "zoneout_cell=0.1"),
    (lambda: gatedrnn.GRUCell(3, 4, layer_norm=True), "layer_norm=True")])
def test_script_refuses_by_name_and_leaves_the_model(make, named):
    model = nn.Sequential(make())
    child = model[0]
    with pytest.raises(RuntimeError, match=rf"{named}.*torch\.export.*dynamo=True"):
        torch.jit.script(model)
    assert model[0] is child


@pytest.mark.parametrize("option", ["recurrent_dropout", "weight_drop"])
def test_script_training_only_variants_for_inference(option):
    ours, theirs = _twins("GRU", {option: 0.3, "num_layers": 2}, {"num_layers": 2})
    s_ours, s_theirs = _scripted_twins(_Head(ours, 4).eval(), _Head(theirs, 4).eval())
    s_theirs.fc.load_state_dict(s_ours.fc.state_dict())
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(s_ours(x), s_theirs(x), rtol=0, atol=0)
    s_ours.train()
    with pytest.raises(torch.jit.Error, match=r"evaluation mode only.*\.eval\(\)"):
        s_ours(x)


# --- torch.ao.quantization.quantize_dynamic -------------------------------------------------------


def _float_lstm_model(cls):
    torch.manual_seed(0)
    return _Head(cls(3, 4), 4).eval()


# torch's own int8 LSTM is built from quantized tensors, which torch 2.13 deprecates in a warning.
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_quantize_dynamic_with_torch_classes_skips_gatedrnn():
    """torch matches its spec by exact type: torch.nn.LSTM in the spec (or the default spec)
    converts torch.nn's LSTM and leaves gatedrnn.LSTM, a subclass, in float, without a word."""
    x = torch.randn(5, 2, 3)
    q = torch.ao.quantization.quantize_dynamic
    assert type(q(_float_lstm_model(nn.LSTM), {nn.LSTM, nn.Linear}).rnn).__module__ \
        .startswith("torch.ao.nn.quantized.dynamic")
    for spec in ({nn.LSTM, nn.Linear}, None):
        model = _float_lstm_model(gatedrnn.LSTM)
        expected = model.rnn(x)[0]
        out = q(model, spec) if spec else q(model)
        assert type(out.rnn) is gatedrnn.LSTM
        assert all(p.dtype == torch.float32 for p in out.rnn.parameters())
        torch.testing.assert_close(out.rnn(x)[0], expected, rtol=0, atol=0)
        assert type(out.fc).__module__.startswith("torch.ao.nn.quantized.dynamic")
    with gatedrnn.patch_torch():  # torch.nn.LSTM names a stand-in there, not gatedrnn.LSTM
        model = _Head(nn.LSTM(3, 4), 4).eval()
        assert type(q(model, {nn.LSTM}).rnn) is gatedrnn.LSTM


def test_quantize_dynamic_with_gatedrnn_classes_is_gatedrnn_quantize():
    """gatedrnn's class in the spec converts to the int8 module ``gatedrnn.quantize`` makes."""
    model = _float_lstm_model(gatedrnn.LSTM)
    out = torch.ao.quantization.quantize_dynamic(model, {gatedrnn.LSTM})
    assert type(out.rnn) is type(gatedrnn.quantize(model).rnn)
    assert type(out.rnn) is not gatedrnn.LSTM
