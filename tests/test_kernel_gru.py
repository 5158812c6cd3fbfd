"""The fused GRU kernel (``gatedrnn.engines.kernels.gru``): parity with torch.nn.GRU, both formulations,
gradcheck of every variant, and the engine contract against ``gatedrnn.equations.reference``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from concurrency import concurrent_equals_serial
from gatedrnn.engines.kernels import gru
from gatedrnn.equations import reference
from gatedrnn.equations.cells import CellOptions
from kernel_setup import Draw, options, random_grads, runner, sizes_of, torch_rowwise

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _close(ours, theirs, tol, rtol=0.0) -> None:
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        assert torch.allclose(a, b, atol=tol, rtol=rtol), (i, (a - b).abs().max().item())


# --- parity with torch.nn.GRU -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [6, 4, 4, 1]], ids=["full", "packed"])
def test_matches_torch_nn_gru(dtype, bias, reverse, lengths) -> None:
    """Outputs and every gradient (x, h0, each weight) against torch.nn.GRU's own layer.

    torch.nn runs one direction only, so reverse is compared by flipping time (per row for
    packed input, which is what torch's reverse direction does)."""
    torch.manual_seed(0)
    T, B, I, H = 6, 4, 5, 7
    ref = torch.nn.GRU(I, H, bias=bias, dtype=dtype)
    lengths_ = lengths or [T] * B
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    w = {"w_ih": ref.weight_ih_l0, "w_hh": ref.weight_hh_l0,
         "b_ih": ref.bias_ih_l0 if bias else None, "b_hh": ref.bias_hh_l0 if bias else None}
    sizes = None if lengths is None else sizes_of(lengths, T)
    y, (hn,), _ = gru.run(x, (h0,), w, sizes, reverse, CellOptions("gru"), {}, False)

    y_ref, h_ref = torch_rowwise(ref, x, (h0,), lengths_, reverse)

    leaves = [x, h0, *ref.parameters()]
    _close([y, hn, *random_grads([y, hn], leaves)], [y_ref, h_ref, *random_grads([y_ref, h_ref], leaves)],
           TOL[dtype])


def test_float32_error_against_torch_nn_stays_at_rounding_level() -> None:
    """float32 runs the rational tanh/sigmoid of kernels.common; larger inputs, longer sequence."""
    torch.manual_seed(0)
    ref = torch.nn.GRU(8, 32)
    x = torch.randn(50, 3, 8) * 3
    w = {"w_ih": ref.weight_ih_l0, "w_hh": ref.weight_hh_l0, "b_ih": ref.bias_ih_l0,
         "b_hh": ref.bias_hh_l0}
    with torch.no_grad():
        y, _, _ = gru.run(x, (torch.zeros(3, 32),), w, None, False, CellOptions("gru"), {}, False)
        assert (y - ref(x)[0]).abs().max().item() <= 1e-5


# --- variants: gradcheck and the reference engine -----------------------------------------------

VARIANTS = {
    "plain": {},
    "no_bias": {"bias": False},
    "cho": {"reset_after": False},
    "cho_no_bias": {"reset_after": False, "bias": False},
    "layer_norm": {"layer_norm": True},
    "layer_norm_no_bias": {"layer_norm": True, "bias": False},
    "recurrent_dropout": {"recurrent": True},
    "cho_recurrent_dropout": {"reset_after": False, "recurrent": True},
    "zoneout_train": {"zoneout": "train"},
    "zoneout_eval": {"zoneout": "eval"},
    "cho_zoneout_train": {"reset_after": False, "zoneout": "train"},
    "everything": {"layer_norm": True, "recurrent": True, "zoneout": "train"},
    "cho_everything": {"reset_after": False, "recurrent": True, "zoneout": "train"},
    # The modules refuse this pairing; the engine follows cells.gru_cell (LN_x only).
    "cho_layer_norm": {"reset_after": False, "layer_norm": True},
}


def _setup(variant: dict, dtype=torch.float64, T=4, B=3, I=2, H=3, seed=0, lengths=(4, 2, 1)):
    """Leaves (a name -> tensor dict) and a ``call(engine, *tensors, reverse, record)`` closure."""
    rnd = Draw(seed, dtype)
    leaves = {"x": rnd(T, B, I, scale=1.0), "h0": rnd(B, H), "w_ih": rnd(3 * H, I),
              "w_hh": rnd(3 * H, H)}
    if variant.get("bias", True):
        leaves.update(b_ih=rnd(3 * H), b_hh=rnd(3 * H))
    if variant.get("layer_norm"):
        leaves.update(rnd.layer_norm((("x", 3 * H), ("h", 3 * H))))
    masks = rnd.masks(variant, T, B, H)
    opts = options("gru", variant)
    sizes = sizes_of(list(lengths), T) if lengths else None
    call = runner(list(leaves), ("h0",), sizes, opts, masks)
    return leaves, call


def _outputs_and_grads(engine, leaves, call, reverse, record=True):
    y, (h,), gates = call(engine, *leaves.values(), reverse=reverse, record=record)
    out = [y, h, *(gates.values() if gates else [])]
    return out + random_grads([y, h], list(leaves.values()))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_gradcheck_float64(name, reverse) -> None:
    leaves, call = _setup(VARIANTS[name])

    def f(*tensors):
        y, (h,), _ = call(gru, *tensors, reverse=reverse)
        return y, h

    assert torch.autograd.gradcheck(f, tuple(leaves.values()))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_equals_reference_engine(name, reverse, dtype) -> None:
    """Outputs, recorded gates and every gradient against ``gatedrnn.equations.reference.run``."""
    leaves, call = _setup(VARIANTS[name], dtype=dtype, T=5, B=4, I=3, H=5, lengths=(5, 5, 3, 1))
    results = [_outputs_and_grads(e, leaves, call, reverse) for e in (reference, gru)]
    _close(results[1], results[0], TOL[dtype], TOL[dtype])


@pytest.mark.parametrize("name", ["plain", "cho", "layer_norm"])
def test_full_length_batch_equals_reference(name) -> None:
    """batch_sizes=None (no packing) with an initial state, both directions."""
    leaves, call = _setup(VARIANTS[name], T=5, B=4, I=3, H=5, lengths=None)
    for reverse in (False, True):
        results = [_outputs_and_grads(e, leaves, call, reverse) for e in (reference, gru)]
        _close(results[1], results[0], 1e-10, 1e-10)


def test_only_needed_gradients_are_returned() -> None:
    """Frozen weights get no gradient; the rest are unchanged."""
    leaves, call = _setup(VARIANTS["plain"])
    want = dict(zip(leaves, random_grads(call(gru, *leaves.values())[:1], list(leaves.values()))))
    for k in ("w_ih", "w_hh", "b_ih", "b_hh"):
        leaves[k].requires_grad_(False)
    live = [v for v in leaves.values() if v.requires_grad]
    got = random_grads(call(gru, *leaves.values())[:1], live)
    for (k, _), d in zip([(k, v) for k, v in leaves.items() if v.requires_grad], got):
        assert torch.allclose(d, want[k], atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 6), B=st.integers(1, 5), H=st.integers(1, 6), reverse=st.booleans(),
       seed=st.integers(0, 1000), variant=st.sampled_from(list(VARIANTS)), packed=st.booleans())
