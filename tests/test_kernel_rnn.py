"""The fused Elman RNN kernel (``gatedrnn.engines.kernels.rnn``): parity with torch.nn.RNN, the engine
contract against ``gatedrnn.equations.reference`` (masks included), gradcheck, threads and torch.compile."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from concurrency import concurrent_equals_serial
from gatedrnn.engines.kernels import rnn
from gatedrnn.engines.kernels import threads as kthreads
from gatedrnn.equations import kinds, reference
from gatedrnn.equations.cells import CellOptions
from kernel_setup import Draw, options, random_grads, runner, sizes_of, torch_rowwise
from parity import Case, assert_parity

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
MODES = ("rnn_tanh", "rnn_relu")


def _close(results: list[list[torch.Tensor]], atol: float, rtol: float = 0.0) -> None:
    ours, theirs = results
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        assert torch.allclose(a, b, atol=atol, rtol=rtol), (i, (a - b).abs().max())


# --- parity with torch.nn.RNN -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", [None, [6, 4, 4, 1]], ids=["full", "packed"])
def test_matches_torch_nn_rnn(dtype, mode, bias, reverse, lengths) -> None:
    """Outputs and every gradient (x, h0, each weight) against torch.nn.RNN's own layer.

    torch.nn runs one direction only, so reverse is compared by flipping time (per row for
    packed input, which is what torch's reverse direction does)."""
    torch.manual_seed(0)
    T, B, I, H = 6, 4, 5, 7
    ref = torch.nn.RNN(I, H, nonlinearity=mode[4:], bias=bias, dtype=dtype)
    lengths_ = lengths or [T] * B
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    w = {"w_ih": ref.weight_ih_l0, "w_hh": ref.weight_hh_l0,
         "b_ih": ref.bias_ih_l0 if bias else None, "b_hh": ref.bias_hh_l0 if bias else None}
    sizes = None if lengths is None else sizes_of(lengths, T)
    y, (hn,), gates = rnn.run(x, (h0,), w, sizes, reverse, CellOptions(mode), {}, False)
    assert gates is None

    # The same computation through torch.nn, one row at a time (each row has its own length).
    y_ref, h_ref = torch_rowwise(ref, x, (h0,), lengths_, reverse)

    leaves = [x, h0, *ref.parameters()]
    _close([[y, hn, *random_grads([y, hn], leaves)], [y_ref, h_ref, *random_grads([y_ref, h_ref], leaves)]],
           TOL[dtype])


@pytest.mark.parametrize("mode", MODES)
def test_float32_activation_error_against_torch_stays_at_rounding(mode) -> None:
    """float32 runs the rational tanh (kernels.common): against torch.nn the error stays ~1e-6,
    also with saturating inputs and a long sequence."""
    torch.manual_seed(0)
    ref = torch.nn.RNN(8, 64, nonlinearity=mode[4:])
    x = torch.randn(60, 3, 8) * 3
    w = {"w_ih": ref.weight_ih_l0, "w_hh": ref.weight_hh_l0, "b_ih": ref.bias_ih_l0,
         "b_hh": ref.bias_hh_l0}
    with torch.no_grad():
        y, _, _ = rnn.run(x, (torch.zeros(3, 64),), w, None, False, CellOptions(mode), {}, False)
        assert math.isclose((y - ref(x)[0]).abs().max().item(), 0.0, abs_tol=1e-5)


# --- variants: the reference engine, gradcheck --------------------------------------------------

VARIANTS = {
    "plain": {},
    "no_bias": {"bias": False},
    "one_bias": {"bias": "ih"},
    "recurrent_dropout": {"recurrent": True},
    "zoneout_train": {"zoneout": "train"},
    "zoneout_eval": {"zoneout": "eval"},
    "everything": {"recurrent": True, "zoneout": "train"},
    "everything_eval": {"recurrent": True, "zoneout": "eval"},
}


def _setup(variant: dict, mode: str = "rnn_tanh", dtype=torch.float64, T=4, B=3, I=2, H=3, seed=0,
           lengths=(4, 2, 1), scale=0.5):
    """Leaves and a ``run`` closure of one variant (masks fixed), float64 by default."""
    rnd = Draw(seed, dtype, scale)
    leaves = {"x": rnd(T, B, I, scale=1.0), "h0": rnd(B, H), "w_ih": rnd(H, I), "w_hh": rnd(H, H)}
    bias = variant.get("bias", True)
    if bias:
        leaves["b_ih"] = rnd(H)
        if bias is True:
            leaves["b_hh"] = rnd(H)
    masks = rnd.masks(variant, T, B, H)
    opts = options(mode, variant)
    sizes = sizes_of(list(lengths), T) if lengths else None
    call = runner(list(leaves), ("h0",), sizes, opts, masks)
    return leaves, call


def _min_abs_preactivation(leaves: dict, call, reverse: bool) -> float:
    """min |a_t| over all active steps of a relu run, recorded by wrapping the reference step."""
    seen: list[torch.Tensor] = []
    declared = kinds.CELLS["rnn_relu"]
    original = declared.step

    def spy(x, state, w, opts, recurrent_mask=None, zoneout_h=None, zoneout_c=None):
        (h,) = state
        h_in = h if recurrent_mask is None else h * recurrent_mask
        a = x @ w["w_ih"].T + h_in @ w["w_hh"].T
        for b in ("b_ih", "b_hh"):
            a = a if w.get(b) is None else a + w[b]
        seen.append(a.detach())
        return original(x, state, w, opts, recurrent_mask, zoneout_h, zoneout_c)

    # the declaration the reference engine reads its step from, restored below
    kinds.CELLS["rnn_relu"] = dataclasses.replace(declared, step=spy)
    try:
        with torch.no_grad():
            call(reference, *leaves.values(), reverse=reverse)
    finally:
        kinds.CELLS["rnn_relu"] = declared
    return min(a.abs().min().item() for a in seen)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("mode", MODES)
def test_equals_reference_engine(mode, name, reverse) -> None:
    """Outputs, final state, record and every gradient against ``gatedrnn.equations.reference.run``."""
    leaves, call = _setup(VARIANTS[name], mode, T=5, B=4, I=3, H=5, lengths=(5, 5, 3, 1))
    results = []
    for engine in (reference, rnn):
        y, (h,), gates = call(engine, *leaves.values(), reverse=reverse, record=True)
        assert gates == {}
        results.append([y, h, *random_grads([y, h], list(leaves.values()))])
    _close(results, 1e-10, 1e-10)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", ["plain", "no_bias", "everything", "everything_eval"])
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(mode, name, reverse) -> None:
    """For relu, finite differences need every pre-activation away from the kink at 0: the first
    seed whose pre-activations all have |a| > 1e-3 is used (checked, not assumed)."""
    for seed in range(50):
        leaves, call = _setup(VARIANTS[name], mode, seed=seed, lengths=(4, 2, 1))
        if mode == "rnn_tanh" or _min_abs_preactivation(leaves, call, reverse) > 1e-3:
            break
    else:
        pytest.fail("no seed keeps the relu pre-activations away from 0")

    def f(*tensors):
        y, (h,), _ = call(rnn, *tensors, reverse=reverse)
        return y, h

    assert torch.autograd.gradcheck(f, tuple(leaves.values()))


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 7), B=st.integers(1, 5), H=st.integers(1, 6), mode=st.sampled_from(MODES),
       reverse=st.booleans(), packed=st.booleans(), seed=st.integers(0, 1000),
       variant=st.sampled_from(list(VARIANTS)))
