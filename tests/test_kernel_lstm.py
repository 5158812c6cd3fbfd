"""The fused LSTM kernel (``gatedrnn.engines.kernels.lstm``) and its shared pieces (``kernels.common``):
activations, GEMM, parity with torch.nn.LSTM, gradcheck of every variant, and the engine contract
against ``gatedrnn.equations.reference``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from concurrency import concurrent_equals_serial
from gatedrnn.engines.kernels import common, lstm
from gatedrnn.equations import reference
from gatedrnn.equations.cells import CellOptions
from kernel_setup import Draw, options, random_grads, runner, sizes_of, torch_rowwise

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


# --- common.py ----------------------------------------------------------------------------------

def test_float32_activations_are_within_3e7_of_exact() -> None:
    import numba

    @numba.njit(**{**common.JIT, "cache": False})
    def both(x, t, s):
        for k in range(x.shape[0]):
            t[k] = common.tanh(x[k])
            s[k] = common.sigmoid(x[k])

    x = np.linspace(-20, 20, 200_001).astype(np.float32)
    t, s = np.empty_like(x), np.empty_like(x)
    both(x, t, s)
    x64 = x.astype(np.float64)
    assert np.abs(t - np.tanh(x64)).max() <= 3e-7
    # half of tanh's error plus the float32 rounding of 0.5 t + 0.5 (half an ulp at 0.5: 3e-8)
    assert np.abs(s - 0.5 * (np.tanh(0.5 * x64) + 1)).max() <= 2e-7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb,beta", [(False, True, 0.0), (False, False, 1.0), (True, False, 1.0)])
def test_gemm_matches_numpy(dtype, ta, tb, beta) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 5) if ta else (5, 7)).astype(dtype)
    b = rng.standard_normal((3, 7) if tb else (7, 3)).astype(dtype)
    c = rng.standard_normal((5, 3)).astype(dtype)
    want = (a.T if ta else a) @ (b.T if tb else b) + beta * c
    common.gemm(a, b, c, ta, tb, beta, common.gemm_scratch(dtype))
    assert np.allclose(c, want, atol=1e-5)


# --- parity with torch.nn.LSTM ------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("proj", [0, 3])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [6, 4, 4, 1]], ids=["full", "packed"])
def test_matches_torch_nn_lstm(dtype, proj, reverse, lengths) -> None:
    """Outputs and every gradient (x, h0, c0, each weight) against torch.nn.LSTM's own layer.

    torch.nn runs one direction only, so reverse is compared by flipping time (per row for
    packed input, which is what torch's reverse direction does)."""
    torch.manual_seed(0)
    T, B, I, H = 6, 4, 5, 7
    ref = torch.nn.LSTM(I, H, proj_size=proj, dtype=dtype)
    Ho = proj or H
    lengths_ = lengths or [T] * B
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, Ho, dtype=dtype, requires_grad=True)
    c0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    w = {"w_ih": ref.weight_ih_l0, "w_hh": ref.weight_hh_l0, "b_ih": ref.bias_ih_l0,
         "b_hh": ref.bias_hh_l0, "w_hr": ref.weight_hr_l0 if proj else None}
    sizes = None if lengths is None else sizes_of(lengths, T)
    y, (hn, cn), _ = lstm.run(x, (h0, c0), w, sizes, reverse, CellOptions(), {}, False)

    # The same computation through torch.nn, one row at a time (each row has its own length).
    y_ref, h_ref, c_ref = torch_rowwise(ref, x, (h0, c0), lengths_, reverse)

    leaves = [x, h0, c0, *ref.parameters()]
    ours = [y, hn, cn] + list(random_grads([y, hn, cn], leaves))
    theirs = [y_ref, h_ref, c_ref] + list(random_grads([y_ref, h_ref, c_ref], leaves))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=TOL[dtype], rtol=0), (a - b).abs().max()


# --- variants: gradcheck and the reference engine -----------------------------------------------

