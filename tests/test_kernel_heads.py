"""Head-wise recurrence in the fused LSTM and GRU kernels: ``w["w_hh"]`` of shape (nh, G·d, d).

The reference is independent of the head-wise code: R is expanded in the test to the dense
block-diagonal (G·H, H) matrix (``_dense``), which runs through the reference engine and through
the fused engine's dense path. Outputs, final state, recorded gates and every gradient must match;
dR must equal the diagonal blocks of the dense dW (the rest of the dense dW is discarded).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gatedrnn.engines.kernels import common, gru, lstm
from gatedrnn.equations import reference
from kernel_setup import Draw, options, random_grads, sizes_of

GATES = {"lstm": 4, "gru": 3}
ENGINE = {"lstm": lstm, "gru": gru}
# float32: the kernels' rational tanh against torch's, through a few steps of BPTT; layer norm
# over a few units amplifies it (measured over 500 random cases: 4.4e-5 relative, at H = 2).
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}

LSTM_VARIANTS = {
    "plain": {},
    "no_bias": {"bias": False},
    "peephole": {"peephole": True},
    "layer_norm": {"layer_norm": True},
    "recurrent_dropout": {"recurrent": True},
    "zoneout_train": {"zoneout": "train"},
    "zoneout_eval": {"zoneout": "eval"},
    "everything": {"peephole": True, "layer_norm": True, "recurrent": True, "zoneout": "train"},
}
GRU_VARIANTS = {
    "plain": {},
    "no_bias": {"bias": False},
    "cho": {"reset_after": False},
    "cho_no_bias": {"reset_after": False, "bias": False},
    "layer_norm": {"layer_norm": True},
    "recurrent_dropout": {"recurrent": True},
    "cho_recurrent_dropout": {"reset_after": False, "recurrent": True},
    "zoneout_train": {"zoneout": "train"},
    "zoneout_eval": {"zoneout": "eval"},
    "everything": {"layer_norm": True, "recurrent": True, "zoneout": "train"},
    "cho_everything": {"reset_after": False, "recurrent": True, "zoneout": "train"},
    "cho_layer_norm": {"reset_after": False, "layer_norm": True},  # LN_x only (cells.gru_cell)
}
VARIANTS = {"lstm": LSTM_VARIANTS, "gru": GRU_VARIANTS}


def _dense(R: torch.Tensor, G: int) -> torch.Tensor:
    """The block-diagonal dense W_hh of a head-wise R (nh, G·d, d), written from the definition
    W[g·H + j·d + q, j·d + k] = R_j[g·d + q, k], zero elsewhere (loops, not the kernels' code)."""
    nh, _, d = R.shape
    H = nh * d
    W = R.new_zeros(G * H, H)
    for j in range(nh):
        for g in range(G):
            for q in range(d):
                for k in range(d):
                    W[g * H + j * d + q, j * d + k] = R[j, g * d + q, k]
    return W


def _blocks(W: torch.Tensor, nh: int, G: int) -> torch.Tensor:
    """The inverse of ``_dense``: the diagonal blocks of a dense (G·H, H) matrix, (nh, G·d, d)."""
    H = W.shape[1]
    d = H // nh
    return torch.stack([torch.cat([W[g * H + j * d:g * H + (j + 1) * d, j * d:(j + 1) * d]
                                   for g in range(G)]) for j in range(nh)])


def _setup(cell: str, variant: dict, nh: int, d: int, T: int = 4, B: int = 3, I: int = 2,
           lengths: list[int] | None = None, dtype=torch.float64, seed: int = 0):
    """Leaves (R in place of w_hh) and ``call(engine, leaves, w_hh)``: the engine run on the leaves
    with ``w_hh`` (R itself, or a dense matrix) as the recurrent weight."""
    rnd, G, H = Draw(seed, dtype), GATES[cell], nh * d
    leaves = {"x": rnd(T, B, I, scale=1.0), "h0": rnd(B, H)}
    if cell == "lstm":
        leaves["c0"] = rnd(B, H)
    leaves.update(w_ih=rnd(G * H, I), w_hh=rnd(nh, G * d, d, scale=0.7))
    if variant.get("bias", True):
        leaves.update(b_ih=rnd(G * H), b_hh=rnd(G * H))
    if variant.get("peephole"):
        leaves["peephole"] = rnd(3, H)
    if variant.get("layer_norm"):
        # the GRU has LN_c never, and LN_h only with reset_after (cells.gru_cell)
        parts = 3 if cell == "lstm" else (2 if variant.get("reset_after", True) else 1)
        leaves.update(rnd.layer_norm((("x", G * H), ("h", G * H), ("c", H))[:parts]))
    masks = rnd.masks(variant, T, B, H, H if cell == "lstm" else None)
    opts = options(cell, variant, cell_state=cell == "lstm")
    sizes = None if lengths is None else sizes_of(lengths, T)
    n_state = 2 if cell == "lstm" else 1

    def call(engine, lv: dict, w_hh: torch.Tensor, reverse=False, record=False):
        state = (lv["h0"], lv["c0"]) if cell == "lstm" else (lv["h0"],)
        w = {k: v for k, v in lv.items() if k not in ("x", "h0", "c0")}
        w["w_hh"] = w_hh
        y, final, gates = engine.run(lv["x"], state, w, sizes, reverse, opts, masks, record)
        assert len(final) == n_state
        return [y, *final], gates

    return leaves, call


def _grads(outs: list[torch.Tensor], wrt: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    return random_grads(outs, wrt, seed)


def _compare(cell: str, variant: dict, nh: int, d: int, reverse: bool, dtype, **kw) -> None:
    """Fused head-wise against the reference engine and the fused dense path on ``_dense(R)``."""
    if dtype == torch.float32 and nh * d == 1 and variant.get("layer_norm"):
        d = 2  # LN over one unit divides float32 rounding by sqrt(eps): 7.6e-4 measured, at any nh
    leaves, call = _setup(cell, variant, nh, d, dtype=dtype, **kw)
    G = GATES[cell]
    R = leaves["w_hh"]
    outs, gates = call(ENGINE[cell], leaves, R, reverse, record=True)
    got = outs + list(gates.values()) + _grads(outs, list(leaves.values()))
    for engine in (reference, ENGINE[cell]):
        W = _dense(R.detach(), G).requires_grad_()
        others = [v for k, v in leaves.items() if k != "w_hh"]
        outs_d, gates_d = call(engine, leaves, W, reverse, record=True)
        grads_d = _grads(outs_d, [*others, W])
        grads_d.insert(list(leaves).index("w_hh"), _blocks(grads_d.pop(), nh, G))
        want = outs_d + list(gates_d.values()) + grads_d
        assert len(got) == len(want)
        for k, (a, b) in enumerate(zip(got, want)):
            assert a.shape == b.shape, (k, a.shape, b.shape)
            assert torch.allclose(a, b, atol=TOL[dtype], rtol=TOL[dtype]), (engine.__name__, k,
                                                                           (a - b).abs().max())


def _lengths(data, T: int, B: int, packed: bool) -> list[int] | None:
    if not packed:
        return None
    lengths = sorted(data.draw(st.lists(st.integers(1, T), min_size=B, max_size=B)), reverse=True)
    lengths[0] = T
    return lengths


@settings(max_examples=30)
@given(data=st.data(), T=st.integers(1, 5), B=st.integers(1, 5), I=st.integers(1, 3),
       nh=st.sampled_from([1, 2, 4]), d=st.integers(1, 3), packed=st.booleans(),
       reverse=st.booleans(), variant=st.sampled_from(list(LSTM_VARIANTS)),
       dtype=st.sampled_from([torch.float64, torch.float32]), seed=st.integers(0, 1000))
def test_lstm_heads_equal_dense_block_matrix(data, T, B, I, nh, d, packed, reverse, variant, dtype,
                                             seed) -> None:
    _compare("lstm", LSTM_VARIANTS[variant], nh, d, reverse, dtype, T=T, B=B, I=I,
             lengths=_lengths(data, T, B, packed), seed=seed)


@settings(max_examples=30)
@given(data=st.data(), T=st.integers(1, 5), B=st.integers(1, 5), I=st.integers(1, 3),
       nh=st.sampled_from([1, 2, 4]), d=st.integers(1, 3), packed=st.booleans(),
       reverse=st.booleans(), variant=st.sampled_from(list(GRU_VARIANTS)),
       dtype=st.sampled_from([torch.float64, torch.float32]), seed=st.integers(0, 1000))
def test_gru_heads_equal_dense_block_matrix(data, T, B, I, nh, d, packed, reverse, variant, dtype,
                                            seed) -> None:
    _compare("gru", GRU_VARIANTS[variant], nh, d, reverse, dtype, T=T, B=B, I=I,
             lengths=_lengths(data, T, B, packed), seed=seed)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell,variant,B", [
    ("lstm", "plain", 1), ("lstm", "plain", 3), ("lstm", "everything", 3), ("gru", "plain", 1),
    ("gru", "plain", 3), ("gru", "everything", 3), ("gru", "cho_everything", 3)])
