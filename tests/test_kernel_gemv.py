"""The packed float32 GEMV of one or two rows (kernels.gemv) and the loops that run on it.

Each output is one chain of fused multiply-adds in the order of the inputs, so its error is
bounded by recursive summation's, γ_(K+1) · (|c| + Σ_k |a_k w_jk|) with γ_n = n·u / (1 − n·u),
u = 2^-24, and its bits do not depend on which outputs or rows share a call. The module tests
check that the one-thread loops of one or two rows, which run on it, agree with torch.nn.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.engines import step_grad
from gatedrnn.engines.kernels import gemv, pair
from gatedrnn.engines.kernels.common import JIT, prod

U = 2.0 ** -24


@numba.njit(**JIT)
def _gemv(a, wp, c, tail):  # gemv inlines into the loops; a compiled caller of its own
    gemv.gemv(a, wp, c, tail)


def _run(a: np.ndarray, w: np.ndarray, c: np.ndarray) -> np.ndarray:
    out = c.copy()
    _gemv(a, gemv.pack(w), out, np.empty((2, gemv.UNITS), np.float32))
    return out


@settings(max_examples=40, deadline=None)
@given(R=st.integers(1, 3), K=st.integers(1, 200), N=st.integers(1, 300),
       cut=st.floats(0.0, 1.0), seed=st.integers(0, 2 ** 16))
def test_within_recursive_summations_bound_and_the_same_bits_however_cut(R, K, N, cut, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((R, K)).astype(np.float32)
    w = rng.standard_normal((N, K)).astype(np.float32)
    c = rng.standard_normal((R, N)).astype(np.float32)
    whole = _run(a, w, c)
    exact = c.astype(np.float64) + a.astype(np.float64) @ w.astype(np.float64).T
    size = np.abs(c).astype(np.float64) + np.abs(a).astype(np.float64) @ np.abs(w).astype(np.float64).T
    gamma = (K + 1) * U / (1 - (K + 1) * U)
    assert np.all(np.abs(whole - exact) <= gamma * size)
    m = int(cut * N)  # the outputs in two calls, and each row on its own
    parts = np.concatenate([_run(a, w[:m], c[:, :m]), _run(a, w[m:], c[:, m:])], axis=1)
    assert np.array_equal(parts, whole)
    rows = np.concatenate([_run(a[r:r + 1], w, c[r:r + 1]) for r in range(R)])
    assert np.array_equal(rows, whole)


def test_pack_pads_with_zeros_in_a_reused_buffer() -> None:
    gemv.pack(np.full((200, 3), 7.0, np.float32))  # the thread's buffer, now holding sevens
    w = np.arange(70 * 3, dtype=np.float32).reshape(70, 3)
    wp = gemv.pack(w)
    assert wp.shape == (2, 3, gemv.UNITS) and wp.ctypes.data % 64 == 0
    assert np.array_equal(wp[0], w[:64].T) and np.array_equal(wp[1, :, :6], w[64:].T)
    assert not wp[1, :, 6:].any()


@pytest.fixture
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("_two_threads")
@settings(max_examples=10, deadline=None)
@given(cell=st.sampled_from(["LSTM", "GRU"]), B=st.sampled_from([1, 2]),
       T=st.integers(0, 40), H=st.integers(1, 150), bidirectional=st.booleans(),
       seed=st.integers(0, 99))
def test_modules_on_the_packed_product_agree_with_torch(cell, B, T, H, bidirectional, seed):
    torch.manual_seed(seed)
    ref = getattr(torch.nn, cell)(5, H, num_layers=2, bidirectional=bidirectional)
    ours = getattr(gatedrnn, cell)(5, H, num_layers=2, bidirectional=bidirectional,
                                   engine="fused")
    ours.load_state_dict(ref.state_dict())
    T += pair.MIN_STEPS[B - 1]
    x = torch.randn(T, B, 5) * 2
    assert pair.packs(B, H, T, 4 if cell == "LSTM" else 3)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    flat = lambda o: [o[0], *(o[1] if isinstance(o[1], tuple) else (o[1],))]  # noqa: E731
    for a, b in zip(flat(want), flat(got)):
        torch.testing.assert_close(b, a, atol=2e-6, rtol=1e-5)  # measured: at most 2e-7


def test_the_one_row_loops_take_the_packed_product(monkeypatch) -> None:
    """A call of one row below MIN_BYTES packs W_hh (a spy on ``gemv.pack``), and the result
    equals a call on the general loop (``common.prod``) within float32's rounding, not bit for
    bit: the sums run in another order."""
    calls = []
    real = gemv.pack
    monkeypatch.setattr(gemv, "pack", lambda w: calls.append(w.shape) or real(w))
    torch.manual_seed(0)
    m = gatedrnn.LSTM(8, 64, engine="fused").eval()
    x = torch.randn(pair.MIN_STEPS[0] + 4, 1, 8)
    with torch.no_grad():
        y = m(x)[0]
        monkeypatch.setattr(pair, "MIN_STEPS", (10 ** 9, 10 ** 9))
        general = m(x)[0]
    assert calls == [(256, 64)]
    torch.testing.assert_close(y, general, atol=1e-6, rtol=1e-5)


# (proj_size 8 needs H > 8)
VARIANTS = [("LSTM", {"layer_norm": True}), ("LSTM", {"peephole": True}), ("LSTM", {"zoneout": 0.2}),
            ("LSTM", {"proj_size": 8}), ("GRU", {"layer_norm": True}), ("GRU", {"zoneout": 0.2})]


@pytest.mark.usefixtures("_two_threads")
@settings(max_examples=12, deadline=None)
@given(which=st.integers(0, len(VARIANTS) - 1), B=st.sampled_from([1, 2]), H=st.integers(9, 70),
       extra=st.integers(0, 20), seed=st.integers(0, 99))
def test_variants_of_one_or_two_rows_run_the_packed_product(which, B, H, extra, seed):
    """The general loops (a variant) of one or two rows in inference run on the packed W_hh too,
    and agree with the reference engine (the equations under torch) and with the loop on
    ``common.prod``'s product (a layer norm amplifies float32's rounding: measured up to 2e-5)."""
    cell, options = VARIANTS[which]
    torch.manual_seed(seed)
    ours = getattr(gatedrnn, cell)(5, H, engine="fused", **options).eval()
    ref = getattr(gatedrnn, cell)(5, H, engine="reference", **options).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(pair.MIN_STEPS[B - 1] + extra, B, 5) * 2
    calls: list = []
    real = gemv.pack
    with pytest.MonkeyPatch.context() as patch, torch.no_grad():
        patch.setattr(gemv, "pack", lambda w: calls.append(w.shape) or real(w))
        got, want = ours(x)[0], ref(x)[0]
        patch.setattr(pair, "MIN_STEPS", (10 ** 9, 10 ** 9))
        general = ours(x)[0]
    assert len(calls) == 1
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got, general, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("cell", "options"), [("LSTM", {"layer_norm": True}), ("GRU", {"zoneout": 0.2})])
def test_the_variants_loop_reads_the_packed_weight(cell, options, monkeypatch) -> None:
    """With the packed W_hh replaced by zeros, a variant's loop gives what a zero W_hh gives: it
    runs the product on the packed weight, not on W_hh itself."""
    torch.manual_seed(0)
    m = getattr(gatedrnn, cell)(4, 32, engine="fused", **options).eval()
    x = torch.randn(pair.MIN_STEPS[0] + 3, 1, 4)
    real = pair.packed_rows

    def zeroed(*args):
        rows = real(*args)
        return None if rows is None else (np.zeros_like(rows[0]), *rows[1:])

    monkeypatch.setattr(pair, "packed_rows", zeroed)
    with torch.no_grad():
        got = m(x)[0]
        m.weight_hh_l0.zero_()
        monkeypatch.setattr(pair, "MIN_STEPS", (10 ** 9, 10 ** 9))  # the general loop's product
        want = m(x)[0]
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@numba.njit(**JIT)
def _prod_rows_of_w(a, w, c, beta):  # common.prod's c = a w + beta c, one compiled caller
    prod(a, w, c, False, beta, (np.zeros(8, np.int32), np.zeros(2, np.float32)))


@settings(max_examples=40, deadline=None)
@given(R=st.integers(1, 2), K=st.integers(1, 300), N=st.integers(1, 200), beta=st.sampled_from([0.0, 1.0]),
       seed=st.integers(0, 2 ** 16))
def test_the_transposed_pack_gives_the_backward_products_bits(R, K, N, beta, seed):
    """``pack_t(w)`` is ``pack(w.T)`` without the transpose, and ``gemv`` on it gives
    ``common.prod``'s c = a w + beta c of one or two rows to the bit: both add a's terms to each
    output in the order of k, one fused multiply-add each."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((R, K)).astype(np.float32)
    w = rng.standard_normal((K, N)).astype(np.float32)
    c = rng.standard_normal((R, N)).astype(np.float32)
    packed = gemv.pack_t(w).copy()
    assert np.array_equal(packed, gemv.pack(np.ascontiguousarray(w.T)))
    want = c.copy()
    _prod_rows_of_w(a, w, want, beta)
    got = c * np.float32(beta)
    _gemv(a, packed, got, np.empty((2, gemv.UNITS), np.float32))
    assert np.array_equal(got, want)