VARIANTS = {
    "plain": {},
    "no_bias": {"bias": False},
    "proj": {"proj": 2},
    "peephole": {"peephole": True},
    "layer_norm": {"layer_norm": True},
    "recurrent_dropout": {"recurrent": True},
    "zoneout_train": {"zoneout": "train"},
    "zoneout_eval": {"zoneout": "eval"},
    "everything": {"peephole": True, "layer_norm": True, "recurrent": True, "zoneout": "train",
                   "proj": 2},
}


def _setup(variant: dict, dtype=torch.float64, T=4, B=3, I=2, H=3, seed=0, lengths=(4, 2, 1)):
    """Leaves, a ``run`` closure and the kwargs of one variant, all float64 by default."""
    rnd = Draw(seed, dtype)
    Ho = variant.get("proj") or H
    leaves = {"x": rnd(T, B, I, scale=1.0), "h0": rnd(B, Ho), "c0": rnd(B, H),
              "w_ih": rnd(4 * H, I), "w_hh": rnd(4 * H, Ho)}
    if variant.get("bias", True):
        leaves.update(b_ih=rnd(4 * H), b_hh=rnd(4 * H))
    if variant.get("proj"):
        leaves["w_hr"] = rnd(Ho, H)
    if variant.get("peephole"):
        leaves["peephole"] = rnd(3, H)
    if variant.get("layer_norm"):
        leaves.update(rnd.layer_norm((("x", 4 * H), ("h", 4 * H), ("c", H))))
    masks = rnd.masks(variant, T, B, Ho, H)
    opts = options("lstm", variant, cell_state=True)
    sizes = sizes_of(list(lengths), T) if lengths else None
    call = runner(list(leaves), ("h0", "c0",), sizes, opts, masks)
    return leaves, call


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_gradcheck_float64(name, reverse) -> None:
    leaves, call = _setup(VARIANTS[name])

    def f(*tensors):
        y, (h, c), _ = call(lstm, *tensors, reverse=reverse)
        return y, h, c

    assert torch.autograd.gradcheck(f, tuple(leaves.values()))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_equals_reference_engine(name, reverse, dtype) -> None:
    """Outputs, recorded gates and every gradient against ``gatedrnn.equations.reference.run``."""
    leaves, call = _setup(VARIANTS[name], dtype=dtype, T=5, B=4, I=3, H=5, lengths=(5, 5, 3, 1))
    results = []
    for engine in (reference, lstm):
        y, (h, c), gates = call(engine, *leaves.values(), reverse=reverse, record=True)
        grads = random_grads([y, h, c], list(leaves.values()))
        results.append([y, h, c, *gates.values(), *grads])
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=TOL[dtype], rtol=TOL[dtype]), (a - b).abs().max()


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 6), B=st.integers(1, 4), H=st.integers(1, 6), proj=st.booleans(),
       reverse=st.booleans(), seed=st.integers(0, 1000), variant=st.sampled_from(list(VARIANTS)))
def test_random_shapes_against_reference(T, B, H, proj, reverse, seed, variant) -> None:
    rng = np.random.default_rng(seed)
    lengths = sorted(rng.integers(1, T + 1, size=B).tolist(), reverse=True)
    lengths[0] = T
    v = dict(VARIANTS[variant])
    if proj and H > 1:
        v["proj"] = max(1, H // 2)
    elif "proj" in v:
        v["proj"] = min(v["proj"], H)
    leaves, call = _setup(v, T=T, B=B, I=2, H=H, seed=seed, lengths=lengths)
    outs = [call(e, *leaves.values(), reverse=reverse)[:2] for e in (reference, lstm)]
    for a, b in zip([outs[0][0], *outs[0][1]], [outs[1][0], *outs[1][1]]):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("reverse", [False, True])
def test_two_thread_row_split_equals_reference(reverse, monkeypatch) -> None:
    """Large batches run the rows in two halves on two threads (threads.split_rows)."""
    monkeypatch.setattr(lstm, "POOL_MIN_ROWS", 4)
    monkeypatch.setattr(lstm, "TEAM_MIN_ROWS", 4)
    lengths = (6, 6, 5, 5, 4, 3, 3, 2, 1)
    leaves, call = _setup(VARIANTS["everything"], T=6, B=9, I=3, H=4, lengths=lengths)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = []
        for engine in (reference, lstm):
            y, (h, c), _ = call(engine, *leaves.values(), reverse=reverse)
            results.append([y, h, c, *random_grads([y, h, c], list(leaves.values()))])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-9), (a - b).abs().max()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain", "everything"])