def test_gradcheck_float64(cell, variant, B, reverse) -> None:
    """The hand-derived backward with heads (3 rows, packed: the GEMM path; 1 row: the loops)."""
    leaves, call = _setup(cell, VARIANTS[cell][variant], nh=2, d=2, T=3, B=B, I=1,
                          lengths=[3, 2, 1] if B == 3 else None)
    names = list(leaves)

    def f(*tensors):
        lv = dict(zip(names, tensors))
        return tuple(call(ENGINE[cell], lv, lv["w_hh"], reverse)[0])

    assert torch.autograd.gradcheck(f, tuple(leaves.values()))


@pytest.mark.parametrize("cell,variant", [("lstm", "everything"), ("gru", "everything"),
                                          ("gru", "cho_everything")])
def test_one_head_as_3d_equals_dense_exactly(cell, variant) -> None:
    """(1, G·H, H) is the dense matrix: the same numbers bit for bit, dR of shape (1, G·H, H)."""
    leaves, call = _setup(cell, VARIANTS[cell][variant], nh=1, d=5, B=4, lengths=[4, 4, 3, 1])
    dense = {**leaves, "w_hh": leaves["w_hh"].detach()[0].clone().requires_grad_()}
    results = []
    for lv in (leaves, dense):
        outs, _ = call(ENGINE[cell], lv, lv["w_hh"], reverse=True)
        results.append(outs + _grads(outs, list(lv.values())))
    k = len(results[0]) - len(leaves) + list(leaves).index("w_hh")  # dR's position
    assert results[0][k].shape == (1, GATES[cell] * 5, 5)
    for a, b in zip(*results):
        assert torch.equal(a.reshape(b.shape), b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("reverse", [False, True])
def test_two_thread_row_split_with_heads(cell, reverse, monkeypatch) -> None:
    """Rows in two halves on two threads (threads.split_rows), each running its own products."""
    engine = ENGINE[cell]
    monkeypatch.setattr(engine, "POOL_MIN_ROWS", 4)
    monkeypatch.setattr(engine, "TEAM_MIN_ROWS", 4)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _compare(cell, VARIANTS[cell]["everything"], 2, 3, reverse, torch.float64, T=6, B=9, I=3,
                 lengths=[6, 6, 5, 5, 4, 3, 3, 2, 1])
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_inference_path_equals_training_path(cell) -> None:
    leaves, call = _setup(cell, VARIANTS[cell]["everything"], nh=2, d=3, B=4, dtype=torch.float32,
                          lengths=[4, 3, 3, 1])
    outs1, g1 = call(ENGINE[cell], leaves, leaves["w_hh"], record=True)
    with torch.no_grad():
        outs2, g2 = call(ENGINE[cell], leaves, leaves["w_hh"], record=True)
    assert all(torch.equal(a, b) for a, b in zip(outs1, outs2))
    assert all(torch.equal(g1[k], g2[k]) for k in g1)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_head_shape_that_does_not_fit_raises(cell) -> None:
    leaves, call = _setup(cell, {}, nh=2, d=3)
    bad = torch.randn(2, GATES[cell] * 3, 2, dtype=torch.float64)  # 2·2 != H = 6
    with pytest.raises(ValueError, match="num_heads"):
        call(ENGINE[cell], leaves, bad)


@pytest.mark.slow
@pytest.mark.parametrize("cell,variant", [("lstm", "everything"), ("gru", "plain"),
                                          ("gru", "cho_everything")])
def test_torch_compile_full_graph_equals_eager(cell, variant) -> None:
    """The custom-op path (kernels/compiled.py) with a head-wise w_hh."""
    leaves, call = _setup(cell, VARIANTS[cell][variant], nh=2, d=2, T=5, B=4, I=3,
                          lengths=[5, 5, 3, 1])
    names = list(leaves)

    def f(*tensors):
        lv = dict(zip(names, tensors))
        outs, gates = call(ENGINE[cell], lv, lv["w_hh"], reverse=True, record=True)
        return (*outs, gates["candidate"])

    torch._dynamo.reset()
    results = []
    for fn in (f, torch.compile(f, fullgraph=True)):
        outs = list(fn(*leaves.values()))
        results.append(outs + _grads(outs[:-1], list(leaves.values())))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-9), (a - b).abs().max()