def test_random_shapes_against_reference(T, B, H, mode, reverse, packed, seed, variant) -> None:
    rng = np.random.default_rng(seed)
    if packed:
        lengths = sorted(rng.integers(1, T + 1, size=B).tolist(), reverse=True)
        lengths[0] = T
    else:
        lengths = None
    leaves, call = _setup(VARIANTS[variant], mode, T=T, B=B, I=2, H=H, seed=seed, lengths=lengths)
    results = []
    for engine in (reference, rnn):
        y, (h,), _ = call(engine, *leaves.values(), reverse=reverse)
        results.append([y, h, *random_grads([y, h], list(leaves.values()), seed)])
    _close(results, 1e-10, 1e-10)


def test_gradients_of_a_subset_of_inputs() -> None:
    """Only some leaves need gradients (the first layer's x never does): the others stay None."""
    leaves, call = _setup(VARIANTS["everything"], T=5, B=4, I=3, H=5, lengths=(5, 5, 3, 1))
    want = ["w_hh", "b_hh"]
    for k, v in leaves.items():
        v.requires_grad_(k in want)
    results = []
    for engine in (reference, rnn):
        y, (h,), _ = call(engine, *leaves.values(), reverse=True)
        results.append(list(random_grads([y, h], [leaves[k] for k in want])))
    _close(results, 1e-10, 1e-10)


def test_rejects_other_modes() -> None:
    with pytest.raises(ValueError, match="rnn_tanh"):
        rnn.run(torch.zeros(1, 1, 1), (torch.zeros(1, 1),), {"w_ih": torch.zeros(1, 1),
                "w_hh": torch.zeros(1, 1)}, None, False, CellOptions("gru"), {}, False)


# --- paths: threads, inference, torch.compile, modules ------------------------------------------

