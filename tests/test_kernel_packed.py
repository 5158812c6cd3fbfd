"""The per-step product on a packed W_hh (``gatedrnn.engines.kernels.packed``): where it runs, the
same bits as sgemm_ (``common.gemm``), and the fused LSTM, GRU and RNN give the same outputs and
gradients with it as without it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.engines.kernels import common, gru, lstm, packed, rnn

needs_packed = pytest.mark.skipif(not packed.HAVE_PACKED, reason="torch without MKL's packed GEMM")
# Long enough to pack (MIN_STEPS) and, with MIN_ROWS rows, to leave the lean path for small calls
# (T·B > linear.ROWS), which never packs.
T_LONG = 70


@contextmanager
def counted() -> Iterator[list[bool]]:
    """Records, per kernel call, whether ``pack_weight`` packed (the engines bind it by name)."""
    packs: list[bool] = []

    def spy(*args, **kwargs):
        wp = packed.pack_weight(*args, **kwargs)
        packs.append(wp.size > 0)
        return wp

    with pytest.MonkeyPatch.context() as mp:
        for engine in (lstm, gru, rnn):
            mp.setattr(engine, "pack_weight", spy)
        yield packs


@contextmanager
def mode(name: str) -> Iterator[None]:
    before = packed.MODE
    packed.MODE = name
    try:
        yield
    finally:
        packed.MODE = before


@needs_packed
@settings(max_examples=30)
@given(rows=st.integers(packed.MIN_ROWS, 80), K=st.sampled_from([32, 64, 96, 128, 256, 512, 768]),
       gates=st.sampled_from([1, 3, 4]), beta=st.sampled_from([0.0, 1.0]), seed=st.integers(0, 99))
def test_packed_product_gives_sgemms_bits_in_its_region(rows, K, gates, beta, seed) -> None:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((gates * K, K)).astype(np.float32)
    a = rng.standard_normal((rows, K)).astype(np.float32)
    c0 = rng.standard_normal((rows, gates * K)).astype(np.float32)
    wp = packed.pack_weight(w, packed.MIN_STEPS, rows, keep=False)
    assert wp.size > 0
    want, got = c0.copy(), c0.copy()
    common.gemm(a, w, want, False, True, beta, common.gemm_scratch(np.float32))
    packed.packed_prod(a, wp, w, got, beta, common.gemm_scratch(np.float32))
    assert np.array_equal(got, want)
    assert np.allclose(got, a @ w.T + beta * c0, atol=1e-4)


@needs_packed
def test_packed_product_falls_back_below_its_rows_and_for_views() -> None:
    """Fewer rows than MIN_ROWS (the tail of a packed sequence) run common.prod; row views with a
    leading dimension (a column block of the state, rows of G) read their strides."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((512, 128)).astype(np.float32)
    wp = packed.pack_weight(w, 100, 32, keep=False)
    for rows in (1, 2, 3, 7, packed.MIN_ROWS - 1, packed.MIN_ROWS, 40):
        big = rng.standard_normal((rows, 200)).astype(np.float32)
        a = big[:, 10:138]  # (rows, 128), leading dimension 200
        out = np.zeros((rows + 2, 600), np.float32)
        c = out[1:rows + 1, 44:556]  # (rows, 512), leading dimension 600
        want = np.zeros_like(c)
        common.prod(a, w, want, True, 0.0, common.gemm_scratch(np.float32))
        packed.packed_prod(a, wp, w, c, 0.0, common.gemm_scratch(np.float32))
        assert np.array_equal(c, want), rows
        assert not out[0].any() and not out[-1].any() and not out[:, :44].any()