def test_random_shapes_against_reference(T, B, H, reverse, seed, variant, packed) -> None:
    rng = np.random.default_rng(seed)
    lengths = sorted(rng.integers(1, T + 1, size=B).tolist(), reverse=True)
    lengths[0] = T
    leaves, call = _setup(VARIANTS[variant], T=T, B=B, I=2, H=H, seed=seed,
                          lengths=lengths if packed else None)
    results = [_outputs_and_grads(e, leaves, call, reverse) for e in (reference, gru)]
    _close(results[1], results[0], 1e-10, 1e-9)


@pytest.mark.parametrize("rows", [1, 2, 3])
def test_small_row_products_equal_gemm(rows) -> None:
    """The hand-written GEMV path of common.prod (up to SMALL_ROWS rows) and MKL agree."""
    from gatedrnn.engines.kernels.common import gemm, gemm_scratch, prod

    rng = np.random.default_rng(rows)
    for trans_w, beta in ((True, 0.0), (True, 1.0), (False, 0.0), (False, 1.0)):
        w = rng.standard_normal((9, 7))  # 9 = not a multiple of the 4-row unrolling
        a = rng.standard_normal((rows, 7 if trans_w else 9))
        c0 = rng.standard_normal((rows, 9 if trans_w else 7))
        got, want = c0.copy(), c0.copy()
        prod(a, w, got, trans_w, beta, gemm_scratch(np.float64))
        gemm(a, w, want, False, trans_w, beta, gemm_scratch(np.float64))
        assert np.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", ["everything", "cho_everything", "plain"])