# Training of one or two rows: the variants whose backward loops take the packed W_hh^T.
TRAINED = [("LSTM", {}), ("LSTM", {"proj_size": 8}), ("LSTM", {"peephole": True}),
           ("LSTM", {"layer_norm": True}),
           ("LSTM", {"recurrent_dropout": 0.3, "zoneout": 0.1}), ("LSTM", {"bidirectional": True}),
           ("GRU", {}), ("GRU", {"layer_norm": True}), ("GRU", {"recurrent_dropout": 0.3}),
           ("GRU", {"zoneout": 0.2, "bidirectional": True})]


def _grads(m, x: torch.Tensor, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)  # the same dropout masks in every run
    m.zero_grad()
    x = x.clone().requires_grad_()
    y, state = m(x)
    parts = state if isinstance(state, tuple) else (state,)
    (y.square().sum() + sum(s.sum() for s in parts)).backward()
    return [y.detach(), x.grad, *(p.grad for p in m.parameters())]


@pytest.mark.usefixtures("_two_threads")
@settings(max_examples=12, deadline=None)
@given(which=st.integers(0, len(TRAINED) - 1), B=st.sampled_from([1, 2]), H=st.integers(9, 90),
       extra=st.integers(0, 100), seed=st.integers(0, 99))
def test_training_of_one_or_two_rows_backward_on_the_packed_weight_keeps_the_bits(which, B, H, extra,
                                                                                 seed):
    """Training's backward loops of one or two rows run their product on W_hh^T packed for
    ``gemv`` (a spy on ``pair.packed_rows_t``) and give the gradients of the loop on
    ``common.prod`` bit for bit; the forward pass (on the packed W_hh from ``pair.MIN_STEPS``)
    agrees with the reference engine (the equations under torch autograd) in float64.

    Measured against float64 (30 calls per cell): beyond a relative 1e-4, at most 1.1e-6 (LSTM,
    peepholes) and 4.4e-5 (GRU, layer norm). The LSTM's layer norm of c' is ill-conditioned
    here: the reference engine in float32 itself was 18 off, so it is compared by bits only."""
    cell, options = TRAINED[which]
    torch.manual_seed(seed)
    ours = getattr(gatedrnn, cell)(5, H, engine="fused", **options)
    ref = getattr(gatedrnn, cell)(5, H, engine="reference", **options).double()
    ref.load_state_dict(ours.state_dict())
    # (at one row the forward pass packs from pair.MIN_STEPS[0] steps, the backward from fewer;
    # up to step_grad.MAX_STEPS steps a training call runs as one-node steps, not these loops)
    x = torch.randn(max(pair.MIN_STEPS_BACKWARD, step_grad.MAX_STEPS + 1) + extra, B, 5)
    taken: list[bool] = []
    real = pair.packed_rows_t
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pair, "packed_rows_t", lambda *a: taken.append(real(*a) is not None) or real(*a))
        packed = _grads(ours, x, seed)
        patch.setattr(pair, "packed_rows_t", lambda *a: None)
        plain = _grads(ours, x, seed)
    assert taken and all(taken)
    for a, b in zip(packed, plain):
        assert torch.equal(a, b)
    if cell == "LSTM" and options.get("layer_norm"):
        return
    for a, b in zip(packed, _grads(ref, x.double(), seed)):
        torch.testing.assert_close(a.double(), b, atol=2e-4, rtol=1e-4)