def test_torch_compile_full_graph_equals_eager(name) -> None:
    """Under torch.compile the kernel runs as custom ops (kernels/compiled.py): no graph break."""
    leaves, call = _setup(VARIANTS[name], T=5, B=4, I=3, H=5, lengths=(5, 5, 3, 1))

    def f(*tensors):
        y, (h, c), gates = call(lstm, *tensors, reverse=True, record=True)
        return y, h, c, gates["cell"]

    torch._dynamo.reset()
    outs = [f(*leaves.values()), torch.compile(f, fullgraph=True)(*leaves.values())]
    results = [list(o) + list(random_grads(o[:3], list(leaves.values()))) for o in outs]
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-9), (a - b).abs().max()


def test_concurrent_calls_with_row_split_are_exact(monkeypatch) -> None:
    """Several threads at once, each call splitting its rows over two threads."""
    monkeypatch.setattr(lstm, "POOL_MIN_ROWS", 4)
    monkeypatch.setattr(lstm, "TEAM_MIN_ROWS", 4)
    leaves, call = _setup(VARIANTS["plain"], dtype=torch.float32, T=5, B=12, I=3, H=8,
                          lengths=None)
    tensors = [t.detach() for t in leaves.values()]
    xs = [torch.randn_like(tensors[0]) for _ in range(6)]
    assert concurrent_equals_serial(lambda x: call(lstm, x, *tensors[1:])[0], xs)


def test_inference_path_equals_training_path() -> None:
    """Without gradients nothing per step is stored; the numbers are the same."""
    leaves, call = _setup(VARIANTS["everything"], dtype=torch.float32)
    y1, (h1, c1), g1 = call(lstm, *leaves.values(), record=True)
    with torch.no_grad():
        y2, (h2, c2), g2 = call(lstm, *leaves.values(), record=True)
        y3, _, g3 = call(lstm, *leaves.values())
    assert torch.equal(y1, y2) and torch.equal(h1, h2) and torch.equal(c1, c2) and torch.equal(y2, y3)
    assert g3 is None and all(torch.equal(g1[k], g2[k]) for k in g1)


def test_activation_error_in_float32_matches_the_documented_bound() -> None:
    """float32 runs the rational tanh: against torch.nn.LSTM the error stays at float32 rounding."""
    torch.manual_seed(0)
    ref = torch.nn.LSTM(8, 32)
    x = torch.randn(50, 3, 8) * 3
    w = {"w_ih": ref.weight_ih_l0, "w_hh": ref.weight_hh_l0, "b_ih": ref.bias_ih_l0,
         "b_hh": ref.bias_hh_l0}
    with torch.no_grad():
        y, _, _ = lstm.run(x, (torch.zeros(3, 32), torch.zeros(3, 32)), w, None, False,
                           CellOptions(), {}, False)
        assert math.isclose((y - ref(x)[0]).abs().max().item(), 0.0, abs_tol=1e-5)


def test_bench_smoke(capsys) -> None:
    from gatedrnn.toolkit import bench

    assert bench.main(["--quick", "--shapes", "3,2,4,8", "--modes", "inference,training",
                       "--cells", "lstm", "--no-memory"]) == 0
    assert "| LSTM" in capsys.readouterr().out
