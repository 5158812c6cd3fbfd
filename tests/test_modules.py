"""gatedrnn.LSTM/GRU/RNN against torch.nn with copied weights: outputs and every gradient."""

from __future__ import annotations

import itertools
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.engines import stack
from parity import Case, assert_parity, build, make_inputs

KINDS = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
INPUTS = ("padded", "packed_sorted", "packed_unsorted", "unbatched")


def _sweep():
    """Every input kind x cell x layers x direction, with the remaining flags varied alongside."""
    for i, (kind, inp, layers, bi) in enumerate(itertools.product(KINDS, INPUTS, (1, 2, 3), (False, True))):
        yield Case(kind=kind, input=inp, layers=layers, bidirectional=bi, batch_first=i % 2 == 0,
                   bias=i % 3 != 0, hx=i % 4 < 2, proj=3 if kind == "LSTM" and i % 5 < 2 else 0, seed=i)


@pytest.mark.parametrize("case", list(_sweep()), ids=str)
def test_reference_matches_torch_float64(case: Case) -> None:
    assert_parity(case, "reference")


@pytest.mark.parametrize("kind", KINDS)
def test_reference_matches_torch_float32(kind: str) -> None:
    assert_parity(Case(kind=kind, layers=2, bidirectional=True, input="packed_unsorted", hx=True,
                       dtype=torch.float32, T=7, B=4), "reference")


cases = st.builds(
    Case,
    kind=st.sampled_from(KINDS), layers=st.integers(1, 3), bidirectional=st.booleans(),
    batch_first=st.booleans(), bias=st.booleans(), proj=st.sampled_from([0, 0, 2]),
    input=st.sampled_from(INPUTS), hx=st.booleans(), T=st.integers(1, 6), B=st.integers(1, 4),
    I=st.integers(1, 5), H=st.integers(3, 6), seed=st.integers(0, 10_000),
)


@settings(max_examples=40, deadline=None)
@given(cases)
def test_reference_random_configurations(case: Case) -> None:
    if case.kind != "LSTM":
        case = Case(**{**case.__dict__, "proj": 0})
    assert_parity(case, "reference")


def test_state_dict_round_trip_both_ways() -> None:
    torch.manual_seed(0)
    for ours, theirs in ((gatedrnn.LSTM(3, 5, 2, proj_size=2, bidirectional=True),
                          torch.nn.LSTM(3, 5, 2, proj_size=2, bidirectional=True)),
                         (gatedrnn.GRU(3, 5, 2, bias=False), torch.nn.GRU(3, 5, 2, bias=False)),
                         (gatedrnn.RNN(3, 5, nonlinearity="relu"), torch.nn.RNN(3, 5, nonlinearity="relu"))):
        assert list(ours.state_dict()) == list(theirs.state_dict())
        theirs.load_state_dict(ours.state_dict())
        again = type(ours)(**{k: v for k, v in ours.get_config().items() if k not in ("type", "dtype")})
        again.load_state_dict(theirs.state_dict())
        for a, b in zip(again.state_dict().values(), ours.state_dict().values()):
            assert torch.equal(a, b)


def test_default_initialisation_draws_torch_numbers() -> None:
    """Same seed, same weights as torch.nn: the parameters are registered and drawn in its order."""
    for make_ours, make_ref in ((lambda: gatedrnn.LSTM(4, 6, 2, bidirectional=True),
                                 lambda: torch.nn.LSTM(4, 6, 2, bidirectional=True)),
                                (lambda: gatedrnn.GRU(4, 6), lambda: torch.nn.GRU(4, 6))):
        torch.manual_seed(3)
        ours = make_ours()
        torch.manual_seed(3)
        ref = make_ref()
        for a, b in zip(ours.state_dict().values(), ref.state_dict().values()):
            assert torch.equal(a, b)


def test_dropout_between_layers_only_in_training() -> None:
    torch.manual_seed(0)
    m = gatedrnn.GRU(3, 8, num_layers=2, dropout=0.5, engine="reference")
    x = torch.randn(6, 2, 3)
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])
    m.train()
    assert not torch.equal(m(x)[0], m(x)[0])
    ref = torch.nn.GRU(3, 8, num_layers=2, dropout=0.5)
    ref.load_state_dict(m.state_dict())
    ref.eval()
    m.eval()
    assert torch.allclose(m(x)[0], ref(x)[0], atol=1e-6)


def test_config_round_trip() -> None:
    m = gatedrnn.LSTM(3, 7, num_layers=2, proj_size=4, peephole=True, layer_norm=True, dtype=torch.float64)
    again = gatedrnn.from_config(m.get_config())
    assert again.get_config() == m.get_config()
    assert [n for n, _ in again.named_parameters()] == [n for n, _ in m.named_parameters()]


def test_empty_batch_gives_empty_output_like_torch() -> None:
    out, (h, c) = gatedrnn.LSTM(3, 4)(torch.randn(5, 0, 3))
    ref, (rh, rc) = torch.nn.LSTM(3, 4)(torch.randn(5, 0, 3))
    assert out.shape == ref.shape and h.shape == rh.shape and c.shape == rc.shape


def test_gradcheck_reference_float64() -> None:
    torch.manual_seed(0)
    for m in (gatedrnn.LSTM(2, 3, proj_size=2, bidirectional=True, engine="reference").double(),
              gatedrnn.GRU(2, 3, reset_after=False, engine="reference").double()):
        x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, m=m: m(x)[0], (x,))


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]), layers=st.integers(1, 3),
       bidirectional=st.booleans(), bias=st.booleans(), batch_first=st.booleans(),
       unbatched=st.booleans(), B=st.integers(1, 4), dtype=st.sampled_from([torch.float32, torch.float64]),
       seed=st.integers(0, 999))
def test_one_step_inference_takes_the_step_kernels_and_matches_torch(
        kind, layers, bidirectional, bias, batch_first, unbatched, B, dtype, seed) -> None:
    """Streaming calls (T = 1, no autograd) skip stack.stacked and still equal torch.nn."""
    case = Case(kind=kind, layers=layers, bidirectional=bidirectional, bias=bias, dtype=dtype,
                batch_first=batch_first, input="unbatched" if unbatched else "padded", hx=True,
                T=1, B=B, seed=seed)
    ours, ref = build(case, "auto")
    x, hx, _ = make_inputs(case, torch.Generator().manual_seed(seed))
    with torch.no_grad(), mock.patch.object(stack, "stacked", None):  # would fail loudly
        got = ours(x, hx)
    with torch.no_grad():
        want = ref(x, hx)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=tol)


def test_docstring_examples_run() -> None:
    import doctest

    from gatedrnn.engines import dispatch
    from gatedrnn.modules import init, lstm_gru_rnn, rnn_cells

    for module in (lstm_gru_rnn, rnn_cells, dispatch, init):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__
