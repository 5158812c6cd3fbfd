"""engine="native": torch.nn's own forward on gatedrnn's parameters, so torch.nn's results bit for
bit (outputs, states and every gradient), and a clear error for what torch has no op for."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from parity import Case, build, make_inputs
from parity import cases as parity_cases


def _flat(out) -> list[torch.Tensor]:
    y, state = out
    y = y.data if hasattr(y, "batch_sizes") else y
    return [y] + (list(state) if isinstance(state, tuple) else [state])


def _run(module, case: Case, train: bool, seed: int) -> list[torch.Tensor]:
    module.train(train)
    g = torch.Generator().manual_seed(case.seed + 1)
    x, hx, leaves = make_inputs(case, g)
    torch.manual_seed(seed)  # inter-layer dropout draws from the global generator, as torch's
    outs = _flat(module(x, hx))
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    params = list(module.parameters())
    grads = torch.autograd.grad(loss, leaves + params, allow_unused=True)
    return [o.detach() for o in outs] + [torch.zeros(()) if gr is None else gr for gr in grads]


# (T up to 6 and B up to 4 keep the 60 examples with gradients fast)
cases = parity_cases(T=st.integers(1, 6), B=st.integers(1, 4), H=st.integers(3, 6))


@settings(max_examples=60, deadline=None)
@given(case=cases, train=st.booleans(), dropout=st.sampled_from([0.0, 0.4]))
def test_native_is_torch_bit_for_bit(case: Case, train: bool, dropout: float) -> None:
    if case.kind != "LSTM":
        case = Case(**{**case.__dict__, "proj": 0})
    ours, ref = build(case, "native")
    ours.dropout = ref.dropout = dropout if case.layers > 1 else 0.0
    a, b = _run(ours, case, train, case.seed), _run(ref, case, train, case.seed)
    assert ours.last_engine == "native"
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.dtype == v.dtype and torch.equal(u, v)


@pytest.mark.parametrize("cls,ref_cls", [(gatedrnn.LSTMCell, torch.nn.LSTMCell),
                                         (gatedrnn.GRUCell, torch.nn.GRUCell),
                                         (gatedrnn.RNNCell, torch.nn.RNNCell)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_cells_are_torch_bit_for_bit(cls, ref_cls, dtype) -> None:
    torch.manual_seed(0)
    ours = cls(3, 5, engine="native", dtype=dtype)
    ref = ref_cls(3, 5, dtype=dtype)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, dtype=dtype, requires_grad=True)
    results = []
    for m in (ours, ref):
        out = m(x)
        flat = list(out) if isinstance(out, tuple) else [out]
        loss = sum((o * (i + 1)).sum() for i, o in enumerate(flat))
        results.append(flat + list(torch.autograd.grad(loss, [x] + list(m.parameters()))))
    assert ours.last_engine == "native"
    for u, v in zip(*results):
        assert torch.equal(u, v)


@pytest.mark.parametrize("kw", [{"layer_norm": True}, {"peephole": True}, {"zoneout": 0.1},
                                {"zoneout_cell": 0.1}, {"recurrent_dropout": 0.1},
                                {"weight_drop": 0.1}])
def test_native_refuses_variants_naming_the_option(kw) -> None:
    m = gatedrnn.LSTM(3, 4, engine="native", **kw)
    with pytest.raises(ValueError, match=f"{next(iter(kw))}.*'auto', 'fused' or 'reference'"):
        m(torch.randn(5, 2, 3))


def test_native_refuses_reset_before_gru_and_return_gates() -> None:
    with pytest.raises(ValueError, match="reset_after=False"):
        gatedrnn.GRU(3, 4, engine="native", reset_after=False)(torch.randn(5, 2, 3))
    with pytest.raises(ValueError, match="return_gates"):
        gatedrnn.GRU(3, 4, engine="native")(torch.randn(5, 2, 3), return_gates=True)
    with pytest.raises(ValueError, match="layer_norm"):
        gatedrnn.GRUCell(3, 4, engine="native", layer_norm=True)(torch.randn(2, 3))


def test_native_runs_forget_bias_and_init() -> None:
    """They only change initial values, which torch's op does not care about."""
    m = gatedrnn.LSTM(3, 4, engine="native", forget_bias=1.0, init="orthogonal")
    ref = torch.nn.LSTM(3, 4)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(5, 2, 3)
    assert torch.equal(m(x)[0], ref(x)[0])


@pytest.mark.parametrize("move", ["double", "to_float64", "half", "bfloat16"])
def test_native_follows_module_moves(move) -> None:
    torch.manual_seed(0)
    m = gatedrnn.GRU(3, 4, num_layers=2, engine="native")
    ref = torch.nn.GRU(3, 4, num_layers=2)
    ref.load_state_dict(m.state_dict())
    dtype = {"double": torch.float64, "to_float64": torch.float64, "half": torch.float16,
             "bfloat16": torch.bfloat16}[move]
    for mod in (m, ref):
        if move == "double":
            mod.double()
        elif move == "half":
            mod.half()
        else:
            mod.to(dtype)
    x = torch.randn(5, 2, 3, dtype=dtype)
    assert torch.equal(m(x)[0], ref(x)[0])


def test_native_survives_deepcopy_and_pickle() -> None:
    torch.manual_seed(0)
    m = gatedrnn.LSTM(3, 4, proj_size=2, bidirectional=True, engine="native")
    x = torch.randn(5, 2, 3)
    want = m(x)[0]
    for again in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert torch.equal(again(x)[0], want)


def test_native_double_backward_is_torchs() -> None:
    """A gradient penalty (create_graph=True, then backward) through the native engine gives
    torch.nn's gradients: the graph is torch's own."""
    torch.manual_seed(0)
    ours, ref = gatedrnn.LSTM(3, 4, engine="native"), torch.nn.LSTM(3, 4)
    ref.load_state_dict(ours.state_dict())
    lin = torch.nn.Linear(3, 3)
    x = torch.randn(5, 2, 3, requires_grad=True)
    grads = []
    for m in (ours, ref):
        y = m(lin(x))[0]
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        penalty = gx.square().sum()
        grads.append(torch.autograd.grad(penalty, [m.weight_hh_l0, lin.weight]))
    for a, b in zip(*grads):
        assert torch.equal(a, b)
