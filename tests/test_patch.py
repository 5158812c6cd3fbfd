"""gatedrnn.patch_torch(): torch.nn's six recurrent names build gatedrnn's classes, gatedrnn keeps
working under the swap on every engine, and torch's classes come back."""

from __future__ import annotations

import abc
import pickle

import pytest
import torch
import torch.nn.modules.rnn
from torch import nn

import gatedrnn
from gatedrnn.modules.patch import TORCH_CLASSES

NAMES = ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")
ENGINES = ("auto", "fused", "reference", "native")


@pytest.fixture(autouse=True)
def _unpatched():
    """Every test starts and ends with torch's own classes, whatever it raised."""
    gatedrnn.unpatch_torch()
    yield
    gatedrnn.unpatch_torch()
    for name in NAMES:
        assert getattr(nn, name) is TORCH_CLASSES[name]


def _run(m, cell: bool, grad: bool) -> torch.Tensor:
    """A forward (and backward with ``grad``) of module or cell ``m``: input (5, 2, 3)."""
    x = torch.randn(5, 2, 3, requires_grad=grad)
    if cell:
        state = None
        for t in range(x.shape[0]):
            state = m(x[t], state)
        out = state[0] if isinstance(state, tuple) else state
    else:
        out = m(x)[0]
    if grad:
        out.sum().backward()
        assert x.grad is not None and all(p.grad is not None for p in m.parameters())
    return out


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", NAMES)
def test_every_class_and_engine_under_the_swap(name, engine) -> None:
    cell = name.endswith("Cell")
    torch.manual_seed(0)
    ref = TORCH_CLASSES[name](3, 4)
    with gatedrnn.patch_torch(engine=engine):
        m = getattr(nn, name)(3, 4)
        assert type(m) is getattr(gatedrnn, name) and m.engine == engine
        m.load_state_dict(ref.state_dict())
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                torch.manual_seed(1)
                ours = _run(m, cell, grad)
                torch.manual_seed(1)
                theirs = _run(ref, cell, grad)
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_isinstance_both_ways(name) -> None:
    ours, theirs = getattr(gatedrnn, name), TORCH_CLASSES[name]
    before = theirs(3, 4)
    with gatedrnn.patch_torch():
        stand_in = getattr(nn, name)
        assert stand_in is not theirs
        assert getattr(torch.nn.modules.rnn, name) is stand_in
        assert getattr(torch.nn.modules, name) is stand_in
        m = stand_in(3, 4)
        assert isinstance(m, stand_in) and isinstance(before, stand_in)
        assert issubclass(ours, stand_in) and issubclass(theirs, stand_in)
        other = "GRU" if name == "LSTM" else "LSTM"
        assert not isinstance(m, getattr(nn, other))
    assert isinstance(m, theirs) and isinstance(m, ours) and type(m) is ours


class _SequenceMixin(abc.ABC, nn.RNNBase):
    """pytorch-forecasting's pattern: an ABC mixin deriving from nn.RNNBase, in front of nn.LSTM."""

    def forward(self, x, hx=None):
        out, state = super().forward(x, hx)
        return out * 1.0, state


with gatedrnn.patch_torch(engine="reference"):  # defined at import, while patched

    class PatchedMixedLSTM(_SequenceMixin, nn.LSTM):
        pass