def test_the_backward_loop_reads_the_packed_weight(monkeypatch) -> None:
    """With W_hh^T's pack replaced by zeros, the gradient that flows back through the recurrence
    (dL/dh_0) changes: the backward loop runs its product on the packed weight (the bit-for-bit
    test above then shows that it is the right product)."""
    torch.manual_seed(0)
    m = gatedrnn.GRU(4, 32, engine="fused")
    x = torch.randn(pair.MIN_STEPS[0] + 3, 1, 4)
    real = pair.packed_rows_t

    def zeroed(*args):
        rows = real(*args)
        return None if rows is None else (np.zeros_like(rows[0]), *rows[1:])

    grads = []
    for fake in (zeroed, real):
        monkeypatch.setattr(pair, "packed_rows_t", fake)
        h0 = torch.randn(1, 1, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
        m(x, h0)[0].sum().backward()
        grads.append(h0.grad)
    assert not torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_training_of_two_rows_packs_a_weight_of_any_size(cell, monkeypatch) -> None:
    """Training has no pair, so two rows pack W_hh above the inference border too (here every
    W_hh is above it), up to ``MAX_TRAINING_BYTES``; one row keeps the border. The gradients are
    the unpacked loop's, the outputs within float32's rounding of it."""
    monkeypatch.setattr(pair, "MIN_BYTES", 0)
    torch.manual_seed(0)
    m = getattr(gatedrnn, cell)(5, 24, engine="fused")
    forward: list[bool] = []
    backward: list[bool] = []
    real, real_t = pair.packed_rows, pair.packed_rows_t
    monkeypatch.setattr(pair, "packed_rows", lambda *a: forward.append(real(*a) is not None) or real(*a))
    monkeypatch.setattr(pair, "packed_rows_t",
                        lambda *a: backward.append(real_t(*a) is not None) or real_t(*a))
    for B, packs in ((2, True), (1, False)):
        forward.clear()
        backward.clear()
        x = torch.randn(pair.MIN_STEPS[0] + 4, B, 5)
        got = _grads(m, x, 0)
        assert forward == [packs] and backward == [packs]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pair, "packed_rows", lambda *a: None)
            patch.setattr(pair, "packed_rows_t", lambda *a: None)
            want = _grads(m, x, 0)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    monkeypatch.setattr(pair, "MAX_TRAINING_BYTES", 0)  # ... up to a size
    forward.clear()
    backward.clear()
    _grads(m, torch.randn(pair.MIN_STEPS[0] + 4, 2, 5), 0)
    assert forward == [False] and backward == [False]
