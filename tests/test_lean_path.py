"""The lean inference path (``gatedrnn.engines.lean_path``): a short sequence at a small batch goes straight
to the fused time loops. It must give torch.nn's results, the general fused path's results bit for
bit, and step aside for every call it does not compute."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.engines import lean_path
from parity import TOL, Case, build, make_inputs
from parity import cases as parity_cases

cases = parity_cases(proj=st.just(0), input=st.sampled_from(["padded", "unbatched"]),
                     B=st.integers(1, 3), H=st.integers(1, 6))


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    """The same kernels on the same inputs: equal up to MKL's rounding, which for a small GEMM can
    depend on how its operands happen to be aligned in memory (a few ulp; measured <= 2.4e-7)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    tol = 1e-6 if a.dtype == torch.float32 else 1e-14
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def _flat(out) -> list[torch.Tensor]:
    y, state = out
    return [y] + (list(state) if isinstance(state, tuple) else [state])


def _inputs(case: Case):
    x, hx, _ = make_inputs(case, torch.Generator().manual_seed(case.seed + 1))
    detach = (lambda s: tuple(t.detach() for t in s)) if isinstance(hx, tuple) else \
        (lambda s: None if s is None else s.detach())
    return x.detach(), detach(hx)


@settings(max_examples=80, deadline=None)
@given(case=cases, engine=st.sampled_from(["auto", "fused"]), reset_after=st.booleans())
def test_matches_torch_and_the_general_path(case: Case, engine: str, reset_after: bool) -> None:
    ours, ref = build(case, engine)
    ours.eval()
    ref.eval()
    x, hx = _inputs(case)
    with torch.no_grad():
        if case.kind == "GRU" and not reset_after:
            ours.reset_after = False
            lean = lean_path.module_call(ours, x, hx, False)
            assert lean is not None
            general = ours._forward(x, hx, False)
            for a, b in zip(_flat(lean), _flat(general)):
                _same(a, b)
            return
        lean = lean_path.module_call(ours, x, hx, False)
        if engine == "auto" and case.B >= 16:
            return
        assert lean is not None, "a plain small inference must take the lean path"
        general = ours._forward(x, hx, False)  # past the fast paths
        want = ref(x, hx)
        via_module = ours(x, hx)
    assert ours.last_engine == "fused"
    for a, b, c, d in zip(_flat(lean), _flat(general), _flat(want), _flat(via_module)):
        assert a.shape == c.shape and a.dtype == c.dtype
        _same(a, b)
        # (the module call is the streaming kernel when T = 1 and hx is given: close, not equal)
        for got in (a, d):
            torch.testing.assert_close(got, c, atol=TOL[case.dtype], rtol=TOL[case.dtype])


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["LSTM", "GRU"]), nh=st.sampled_from([2, 4]), layers=st.integers(1, 2),
       bidirectional=st.booleans(), T=st.integers(1, 6), B=st.integers(1, 3), hx=st.booleans(),
       reset_after=st.booleans(), seed=st.integers(0, 1000))
def test_head_wise_matches_the_general_path(kind, nh, layers, bidirectional, T, B, hx,
                                            reset_after, seed) -> None:
    torch.manual_seed(seed)
    kw = {"reset_after": reset_after} if kind == "GRU" else {}
    m = getattr(gatedrnn, kind)(3, 8, num_layers=layers, bidirectional=bidirectional,
                                num_heads=nh, **kw).eval()
    x = torch.randn(T, B, 3)
    D = 2 if bidirectional else 1
    h = None
    if hx:
        h = torch.randn(layers * D, B, 8)
        h = (h, torch.randn(layers * D, B, 8)) if kind == "LSTM" else h
    with torch.no_grad():
        lean = lean_path.module_call(m, x, h, False)
        assert lean is not None
        general = m._forward(x, h, False)
    for a, b in zip(_flat(lean), _flat(general)):
        _same(a, b)


def _lstm(**kw) -> gatedrnn.LSTM:
    return gatedrnn.LSTM(3, 4, **kw).eval()


def _short_bias() -> gatedrnn.GRU:
    m = gatedrnn.GRU(3, 4).eval()
    m.bias_hh_l0 = torch.nn.Parameter(torch.zeros(8))
    return m


@pytest.mark.parametrize("make, call", [
    (lambda: _lstm(), lambda m, x: m(x.requires_grad_())),  # autograd
    (lambda: _lstm(peephole=True), lambda m, x: m(x)),
    (lambda: _lstm(layer_norm=True), lambda m, x: m(x)),
    (lambda: _lstm(zoneout=0.1), lambda m, x: m(x)),
    (lambda: _lstm(proj_size=2), lambda m, x: m(x)),
    (lambda: _lstm(engine="reference"), lambda m, x: m(x)),
    (lambda: _lstm(engine="native"), lambda m, x: m(x)),
    (lambda: _lstm(recurrent_dropout=0.3).train().requires_grad_(False), lambda m, x: m(x)),
    (lambda: _lstm(), lambda m, x: m(x, None, True)),  # return_gates
    (lambda: _lstm(), lambda m, x: m(x.double())),  # dtype mismatch: torch's error
    (lambda: _lstm(), lambda m, x: m(torch.randn(2000, 1, 3))),  # too many rows
    (lambda: _lstm(), lambda m, x: m(torch.randn(5, 64, 3))),  # a batch the table gives native
    (lambda: _lstm(), lambda m, x: m(x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))),  # bad hx
    (lambda: _short_bias(), lambda m, x: m(x)),  # a reassigned parameter of the wrong shape
])
def test_steps_aside(make, call, monkeypatch) -> None:
    """Each call the lean path does not compute goes to the general path (which also raises)."""
    taken = []
    real = gatedrnn.engines.lean_path._direction

    def spy(*a, **k):
        taken.append(1)
        return real(*a, **k)

    monkeypatch.setattr(gatedrnn.engines.lean_path, "_direction", spy)
    m = make()
    x = torch.randn(5, 1, 3)
    try:
        call(m, x)
    except (RuntimeError, ValueError):
        pass  # the general path's error (e.g. the dtype mismatch): what torch.nn raises
    assert not taken


def test_taken_for_a_plain_call(monkeypatch) -> None:
    taken = []
    real = gatedrnn.engines.lean_path._direction
    monkeypatch.setattr(gatedrnn.engines.lean_path, "_direction",
                        lambda *a, **k: taken.append(1) or real(*a, **k))
    m = gatedrnn.GRU(3, 4, num_layers=2).eval()
    with torch.no_grad():
        m(torch.randn(40, 1, 3))  # (up to 32 steps the streaming step kernels take it)
    assert len(taken) == 2 and m.last_engine == "fused"


def test_errors_are_torch_errors() -> None:
    """A wrong hx shape is not computed here: torch.nn's RuntimeError comes from the general path."""
    m = gatedrnn.GRU(3, 4).eval()
    with pytest.raises(RuntimeError):
        m(torch.randn(5, 1, 3), torch.zeros(1, 2, 4))
    with pytest.raises(RuntimeError):
        m(torch.randn(5, 1, 2))