def test_subclass_defined_while_patched() -> None:
    assert issubclass(PatchedMixedLSTM, gatedrnn.LSTM)
    assert issubclass(PatchedMixedLSTM, TORCH_CLASSES["LSTM"])
    plain = PatchedMixedLSTM(3, 4)  # built without the patch: no defaults
    assert plain.engine == "auto"
    with gatedrnn.patch_torch(engine="fused"):
        m = PatchedMixedLSTM(3, 4, batch_first=True)
        assert isinstance(m, nn.LSTM)
    assert type(m) is PatchedMixedLSTM and m.engine == "fused"
    assert isinstance(m, TORCH_CLASSES["LSTM"]) and isinstance(m, gatedrnn.LSTM)
    out, (h, c) = m(torch.randn(2, 5, 3, requires_grad=True))
    out.sum().backward()
    assert m.last_engine == "fused" and m.weight_hh_l0.grad is not None
    back = pickle.loads(pickle.dumps(m))  # (unpatched now)
    assert type(back) is PatchedMixedLSTM and back.engine == "fused"


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_with_torch(name) -> None:
    theirs = TORCH_CLASSES[name](3, 4)
    with gatedrnn.patch_torch():
        m = getattr(nn, name)(3, 4)
        m.load_state_dict(theirs.state_dict())
        back = TORCH_CLASSES[name](3, 4)
        back.load_state_dict(m.state_dict())
    for a, b in zip(theirs.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_pickled_while_patched_unpickles_without(name) -> None:
    with gatedrnn.patch_torch(engine="reference"):
        blob = pickle.dumps(getattr(nn, name)(3, 4))
    m = pickle.loads(blob)
    assert type(m) is getattr(gatedrnn, name) and m.engine == "reference"
    assert getattr(nn, name) is TORCH_CLASSES[name]


def test_restoring_with_unpatch_blocks_nesting_and_exceptions() -> None:
    gatedrnn.patch_torch()
    gatedrnn.patch_torch(engine="fused")
    gatedrnn.unpatch_torch()  # undoes both
    assert nn.LSTM is TORCH_CLASSES["LSTM"]
    with gatedrnn.patch_torch(engine="fused"):
        outer_lstm = nn.LSTM
        with pytest.raises(KeyError):
            with gatedrnn.patch_torch(engine="reference"):
                assert nn.LSTM(3, 4).engine == "reference"
                raise KeyError("inside")
        assert nn.LSTM is outer_lstm and nn.LSTM(3, 4).engine == "fused"
    assert nn.LSTM is TORCH_CLASSES["LSTM"]
    with pytest.raises(ZeroDivisionError):
        with gatedrnn.patch_torch():
            raise ZeroDivisionError
    for name in NAMES:
        assert getattr(torch.nn.modules.rnn, name) is TORCH_CLASSES[name]


def test_defaults_go_to_the_classes_that_take_them() -> None:
    with gatedrnn.patch_torch(engine="reference", reset_after=False, peephole=True):
        gru, lstm, rnn = nn.GRU(3, 4), nn.LSTM(3, 4), nn.RNN(3, 4)
        cell = nn.GRUCell(3, 4)
        explicit = nn.GRU(3, 4, reset_after=True, engine="fused")
    assert (gru.reset_after, cell.reset_after, lstm.peephole) == (False, False, True)
    assert (rnn.engine, lstm.reset_after, explicit.reset_after, explicit.engine) == \
        ("reference", True, True, "fused")
    with pytest.raises(TypeError, match="unexpected option"):
        gatedrnn.patch_torch(enigne="fused")
    with pytest.raises(TypeError, match="unexpected option"):
        gatedrnn.patch_torch(batch_first=True)  # torch's arguments stay the caller's
    with pytest.raises(ValueError, match="engine"):
        gatedrnn.patch_torch(engine="fast")
    assert nn.GRU is TORCH_CLASSES["GRU"]  # a refused patch changes nothing


def test_gatedrnn_itself_under_the_swap() -> None:
    """The toolkit and interop reach torch's classes as captured at import, not through torch.nn."""
    from gatedrnn.interop.torch_nn import from_torch, to_torch

    ref = TORCH_CLASSES["GRU"](3, 4)
    with gatedrnn.patch_torch():
        ours = from_torch(ref, engine="fused")
        back = to_torch(ours)
        assert type(back) is TORCH_CLASSES["GRU"]
        cell = nn.GRUCell(3, 4, engine="fused")  # the fused step with and without a state
        with torch.no_grad():
            h = cell(torch.randn(2, 3))
            h = cell(torch.randn(2, 3), h)
            lstm_cell = nn.LSTMCell(3, 4, engine="fused")
            h, c = lstm_cell(torch.randn(3), None)
            h, c = lstm_cell(torch.randn(3), (h, c))
        assert cell.last_engine == "fused" and lstm_cell.last_engine == "fused"


def test_plain_assignment_swap_keeps_the_cells_working(monkeypatch) -> None:
    """The swap a new user tries first: ``torch.nn.LSTMCell = gatedrnn.LSTMCell``."""
    for name in NAMES:
        monkeypatch.setattr(nn, name, getattr(gatedrnn, name))
    for engine in ENGINES:
        for name in NAMES:
            m = getattr(nn, name)(3, 4, engine=engine)
            with torch.no_grad():
                _run(m, name.endswith("Cell"), grad=False)
            _run(m, name.endswith("Cell"), grad=True)