def test_two_thread_row_split_equals_reference(name, reverse, monkeypatch) -> None:
    """Large batches run the rows in two halves on two threads (threads.split_rows)."""
    monkeypatch.setattr(gru, "POOL_MIN_ROWS", 4)
    monkeypatch.setattr(gru, "TEAM_MIN_ROWS", 4)
    lengths = (6, 6, 5, 5, 4, 3, 3, 2, 1)
    leaves, call = _setup(VARIANTS[name], T=6, B=9, I=3, H=4, lengths=lengths)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = [_outputs_and_grads(e, leaves, call, reverse) for e in (reference, gru)]
    finally:
        torch.set_num_threads(threads)
    _close(results[1], results[0], 1e-10, 1e-9)


def test_concurrent_calls_with_row_split_are_exact(monkeypatch) -> None:
    """Several threads at once, each call splitting its rows over two threads."""
    monkeypatch.setattr(gru, "POOL_MIN_ROWS", 4)
    monkeypatch.setattr(gru, "TEAM_MIN_ROWS", 4)
    leaves, call = _setup(VARIANTS["plain"], dtype=torch.float32, T=5, B=12, I=3, H=8, lengths=None)
    tensors = [t.detach() for t in leaves.values()]
    xs = [torch.randn_like(tensors[0]) for _ in range(6)]
    assert concurrent_equals_serial(lambda x: call(gru, x, *tensors[1:])[0], xs)


@pytest.mark.parametrize("name", ["everything", "cho_everything", "zoneout_eval"])
def test_inference_path_equals_training_path(name) -> None:
    """Without gradients nothing per step is stored; the numbers are the same."""
    leaves, call = _setup(VARIANTS[name], dtype=torch.float32)
    y1, (h1,), g1 = call(gru, *leaves.values(), record=True)
    with torch.no_grad():
        y2, (h2,), g2 = call(gru, *leaves.values(), record=True)
        y3, (h3,), g3 = call(gru, *leaves.values())
    assert torch.equal(y1, y2) and torch.equal(h1, h2) and torch.equal(y2, y3)
    assert torch.equal(h2, h3)
    assert g3 is None and sorted(g1) == ["candidate", "reset", "update"]
    assert all(torch.equal(g1[k], g2[k]) for k in g1)


def test_outputs_are_ordinary_tensors() -> None:
    """y and h_n own resizable torch storage (not numpy-backed memory) and do not alias inputs."""
    leaves, call = _setup(VARIANTS["plain"], lengths=None)
    with torch.no_grad():
        y, (h,), _ = call(gru, *leaves.values())
    y.resize_(0)
    h.resize_(0)
    assert leaves["h0"].shape == (3, 3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain", "everything", "cho_everything"])
def test_torch_compile_full_graph_equals_eager(name) -> None:
    """Under torch.compile the kernel runs as custom ops (kernels/compiled.py): no graph break."""
    leaves, call = _setup(VARIANTS[name], T=5, B=4, I=3, H=5, lengths=(5, 5, 3, 1))

    def f(*tensors):
        y, (h,), gates = call(gru, *tensors, reverse=True, record=True)
        return y, h, gates["candidate"]

    torch._dynamo.reset()
    outs = [f(*leaves.values()), torch.compile(f, fullgraph=True)(*leaves.values())]
    results = [list(o) + random_grads(o[:2], list(leaves.values())) for o in outs]
    _close(results[1], results[0], 1e-10, 1e-9)


def test_bench_smoke(capsys) -> None:
    from gatedrnn.toolkit import bench

    assert bench.main(["--quick", "--shapes", "3,2,4,8", "--modes", "inference,training",
                       "--cells", "gru", "--no-memory"]) == 0
    assert "| GRU" in capsys.readouterr().out
