"""The two-thread loops of one or two rows (kernels.pair): the one-thread loop's bits.

The halves split the hidden units and meet once per step. Whichever way a call ran (as a pair,
or on one thread when the second half did not start in time), its outputs and final state must
equal the one-thread loop's to the bit; the halves' arithmetic is also checked without threads,
one step at a time, so a wrong cut shows whatever the scheduler does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import gatedrnn
from gatedrnn.engines.kernels import pair, pair_steps
from gatedrnn.engines.kernels.common import gemm_scratch


def _sizes(gates: int) -> list[int]:
    """The two smallest hidden sizes the pair takes at this machine's L2: the first multiple of
    16 (an even cut) and one 44 units above it (a cut at 16 units that is not H / 2)."""
    h = 16
    while gates * h * h * 4 < pair.MIN_BYTES:
        h += 16
    return [h, h + 44]


LSTM_H, GRU_H = _sizes(4), _sizes(3)


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for part in out for t in _flat(part)]


def _both(fn):
    """fn() with the pair allowed, then with it off (the one-thread loop)."""
    outs = []
    try:
        for on in (True, False):
            pair.ON = on
            with torch.no_grad():
                outs.append(_flat(fn()))
    finally:
        pair.ON = True
    return outs


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@settings(max_examples=12, deadline=None)
@given(cell=st.sampled_from(["LSTM", "GRU"]), B=st.sampled_from([1, 2]), T=st.integers(8, 60),
       pick=st.integers(0, 1), packed=st.booleans(), reverse=st.booleans(), seed=st.integers(0, 99))
def test_modules_give_the_one_thread_bits(cell, B, T, pick, packed, reverse, seed):
    """Whole modules (unpacked input: the lean path; packed: the general path), with a second
    layer or direction (``reverse``), against the same call with the pair off."""
    H = (LSTM_H if cell == "LSTM" else GRU_H)[pick]
    torch.manual_seed(seed)
    m = getattr(gatedrnn, cell)(8, H, num_layers=2 if not reverse else 1, bidirectional=reverse,
                                engine="fused").eval()
    x = torch.randn(T, B, 8) * 2
    lengths = torch.tensor([T, max(1, T // 3)][:B])

    def call():
        if not (packed and B == 2):
            return m(x)
        y, state = m(pack_padded_sequence(x, lengths))
        return pad_packed_sequence(y)[0], state

    ours, one = _both(call)
    assert all(torch.equal(a, b) for a, b in zip(ours, one))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("B", [1, 2])
def test_the_halves_step_by_step_give_the_whole_loops_bits(cell, B) -> None:
    """The two halves at the cut ``pair`` uses, run one after the other for every step (no
    threads), against one call over all units."""
    rng = np.random.default_rng(B)
    H, T = (LSTM_H if cell == "lstm" else GRU_H)[0], 7
    k = 4 if cell == "lstm" else 3
    G = (rng.standard_normal((T, B, k * H)) * 2).astype(np.float32)
    W = (rng.standard_normal((k * H, H)) / np.sqrt(H)).astype(np.float32)
    bn = rng.standard_normal(H).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    sizes = np.full(T, B)
    none = np.empty(0, np.int64)

    wp, two = pair._plan(W, B, H, T, k)  # common.prod's product, as the pair runs it
    assert wp.size == 0
    tail = np.empty((2, 64), np.float32)

    def run(G, hb, c, Y, u0, u1):
        if cell == "lstm":
            pair_steps.lstm(G, hb, c, Y, sizes[:G.shape[0]], False, W, wp, u0, u1, 0, none,
                            gemm_scratch(np.float32), tail)
        else:
            V = np.empty((B, 3 * H), np.float32)
            pair_steps.gru(G, hb, Y, V, sizes[:G.shape[0]], False, W, wp, bn, u0, u1, 0,
                           none, gemm_scratch(np.float32), tail)

    zeros = np.zeros((B, H), np.float32)
    whole_hb, whole_c, whole_Y = np.stack([h0, h0]), zeros.copy(), np.zeros((T, B, H), np.float32)
    run(G.copy(), whole_hb, whole_c, whole_Y, 0, H)
    mid = pair._cut(H)
    assert 0 < mid < H and mid % 4 == 0
    hb, c, Y, Gs = np.stack([h0, h0]), zeros.copy(), np.zeros((T, B, H), np.float32), G.copy()
    for t in range(T):
        for u0, u1 in ((0, mid), (mid, H)):
            run(Gs[t:t + 1], hb, c, Y[t:t + 1], u0, u1)
        hb[0] = hb[1]
    assert np.array_equal(Y, whole_Y)
    assert np.array_equal(hb[0], whole_hb[T % 2])
    if cell == "lstm":
        assert np.array_equal(c, whole_c)


def test_only_plain_float32_inference_of_one_or_two_rows_pairs() -> None:
    H = LSTM_H[0]
    assert pair.split(1, H, 100, 4) and pair.usable(1, H, 100, 4, torch.float32)
    assert pair.split(2, H, 100, 4) and pair.usable(2, H, 100, 4, torch.float32)
    assert not pair.usable(3, H, 100, 4, torch.float32)  # sgemm's rows: the row split
    assert not pair.usable(1, H, 100, 4, torch.float64)
    assert not pair.usable(1, H + 2, 100, 4, torch.float32)  # a cut needs H in fours
    assert not pair.split(1, 64, 100, 4)  # W_hh in one L2: one thread, packed for gemv
    assert pair.packs(1, 64, 100, 4) and pair.usable(1, 64, 100, 4, torch.float32)
    assert not pair.usable(1, 64, pair.MIN_STEPS[0] - 1, 4, torch.float32)  # packing not won back
    assert pair.usable(2, 64, pair.MIN_STEPS[1], 4, torch.float32)
    assert not pair.packs(1, H, 100, 4)  # above L2 the pair's product, on one thread too
    torch.set_num_threads(1)
    assert not pair.usable(1, H, 100, 4, torch.float32)


def test_a_variant_or_training_never_takes_the_pair(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("pair used")

    monkeypatch.setattr(pair, "lstm", refuse)
    monkeypatch.setattr(pair, "gru", refuse)
    H = LSTM_H[0]
    x = torch.randn(30, 1, 4)
    for m in (gatedrnn.LSTM(4, H, engine="fused", layer_norm=True).eval(),
              gatedrnn.LSTM(4, H, engine="fused", zoneout=0.1).eval(),
              gatedrnn.GRU(4, H, engine="fused", reset_after=False).eval()):
        with torch.no_grad():
            m(x)
    gatedrnn.LSTM(4, H, engine="fused")(x)[0].sum().backward()  # autograd: the training loop
