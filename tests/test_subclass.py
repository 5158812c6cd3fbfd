"""gatedrnn's classes are torch.nn's: isinstance, the cooperative __init__ chain of third-party
mixins, and torch.nn's own machinery (flat weights, _apply, pickling, state_dict, repr)."""

from __future__ import annotations

import abc
import copy
import pickle

import pytest
import torch
from torch import nn

import gatedrnn

PAIRS = [(gatedrnn.LSTM, nn.LSTM), (gatedrnn.GRU, nn.GRU), (gatedrnn.RNN, nn.RNN)]
CELLS = [(gatedrnn.LSTMCell, nn.LSTMCell), (gatedrnn.GRUCell, nn.GRUCell),
         (gatedrnn.RNNCell, nn.RNNCell)]


@pytest.mark.parametrize("ours,theirs", PAIRS + CELLS)
def test_isinstance_of_torch_class(ours, theirs) -> None:
    m = ours(3, 4)
    assert isinstance(m, theirs)
    base = nn.RNNBase if theirs in (nn.LSTM, nn.GRU, nn.RNN) else nn.RNNCellBase
    assert isinstance(m, base)


class _SequenceMixin(abc.ABC, nn.RNNBase):
    """A library's mixin in front of the recurrent class, deriving from nn.RNNBase itself (the
    pattern of pytorch-forecasting's RNN/LSTM/GRU): it adds a method and wraps forward."""

    def last_output(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[0][-1]

    def forward(self, x, hx=None):
        out, state = super().forward(x, hx)
        return out * 1.0, state


class MixedLSTM(_SequenceMixin, gatedrnn.LSTM):
    pass


class MixedGRU(_SequenceMixin, gatedrnn.GRU):
    pass


class TorchMixedLSTM(_SequenceMixin, nn.LSTM):
    pass


@pytest.mark.parametrize("engine", ["reference", "fused", "native", "auto"])
def test_third_party_mixin_deriving_from_rnnbase(engine) -> None:
    torch.manual_seed(0)
    ours = MixedLSTM(3, 5, num_layers=2, batch_first=True, engine=engine)
    torch.manual_seed(0)
    ref = TorchMixedLSTM(3, 5, num_layers=2, batch_first=True)
    for a, b in zip(ours.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)  # the same draws, so torch's constructor ran once, in its order
    x = torch.randn(2, 6, 3)
    assert torch.allclose(ours.last_output(x), ref.last_output(x), atol=1e-6)
    gru = MixedGRU(input_size=3, hidden_size=4, engine=engine)
    assert isinstance(gru, nn.GRU) and gru(torch.randn(5, 2, 3))[0].shape == (5, 2, 4)


def test_isinstance_based_code_finds_gatedrnn_modules() -> None:
    """What initialisers and model surgery do: walk modules, act on torch.nn.LSTM instances."""
    model = nn.Sequential(nn.Linear(3, 3), gatedrnn.LSTM(3, 4), gatedrnn.GRUCell(3, 4))
    for m in model.modules():
        if isinstance(m, (nn.LSTM, nn.GRUCell)):
            for p in m.parameters():
                nn.init.zeros_(p)
    assert all(torch.count_nonzero(p) == 0 for p in model[1].parameters())
    assert all(torch.count_nonzero(p) == 0 for p in model[2].parameters())


@pytest.mark.parametrize("ours,theirs", PAIRS)
def test_torch_machinery_is_torchs(ours, theirs, monkeypatch) -> None:
    m = ours(3, 5, num_layers=2, bidirectional=True)
    # flatten_parameters is torch's (gatedrnn's only skips it for head-wise weights, num_heads > 1)
    calls: list[nn.Module] = []
    monkeypatch.setattr(nn.RNNBase, "flatten_parameters", lambda self: calls.append(self))
    m.flatten_parameters()
    assert calls == [m]
    monkeypatch.undo()
    assert type(m)._apply is nn.RNNBase._apply
    assert type(m).__setstate__ is nn.RNNBase.__setstate__
    assert [p.data_ptr() for p in m._flat_weights] == \
        [getattr(m, n).data_ptr() for n in m._flat_weights_names]
    m.flatten_parameters()
    assert len(m.all_weights) == 4 and all(isinstance(w[0], nn.Parameter) for w in m.all_weights)


@pytest.mark.parametrize("engine", ["reference", "fused", "native", "auto"])
def test_dtype_moves_keep_flat_weights_in_step(engine) -> None:
    torch.manual_seed(0)
    m = gatedrnn.LSTM(3, 5, proj_size=2, engine=engine).double()
    assert all(w.dtype == torch.float64 for w in m._flat_weights)
    assert m(torch.randn(4, 2, 3, dtype=torch.float64))[0].dtype == torch.float64
    m.to(torch.float32)
    assert all(w.dtype == torch.float32 for w in m._flat_weights)
    assert m(torch.randn(4, 2, 3))[0].dtype == torch.float32


@pytest.mark.parametrize("ours,theirs", PAIRS + CELLS)
def test_pickle_and_deepcopy_round_trip(ours, theirs) -> None:
    torch.manual_seed(0)
    kw = {"zoneout": 0.1} if ours in (gatedrnn.LSTM, gatedrnn.GRUCell) else {}
    m = ours(3, 4, **kw).eval()
    x = torch.randn(5, 2, 3) if theirs not in (nn.LSTMCell, nn.GRUCell, nn.RNNCell) else torch.randn(2, 3)
    for again in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert type(again) is type(m) and repr(again) == repr(m)
        a, b = m(x), again(x)
        for u, v in zip(torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)):
            assert torch.equal(u, v)


