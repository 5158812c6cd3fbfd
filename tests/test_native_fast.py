"""The native route (``gatedrnn.engines.native_path``): where ``engine="auto"`` picks torch's op,
the call goes straight to it from a plan ``gatedrnn.engines.route`` remembers. It must give
torch.nn's outputs and gradients bit for bit, torch.nn's exceptions on bad input, decide afresh
when what decides changes, and stay out of pickles, copies and state dicts."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import parametrize, prune

import gatedrnn
from gatedrnn.engines import dispatch, route
from gatedrnn.engines.rows import Row

_NATIVE = (Row("native", measured_on="design"),)  # a pinned table: torch's op for every call
_PAIRS = {"LSTM": (gatedrnn.LSTM, torch.nn.LSTM), "GRU": (gatedrnn.GRU, torch.nn.GRU),
          "RNN": (gatedrnn.RNN, torch.nn.RNN)}
_CELLS = {"LSTMCell": (gatedrnn.LSTMCell, torch.nn.LSTMCell),
          "GRUCell": (gatedrnn.GRUCell, torch.nn.GRUCell),
          "RNNCell": (gatedrnn.RNNCell, torch.nn.RNNCell)}


def _pair(kind: str, **kw):
    ours_cls, torch_cls = {**_PAIRS, **_CELLS}[kind]
    ours = ours_cls(**kw)
    ref = torch_cls(**kw)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _leaves(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for part in out for t in _leaves(part)]


def _run(m, x, hx, grad: bool):
    """Outputs, then the gradients of every input and parameter (grad mode)."""
    with torch.set_grad_enabled(grad):
        out = _leaves(m(x) if hx is None else m(x, hx))
    if not grad:
        return out
    sum(o.sum() * (i + 1) for i, o in enumerate(out)).backward()
    return out + [x.grad] + [p.grad for p in m.parameters()]


def _equal(a: list, b: list) -> None:
    assert len(a) == len(b)
    for s, t in zip(a, b):
        assert (s is None) == (t is None)
        if s is not None:
            assert s.dtype == t.dtype and s.shape == t.shape and torch.equal(s, t)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(_PAIRS)), T=st.integers(1, 4), B=st.integers(1, 3),
       I=st.integers(1, 5), H=st.integers(1, 6), layers=st.integers(1, 2), bi=st.booleans(),
       batch_first=st.booleans(), unbatched=st.booleans(), proj=st.booleans(),
       with_hx=st.booleans(), train=st.booleans(), grad=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 99))
def test_modules_match_torch_bit_for_bit(kind, T, B, I, H, layers, bi, batch_first, unbatched,
                                         proj, with_hx, train, grad, dtype, seed) -> None:
    torch.manual_seed(seed)
    T = T if grad else max(T, 2)  # (a step without autograd is the streaming step kernels')
    kw = dict(input_size=I, hidden_size=H, num_layers=layers, bidirectional=bi,
              batch_first=batch_first, dtype=dtype)
    if proj and kind == "LSTM" and H > 1:
        kw["proj_size"] = H - 1
    ours, ref = _pair(kind, **kw)
    ours.train(train)
    ref.train(train)
    D, L = 2 if bi else 1, layers
    x = torch.randn((T, I) if unbatched else (B, T, I) if batch_first else (T, B, I), dtype=dtype)
    hx = None
    if with_hx:
        lead = (L * D,) if unbatched else (L * D, B)
        h = torch.randn(*lead, kw.get("proj_size", H), dtype=dtype)
        hx = (h, torch.randn(*lead, H, dtype=dtype)) if kind == "LSTM" else h
    with dispatch.pinned(_NATIVE):
        for _ in range(2):  # the first call fills the memo, the second takes it
            ours.zero_grad()
            ref.zero_grad()
            xa, xb = x.clone().requires_grad_(grad), x.clone().requires_grad_(grad)
            _equal(_run(ours, xa, hx, grad), _run(ref, xb, hx, grad))
            assert ours.last_engine == "native"


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(sorted(_CELLS)), B=st.integers(1, 4), I=st.integers(1, 5),
       H=st.integers(1, 6), unbatched=st.booleans(), with_hx=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 99))
def test_cells_match_torch_bit_for_bit(kind, B, I, H, unbatched, with_hx, dtype, seed) -> None:
    torch.manual_seed(seed)
    ours, ref = _pair(kind, input_size=I, hidden_size=H, dtype=dtype)
    x = torch.randn((I,) if unbatched else (B, I), dtype=dtype)
    hx = None
    if with_hx:
        h = torch.randn((H,) if unbatched else (B, H), dtype=dtype)
        hx = (h, torch.randn_like(h)) if kind == "LSTMCell" else h
    with dispatch.pinned(_NATIVE):
        for _ in range(2):
            ours.zero_grad()
            ref.zero_grad()
            xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
            _equal(_run(ours, xa, hx, True), _run(ref, xb, hx, True))
            assert ours.last_engine == "native"


def _error(m, x, hx):
    try:
        m(x, hx)
    except Exception as e:  # noqa: BLE001 - the class is what is compared
        return type(e)
    return None


@pytest.mark.parametrize("kind", sorted(_PAIRS))
def test_modules_raise_torch_errors(kind) -> None:
    ours, ref = _pair(kind, input_size=3, hidden_size=4)
    lstm = kind == "LSTM"
    bad = [
        (torch.randn(2, 2, 5), None),  # input size
        (torch.randn(2, 2, 3, 1), None),  # 4-D
        (torch.randn(2, 2, 3, dtype=torch.float64), None),  # dtype against the weights
        (torch.randn(2, 2, 3), (torch.randn(1, 3, 4),) * 2 if lstm else torch.randn(1, 3, 4)),
        (torch.randn(2, 2, 3), (torch.randn(2, 4),) * 2 if lstm else torch.randn(2, 4)),
        (torch.randn(2, 3), (torch.randn(1, 2, 4),) * 2 if lstm else torch.randn(1, 2, 4)),
        (torch.randn(2, 2, 3), (torch.randn(1, 2, 4, dtype=torch.float64),) * 2 if lstm
         else torch.randn(1, 2, 4, dtype=torch.float64)),
    ]
    with dispatch.pinned(_NATIVE):
        ours(torch.randn(2, 2, 3, requires_grad=True))  # the memo holds a good call's key
        for x, hx in bad:
            expected = _error(ref, x, hx)
            assert expected is not None
            for _ in range(2):
                assert _error(ours, x, hx) is expected, (x.shape, hx)


@pytest.mark.parametrize("kind", sorted(_CELLS))
def test_cells_raise_torch_errors(kind) -> None:
    ours, ref = _pair(kind, input_size=3, hidden_size=4)
    lstm = kind == "LSTMCell"
    bad = [
        (torch.randn(2, 5), None),
        (torch.randn(2, 2, 3), None),
        (torch.randn(2, 3), (torch.randn(3, 4),) * 2 if lstm else torch.randn(3, 4)),
        (torch.randn(2, 3), (torch.randn(1, 2, 4),) * 2 if lstm else torch.randn(1, 2, 4)),
    ]
    with dispatch.pinned(_NATIVE):
        for x, hx in bad:
            x.requires_grad_()
            expected = _error(ref, x, hx)
            assert expected is not None
            for _ in range(2):
                assert _error(ours, x, hx) is expected, (x.shape, hx)


def _memo_keys(m) -> int:
    return len(route.routes(m))


def test_the_memo_follows_what_decides() -> None:
    m = gatedrnn.RNN(3, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    with dispatch.pinned(_NATIVE):
        m(x)
        assert m.last_engine == "native" and _memo_keys(m) == 1
        m(x)
        assert _memo_keys(m) == 1
        m.engine = "fused"  # the engine attribute changes at any time
        m(x)
        assert m.last_engine == "fused"
        m.engine = "auto"
        m.eval()
        m(x)
        m.double()  # the parameters' dtype
        m(x.double())
        assert m.last_engine == "native"
        assert _memo_keys(m) == 4  # (the fused call's route is remembered too)
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if threads > 1 else 2)  # the thread count: the table reads it
        try:
            m(x.double())
        finally:
            torch.set_num_threads(threads)
        with torch.no_grad():  # grad mode
            m(x.double())
        assert _memo_keys(m) == 6
    # Another table: the memo's answers were the pinned one's.
    with dispatch.pinned((Row("fused", measured_on="design"),)):
        m(x.double())
        assert m.last_engine == "fused"


def test_new_parameters_are_used() -> None:
    ours, ref = _pair("GRU", input_size=3, hidden_size=4)
    x = torch.randn(5, 2, 3)
    with dispatch.pinned(_NATIVE), torch.no_grad():
        ours(x)
        w = torch.nn.Parameter(torch.randn(12, 3))
        ours.weight_ih_l0 = w
        ref.weight_ih_l0 = torch.nn.Parameter(w.detach().clone())
        _equal(_leaves(ours(x)), _leaves(ref(x)))
        # A swap behind setattr's back (as torch.func.functional_call may): torch.nn refreshes.
        fresh = {n: torch.randn_like(p) for n, p in ours.named_parameters()}
        _equal(_leaves(torch.func.functional_call(ours, fresh, (x,))),
               _leaves(torch.func.functional_call(ref, fresh, (x,))))


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # (torch.nn's own trace warns)
def test_explain_and_traces_see_the_general_path() -> None:
    m = gatedrnn.LSTM(3, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    with dispatch.pinned(_NATIVE):
        m(x)
        why = dispatch.explain(m, x)
        assert why.engine == "native" and why.source != "asked"
        traced = torch.jit.trace(m, (x.detach(),), check_trace=False)
        assert traced(torch.randn(7, 2, 3))[0].shape == (7, 2, 4)


@pytest.mark.parametrize("kind", ["LSTM", "RNNCell"])
def test_pickles_and_copies_carry_no_memo(kind) -> None:
    ours, _ = _pair(kind, input_size=3, hidden_size=4)
    x = torch.randn(5, 2, 3) if kind == "LSTM" else torch.randn(2, 3)
    with dispatch.pinned(_NATIVE):
        ours(x.requires_grad_())
        assert _memo_keys(ours) == 1
        for other in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
            assert _memo_keys(other) == 0
            _equal(_leaves(other(x)), _leaves(ours(x)))
    assert not any("memo" in k for k in ours.__dict__)
    assert set(ours.state_dict()) == {n for n, _ in ours.named_parameters()}


@pytest.mark.parametrize("how", ["parametrize", "prune"])
def test_parametrized_and_pruned_weights(how) -> None:
    ours, ref = _pair("LSTM", input_size=3, hidden_size=4)
    for m in (ours, ref):
        if how == "parametrize":
            parametrize.register_parametrization(m, "weight_hh_l0", _Double())
        else:
            prune.l1_unstructured(m, "weight_hh_l0", amount=0.5)
    with dispatch.pinned(_NATIVE):
        for _ in range(2):
            x = torch.randn(5, 2, 3)
            _equal(_leaves(ours(x.requires_grad_())), _leaves(ref(x)))
            assert ours.last_engine == "native"


class _Double(torch.nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w