# --- the shared pieces: gemm on strided views, the per-head weight gradient ---------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb,beta", [(False, True, 0.0), (False, False, 1.0), (True, False, 1.0)])
def test_gemm_on_column_block_views(dtype, ta, tb, beta) -> None:
    """Operands that are column blocks of wider arrays: the leading dimension is the row stride."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((9, 11)).astype(dtype)
    Bm = rng.standard_normal((8, 13)).astype(dtype)
    C = rng.standard_normal((6, 10)).astype(dtype)
    a = A[:7, 2:7] if ta else A[:5, 3:10]  # op(a) (5, 7)
    b = Bm[:3, 4:11] if tb else Bm[:7, 1:4]  # op(b) (7, 3)
    c = C[1:6, 5:8]
    want_C = C.copy()
    want_C[1:6, 5:8] = (a.T if ta else a) @ (b.T if tb else b) + beta * c
    common.gemm(a, b, c, ta, tb, beta, common.gemm_scratch(dtype))
    np.testing.assert_allclose(C, want_C, atol=1e-5)  # and nothing outside the block moved


def test_gemm_with_one_row_of_arbitrary_stride() -> None:
    """torch calls a (1, n) tensor contiguous whatever its first stride: BLAS still gets ld >= n."""
    a = np.lib.stride_tricks.as_strided(np.arange(1.0, 6.0), shape=(1, 5), strides=(8, 8))
    b = np.arange(15.0).reshape(3, 5)
    c = np.zeros((1, 3))
    common.gemm(a, b, c, False, True, 0.0, common.gemm_scratch(np.float64))
    np.testing.assert_allclose(c, a @ b.T)


@pytest.mark.parametrize("nh", [1, 2, 3])
def test_head_blocks_grad_is_the_diagonal_blocks(nh) -> None:
    g = torch.Generator().manual_seed(0)
    N, G, d = 7, 3, 2
    H = nh * d
    A = torch.randn(N, G * H + 4, generator=g, dtype=torch.float64)[:, 2:G * H + 2]  # strided
    X = torch.randn(N, H, generator=g, dtype=torch.float64)
    A2 = torch.randn(N, G * H, generator=g, dtype=torch.float64)
    X2 = torch.randn(N, H, generator=g, dtype=torch.float64)
    assert torch.allclose(common.head_blocks_grad(A, X, nh), _blocks(A.t() @ X, nh, G))
    assert torch.allclose(common.head_blocks_grad(A, X, nh, A2, X2),
                          _blocks(A.t() @ X + A2.t() @ X2, nh, G))