def test_repr_is_torchs_plus_options() -> None:
    assert repr(gatedrnn.LSTM(3, 4, num_layers=2)) == repr(nn.LSTM(3, 4, num_layers=2))
    assert repr(gatedrnn.GRU(3, 4, reset_after=False, engine="fused")) == \
        "GRU(3, 4, engine='fused', reset_after=False)"
    assert repr(gatedrnn.RNN(3, 4, nonlinearity="relu")) == "RNN(3, 4, nonlinearity='relu')"
    assert repr(gatedrnn.LSTMCell(3, 4, bias=False, peephole=True)) == \
        "LSTMCell(3, 4, bias=False, peephole=True)"


def test_state_dict_loads_both_ways_with_the_torch_class() -> None:
    torch.manual_seed(0)
    ours = gatedrnn.GRUCell(3, 4)
    ref = nn.GRUCell(3, 4)
    ref.load_state_dict(ours.state_dict())
    ours.load_state_dict(ref.state_dict())
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    assert torch.allclose(ours(x, h), ref(x, h), atol=1e-6)


def test_options_are_keyword_only_extras_and_checked() -> None:
    with pytest.raises(TypeError, match="LSTM only"):
        gatedrnn.GRU(3, 4, peephole=True)
    with pytest.raises(TypeError, match="unexpected keyword"):
        gatedrnn.RNN(3, 4, zoneout=0.1)
    with pytest.raises(TypeError):
        gatedrnn.GRU(3, 4, reset_after=None)
    with pytest.raises(ValueError, match="finite"):
        gatedrnn.LSTM(3, 4, forget_bias=float("inf"))
    with pytest.raises(TypeError):
        gatedrnn.LSTM(3, 4, forget_bias=True)
    with pytest.raises(ValueError, match="engine"):
        gatedrnn.LSTMCell(3, 4, engine="gpu")


@pytest.mark.parametrize("engine", ["reference", "fused", "native"])
def test_pruning_by_isinstance_reaches_every_engine(engine) -> None:
    """torch.nn.utils.prune swaps weight_hh_l0 for a plain attribute computed from weight_hh_l0_orig
    and a mask; every engine must read the pruned weight, as torch.nn.LSTM does."""
    from torch.nn.utils import prune

    torch.manual_seed(0)
    ours, ref = gatedrnn.LSTM(3, 5, engine=engine), nn.LSTM(3, 5)
    ref.load_state_dict(ours.state_dict())
    for m in (ours, ref):
        for mod in [m]:
            if isinstance(mod, nn.LSTM):
                prune.l1_unstructured(mod, "weight_hh_l0", amount=0.5)
    x = torch.randn(4, 2, 3)
    assert torch.allclose(ours(x)[0], ref(x)[0], atol=1e-6)


def test_pruned_modules_and_cells_stream_through_the_general_path() -> None:
    from torch.nn.utils import prune

    torch.manual_seed(0)
    for ours, ref, x, hx in (
            (gatedrnn.GRU(3, 5), nn.GRU(3, 5), torch.randn(1, 2, 3), torch.zeros(1, 2, 5)),
            (gatedrnn.GRUCell(3, 5), nn.GRUCell(3, 5), torch.randn(2, 3), torch.zeros(2, 5))):
        ref.load_state_dict(ours.state_dict())
        name = "weight_hh_l0" if isinstance(ours, nn.GRU) else "weight_hh"
        for m in (ours, ref):
            prune.l1_unstructured(m, name, amount=0.5)
        with torch.no_grad():
            for a, b in zip(torch.utils._pytree.tree_leaves(ours(x, hx)),
                            torch.utils._pytree.tree_leaves(ref(x, hx))):
                assert torch.allclose(a, b, atol=1e-6)