@pytest.mark.parametrize("team", ["openmp", "pool"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_two_thread_row_split_equals_reference(mode, reverse, team, monkeypatch) -> None:
    """Batches from 2·TEAM_MIN_ROWS rows run in two halves on two threads: torch's OpenMP team
    or, without torch's libgomp, threads.split_rows' pool thread."""
    monkeypatch.setattr(rnn, "TEAM_MIN_ROWS", 4)
    monkeypatch.setattr(rnn, "POOL_MIN_ROWS", 4)
    if team == "pool":
        monkeypatch.setattr(kthreads, "_GOMP", None)
    elif kthreads._GOMP is None:
        pytest.skip("this torch has no libgomp (another OpenMP or parallel backend)")
    lengths = (6, 6, 5, 5, 4, 3, 3, 2, 1)
    leaves, call = _setup(VARIANTS["everything"], mode, T=6, B=9, I=3, H=4, lengths=lengths)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = []
        for engine in (reference, rnn):
            y, (h,), _ = call(engine, *leaves.values(), reverse=reverse)
            results.append([y, h, *random_grads([y, h], list(leaves.values()))])
    finally:
        torch.set_num_threads(threads)
    _close(results, 1e-10, 1e-9)


@pytest.mark.parametrize("team", ["openmp", "pool"])
def test_split_covers_every_row_once_and_reraises(team, monkeypatch) -> None:
    if team == "pool":
        monkeypatch.setattr(kthreads, "_GOMP", None)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[tuple[int, int, int]] = []
        kthreads.split_rows(9, lambda part, lo, hi: seen.append((part, lo, hi)), 4, 4)
        assert sorted(seen) == [(0, 0, 5), (1, 5, 9)]

        def fail(part: int, lo: int, hi: int) -> None:
            if part == 1:
                raise ZeroDivisionError("part 1")

        with pytest.raises(ZeroDivisionError, match="part 1"):
            kthreads.split_rows(9, fail, 4, 4)
    finally:
        torch.set_num_threads(threads)


def test_concurrent_calls_with_row_split_are_exact() -> None:
    """Several threads at once, each call splitting its rows over two threads."""
    leaves, call = _setup(VARIANTS["plain"], dtype=torch.float32, T=5, B=12, I=3, H=8, lengths=None)
    tensors = [t.detach() for t in leaves.values()]
    xs = [torch.randn_like(tensors[0]) for _ in range(6)]
    assert concurrent_equals_serial(lambda x: call(rnn, x, *tensors[1:])[0], xs)


@pytest.mark.parametrize("name", ["plain", "everything", "zoneout_eval"])
@pytest.mark.parametrize("mode", MODES)
def test_inference_path_equals_training_path(mode, name) -> None:
    """Without gradients nothing is kept for backward; both paths run the same loop (with
    zoneout too), so the numbers are the same to the bit."""
    leaves, call = _setup(VARIANTS[name], mode, dtype=torch.float32, T=5, B=4, I=3, H=6,
                          lengths=(5, 4, 2, 2))
    y1, (h1,), g1 = call(rnn, *leaves.values(), record=True)
    assert y1.requires_grad
    with torch.no_grad():
        y2, (h2,), g2 = call(rnn, *leaves.values(), record=True)
        y3, (h3,), g3 = call(rnn, *leaves.values())
    assert torch.equal(y1, y2) and torch.equal(h1, h2) and torch.equal(y2, y3) and torch.equal(h2, h3)
    assert g1 == {} and g2 == {} and g3 is None


@pytest.mark.parametrize("mode", MODES)
def test_custom_ops_pass_opcheck(mode) -> None:
    """The torch.compile path's ops (kernels/compiled.py): schema, fake shapes and autograd."""
    from gatedrnn.engines.kernels import compiled

    leaves, _ = _setup(VARIANTS["plain"], mode, T=4, B=3, I=2, H=3, lengths=None)
    x, h0, w_ih, w_hh, b_ih, b_hh = (leaves[k] for k in ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"))
    sizes = torch.tensor([3, 2, 2, 1])
    zh = torch.bernoulli(torch.full((4, 3, 3), 0.3, dtype=torch.float64))
    m = torch.full((3, 3), 1 / 0.7, dtype=torch.float64)
    none = x.new_empty(0)
    for args in ((mode, True, 1e-5, False, True, [x, w_ih, b_ih, b_hh, h0, w_hh], None, None,
                  None, None),
                 (mode, True, 1e-5, True, True, [x, w_ih, none, b_hh, h0, w_hh], sizes, m, zh,
                  None)):
        torch.library.opcheck(compiled.fused_forward, args)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["plain", "everything"])
def test_torch_compile_full_graph_equals_eager(name) -> None:
    """Under torch.compile the kernel runs as custom ops (kernels/compiled.py): no graph break."""
    leaves, call = _setup(VARIANTS[name], "rnn_tanh", T=5, B=4, I=3, H=5, lengths=(5, 5, 3, 1))

    def f(*tensors):
        y, (h,), gates = call(rnn, *tensors, reverse=True, record=True)
        return y, h

    torch._dynamo.reset()
    outs = [f(*leaves.values()), torch.compile(f, fullgraph=True)(*leaves.values())]
    results = [list(o) + list(random_grads(o, list(leaves.values()))) for o in outs]
    _close(results, 1e-10, 1e-9)


@pytest.mark.parametrize("kind", ["RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("config", [
    dict(layers=2, bidirectional=True, input="packed_unsorted", hx=True),
    dict(batch_first=True, bias=False, input="padded", hx=True, dtype=torch.float32),
    dict(bidirectional=True, input="unbatched"),
], ids=["bi_packed", "batch_first_nobias_f32", "unbatched"])
def test_module_matches_torch_nn(kind, config) -> None:
    """gatedrnn.RNN(engine="fused") against torch.nn.RNN through the module (tests/parity.py)."""
    assert_parity(Case(kind=kind, **config), "fused")