def test_pack_weight_packs_only_where_it_is_allowed() -> None:
    w32 = np.ones((64, 16), np.float32)
    with mode("inference"):
        assert (packed.pack_weight(w32, 100, 32, keep=False).size > 0) == packed.HAVE_PACKED
        assert packed.pack_weight(w32, 100, 32, keep=True).size == 0  # training's forward
        assert packed.pack_weight(w32.astype(np.float64), 100, 32, keep=False).size == 0
        assert packed.pack_weight(w32, packed.MIN_STEPS - 1, 32, keep=False).size == 0
        assert packed.pack_weight(w32, 100, packed.MIN_ROWS - 1, keep=False).size == 0
        wide = np.ones((64, packed.MAX_K + 1), np.float32)
        assert packed.pack_weight(wide, 100, 32, keep=False).size == 0
    with mode("off"):
        assert packed.pack_weight(w32, 100, 32, keep=False).size == 0
    with mode("always"):
        assert (packed.pack_weight(w32, 100, 32, keep=True).size > 0) == packed.HAVE_PACKED


def _modules(kind: str, I: int, H: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ours = getattr(gatedrnn, kind)(I, H, engine="fused")
    ref = getattr(torch.nn, kind)(I, H)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@needs_packed
@settings(max_examples=8)
@given(kind=st.sampled_from(["LSTM", "GRU", "RNN"]), B=st.integers(16, 40),
       H=st.sampled_from([16, 32, 48]), short=st.integers(0, 15), packed_input=st.booleans())
def test_fused_inference_is_the_same_with_and_without_packing(kind, B, H, short,
                                                              packed_input) -> None:
    """The call packs; with a packed sequence the active rows fall below MIN_ROWS on the last
    steps (those run sgemm_ or the GEMV loops)."""
    T, I = T_LONG, 8
    ours, ref = _modules(kind, I, H)
    x = torch.randn(T, B, I)
    if packed_input:
        lengths = [T] * (B - short) + [max(1, T - 3 - 4 * k) for k in range(short)]
        x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    with torch.no_grad():
        with mode("off"):
            plain = ours(x)
        with mode("inference"), counted() as packs:
            fast = ours(x)
        want = ref(x)
    assert packs == [True]
    flat = [t.data if isinstance(t, torch.nn.utils.rnn.PackedSequence) else t
            for t in (*_flatten(plain), *_flatten(fast), *_flatten(want))]
    n = len(flat) // 3
    for a, b, w in zip(flat[:n], flat[n:2 * n], flat[2 * n:], strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(b, w, atol=2e-5, rtol=1e-4)


def _flatten(out: object) -> list:
    if isinstance(out, tuple):
        return [v for o in out for v in _flatten(o)]
    return [out]


@needs_packed
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_training_forward_packs_only_with_mode_always_and_the_gradients_agree(kind) -> None:
    T, B, I, H = T_LONG, 24, 8, 32
    ours, _ = _modules(kind, I, H)
    x = torch.randn(T, B, I)
    grads = {}
    for name in ("off", "inference", "always"):
        ours.zero_grad()
        with mode(name), counted() as packs:
            y = ours(x)[0]
        assert packs == [name == "always"]
        y.square().sum().backward()
        grads[name] = [y.detach()] + [p.grad.clone() for p in ours.parameters()]
    for name in ("inference", "always"):
        assert all(torch.equal(a, b) for a, b in zip(grads["off"], grads[name], strict=True))


@needs_packed
@pytest.mark.parametrize("kind,extra", [
    ("LSTM", {"proj_size": 8}), ("LSTM", {"layer_norm": True}), ("LSTM", {"peephole": True}),
    ("LSTM", {"num_layers": 2, "bidirectional": True}), ("GRU", {"layer_norm": True}),
    ("GRU", {"reset_after": False}), ("RNN", {"nonlinearity": "relu"}),
])
def test_variants_give_the_same_bits_with_and_without_packing(kind, extra) -> None:
    """The variants' loops (projection, layer norm, peepholes, the Cho et al. GRU, which never
    packs) on a call long and wide enough to pack, in evaluation."""
    torch.manual_seed(0)
    T, B, I, H = T_LONG, packed.MIN_ROWS + 4, 8, 32
    m = getattr(gatedrnn, kind)(I, H, engine="fused", **extra).eval()
    x = torch.randn(T, B, I)
    with torch.no_grad():
        with mode("off"):
            want = _flatten(m(x))
        with mode("inference"), counted() as packs:
            got = _flatten(m(x))
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))
    cho = extra.get("reset_after") is False  # two products a step: never packed
    assert packs == [] if cho else packs and all(packs)
