"""The int8 engine (``gatedrnn.engines.kernels.int8``): its integer product exact on every
instruction set, its time loops against the int8 oracle (``gatedrnn.equations.quantized.run``)
for every mode, packed, reverse and proj_size, and its output against float32 torch.nn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numba
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gatedrnn.engines.kernels import int8
from gatedrnn.engines.kernels import int8_gemm as gemm
from gatedrnn.engines.kernels import int8_lanes as lanes
from gatedrnn.engines.kernels import int8_team as team
from gatedrnn.engines.kernels import threads as split_threads
from gatedrnn.engines.kernels.common import JIT, sigmoid, tanh
from gatedrnn.equations import quantized
from gatedrnn.equations.cells import CellOptions
from kernel_setup import sizes_of

# Every instruction set this CPU can run: the generic one always, so the fallback is tested here.
ISAS = sorted({0, gemm.TARGET_ISA} | ({1, 2} if gemm.TARGET_ISA == 3 else set())
              | ({2} if gemm.TARGET_ISA == 1 else set()))
FORMS = [("lstm", True), ("gru", True), ("gru", False), ("rnn_tanh", True), ("rnn_relu", True)]
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


@given(M=st.integers(1, 40), N=st.integers(1, 200), K=st.integers(1, 150), seed=st.integers(0, 99))
@settings(max_examples=25, deadline=None)
@pytest.mark.parametrize("isa", ISAS)
def test_qgemm_is_exact(isa: int, M: int, N: int, K: int, seed: int) -> None:
    """The packed u8 × s8 product equals the int64 matmul exactly, extreme values included (the
    weights ±127 and the inputs 0 … 255 draw the corners vpdpbusd must not saturate at)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(-127, 128, (N, K), generator=g, dtype=torch.int8)
    w[0, :] = 127 if seed % 2 else -127
    xu = torch.randint(0, 256, (M, K), generator=g, dtype=torch.uint8)
    xu[0, :] = 255 if seed % 3 else 0
    wp, comp = gemm.pack(w)
    xbuf = gemm.as_u8_rows(M, K)
    xbuf[:, :K] = xu.numpy()
    acc = np.full((M, wp.shape[0] * gemm.UNITS), -1, np.int32)
    lo = seed % M
    _qgemm(xbuf, lo, M, wp.numpy(), acc, gemm.token(isa))
    want = xu[lo:].long() @ w.long().T  # (M − lo, N)
    assert torch.equal(torch.from_numpy(acc[lo:, :N]).long(), want)
    signed = acc[lo:, :N].astype(np.int64) - comp.numpy()[:N]
    assert torch.equal(torch.from_numpy(signed), (xu[lo:].long() - 128) @ w.long().T)


_qgemm = numba.njit(nogil=True)(
    lambda xu, lo, hi, wp, acc, isa: gemm.qgemm(xu, lo, hi, wp, acc, isa))


def _case(mode: str, reset_after: bool, T: int, B: int, I: int, H: int, proj: int, seed: int,
          scale: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    G = GATES[mode]
    Ho = proj or H

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g) * scale

    w = {"w_ih": r(G * H, I), "w_hh": r(G * H, Ho), "b_ih": r(G * H), "b_hh": r(G * H),
         "w_hr": r(proj, H) if proj else None}
    state = (r(B, Ho), r(B, H)) if mode == "lstm" else (r(B, Ho),)
    return w, state, r(T, B, I) * 2, CellOptions(mode, reset_after=reset_after)


lengths_st = st.lists(st.integers(1, 6), min_size=1, max_size=5)


@given(lengths=lengths_st, I=st.integers(1, 9), H=st.integers(1, 40), proj=st.integers(0, 5),
       reverse=st.booleans(), packed=st.booleans(), seed=st.integers(0, 999))
@settings(max_examples=15, deadline=None)
@pytest.mark.parametrize("form", FORMS, ids=[f"{m}-{r}" for m, r in FORMS])
def test_matches_the_int8_oracle(form, lengths, I, H, proj, reverse, packed, seed) -> None:
    """y and every state part against ``quantized.run`` on the same int8 weights.

    Both compute the same integer sums; they differ only by float32 rounding in the gate math (the
    kernels fold the biases first and use vectorised tanh/sigmoid, within 3e-7). Measured over 40
    random cases per form: max |Δ| 7e-7 (2.4e-4 for relu, whose outputs grow to hundreds: 2e-6
    relative). Such a difference could move an activation across a rounding tie of the next
    step's quantization (one int8 step, ~1e-3); none of the examples here does, and the
    derandomized examples keep it so. Bound: 1e-5 · (1 + max |y|)."""
    mode, reset_after = form
    proj = proj if mode == "lstm" and proj < H else 0
    lengths = sorted(lengths, reverse=True)
    T, B = max(lengths), len(lengths)
    w, state, x, opts = _case(mode, reset_after, T, B, I, H, proj, seed)
    sizes = sizes_of(lengths, T) if packed else None
    if sizes is not None:
        x = x * (torch.arange(T)[:, None] < torch.tensor(lengths)[None, :])[..., None]
    wq = quantized.quantize_weights(w)
    y, s_n, gates = int8.run(x, state, {**wq, **int8.pack(wq, opts)}, sizes, reverse, opts, {},
                             False)
    y_ref, s_ref, _ = quantized.run(x, state, wq, sizes, reverse, opts, {}, False)
    assert gates is None
    for a, b in zip((y, *s_n), (y_ref, *s_ref)):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-5 * (1 + b.abs().max()), (a - b).abs().max()
    if sizes is not None:  # inactive rows are exactly zero
        inactive = torch.arange(T)[:, None] >= torch.tensor(lengths)[None, :]
        assert (y[inactive] == 0).all()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("form", FORMS, ids=[f"{m}-{r}" for m, r in FORMS])
def test_one_step_is_tight(form, isa, monkeypatch) -> None:
    """One step (T = 1) quantizes the same x and h0 on both sides, so only the float32 gate math
    differs: measured max |Δ| 2.4e-7 (9.5e-7 for relu's larger outputs), with proj_size too."""
    monkeypatch.setattr(gemm, "ISA", isa)
    mode, reset_after = form
    proj = 3 if mode == "lstm" else 0
    w, state, x, opts = _case(mode, reset_after, 1, 5, 70, 33, proj, seed=1)
    wq = quantized.quantize_weights(w)
    y, s_n, _ = int8.run(x, state, wq, None, False, opts, {}, False)  # packs itself
    y_ref, s_ref, _ = quantized.run(x, state, wq, None, False, opts, {}, False)
    for a, b in zip((y, *s_n), (y_ref, *s_ref)):
        assert (a - b).abs().max() <= 1e-5 * (1 + b.abs().max()), (a - b).abs().max()


@pytest.mark.parametrize("form", FORMS, ids=[f"{m}-{r}" for m, r in FORMS])
def test_against_float32_torch_nn(form) -> None:
    """The int8 output against torch.nn's float32 layer on the same weights (init scale, x ~ N(0, 1),
    T = 30, B = 4, H = 64): measured max |Δ| 0.003-0.011 over the modes, 0.6-1.3% of max |y|;
    bound 3% of max |y| (relu's outputs are unbounded, so relative to the output)."""
    mode, reset_after = form
    if not reset_after:
        pytest.skip("torch.nn's GRU has only reset_after=True")
    torch.manual_seed(0)
    T, B, I, H = 30, 4, 16, 64
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(mode)
    ref = cls(I, H) if cls else torch.nn.RNN(I, H, nonlinearity=mode[4:])
    w = {"w_ih": ref.weight_ih_l0, "w_hh": ref.weight_hh_l0, "b_ih": ref.bias_ih_l0,
         "b_hh": ref.bias_hh_l0}
    x = torch.randn(T, B, I)
    state = (torch.zeros(B, H),) * (2 if mode == "lstm" else 1)
    y, _, _ = int8.run(x, state, quantized.quantize_weights(w), None, False,
                       CellOptions(mode, reset_after=reset_after), {}, False)
    with torch.no_grad():
        want = ref(x)[0]
    assert (y - want).abs().max() <= 0.03 * want.abs().max()


def test_bad_calls() -> None:
    w, state, x, opts = _case("lstm", True, 2, 1, 3, 4, 0, seed=0)
    wq = quantized.quantize_weights(w)
    with pytest.raises(TypeError, match="float32"):
        int8.run(x.double(), state, wq, None, False, opts, {}, False)
    with pytest.raises(ValueError, match="record"):
        int8.run(x, state, wq, None, False, opts, {}, True)
    with pytest.raises(ValueError, match="inference only"):
        int8.run(x, state, wq, None, False, opts, {"recurrent": torch.ones(1, 4)}, False)
    with pytest.raises(ValueError, match="modes"):
        int8.run(x, state, wq, None, False, CellOptions("mingru"), {}, False)
    with pytest.raises(ValueError, match="int8"):
        gemm.pack(torch.zeros(2, 2))
    # Sizes that do not fit the weights: the loops read by index, so they are refused first.
    with pytest.raises(ValueError, match="do not fit"):
        int8.run(torch.cat([x, x], -1), state, wq, None, False, opts, {}, False)
    with pytest.raises(ValueError, match="do not fit"):
        int8.run(x, (torch.cat([state[0], state[0]]),) + tuple(state[1:]), wq, None, False, opts, {},
                 False)


@given(lengths=lengths_st, I=st.integers(1, 9), H=st.integers(17, 70), reverse=st.booleans(),
       packed=st.booleans(), bias=st.booleans(), split=st.sampled_from(["one", "pair", "rows"]),
       seed=st.integers(0, 999))
@settings(max_examples=20, deadline=None)
def test_units_in_parts_match_the_oracle(lengths, I, H, reverse, packed, bias, split, seed) -> None:
    """The LSTM with its gate rows in two parts of units (``int8.pack`` from ``UNIT_SPLIT_H``;
    lowered here so that small sizes take it) against ``quantized.run``: on one thread, on two
    threads that each run one part and meet every step ("pair"; the split forced at any size),
    and with the batch rows split instead ("rows", from 4 rows). Same bound as the other loops."""
    lengths = sorted(lengths, reverse=True)
    T, B = max(lengths), len(lengths)
    if split == "rows":
        lengths, B = sorted(lengths * 4, reverse=True), 4 * B  # (from 4 rows)
    w, state, x, opts = _case("lstm", True, T, B, I, H, 0, seed)
    if not bias:
        w["b_ih"] = w["b_hh"] = None
    sizes = sizes_of(lengths, T) if packed else None
    wq = quantized.quantize_weights(w)
    modes: list[str] = []
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(int8, "UNIT_SPLIT_H", 16)
        mp.setattr(int8, "PAIR", True)
        mp.setattr(int8, "UNIT_SPLIT_BYTES", 1 << 40 if split == "rows" else 0)
        mp.setattr(split_threads, "MIN_SPLIT_WORK", 0 if split != "one" else 1 << 62)
        pair = team.pair
        mp.setattr(team, "pair", lambda *a, **k: modes.append(pair(*a, **k)) or modes[-1])
        p = {**wq, **int8.pack(wq, opts)}
        u = p["w_hh_units"].tolist()
        assert u[0] == 0 < u[1] <= u[2] == H and (u[1] % 16 == 0 or u[1] == H)
        try:
            torch.set_num_threads(2)
            y, s_n, _ = int8.run(x, state, p, sizes, reverse, opts, {}, False)
        finally:
            torch.set_num_threads(threads)
    y_ref, s_ref, _ = quantized.run(x, state, wq, sizes, reverse, opts, {}, False)
    for a, b in zip((y, *s_n), (y_ref, *s_ref)):
        assert a.shape == b.shape
        assert (a - b).abs().max() <= 1e-5 * (1 + b.abs().max()), (a - b).abs().max()
    if split_threads._GOMP is not None or split_threads._mkl_local is not None:
        assert modes == (["pair"] if split == "pair" else [])


def test_a_half_alone_runs_every_unit(monkeypatch) -> None:
    """Where the two halves do not run at once (here: one after the other on one thread), the
    first waits ``WAIT_S`` for its twin, then runs every unit itself, and the second returns."""
    calls: list[str] = []

    def in_turn(B, work, *args, **kwargs):  # split_rows with a team of one thread
        work(0, 0, 1)
        work(1, 1, 2)

    monkeypatch.setattr(team, "split_rows", in_turn)
    monkeypatch.setattr(team, "WAIT_S", 0.01)
    assert team.pair(lambda: calls.append("both"), lambda part: calls.append(f"half {part}")) \
        == "solo"
    assert calls == ["both"]


def test_barrier_orders_the_halves() -> None:
    """After ``barrier`` at step k, each half reads what the other wrote before it: 2000 steps of
    writes to a shared array, on two threads."""
    if split_threads._mkl_local is None:
        pytest.skip("two threads need MKL's per-thread setting here (threads.split_rows)")
    steps, out = 2000, np.zeros(2, np.int64)
    buf, sync = np.zeros((2, 2), np.int64), team.sync_counters()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        mode = team.pair(lambda: None, lambda part: _ping(sync, part, buf, steps, out))
    finally:
        torch.set_num_threads(threads)
    assert mode == "pair" and out.tolist() == [0, 0]


@numba.njit(nogil=True)
def _ping(sync, part, buf, steps, out):
    wrong = 0
    for k in range(steps):
        buf[k % 2, part] = 10 * k + part
        team.barrier(sync, part, k + 1)
        wrong += buf[k % 2, 1 - part] != 10 * k + 1 - part
    out[part] = wrong


_JIT = {**JIT, "cache": False}


@numba.njit(**_JIT)
def _cell_scalar(g, c, h):  # the gate pass on numba's own loop (common's sigmoid and tanh)
    H = c.shape[0]
    for j in range(H):
        cn = sigmoid(g[H + j]) * c[j] + sigmoid(g[j]) * tanh(g[2 * H + j])
        c[j] = cn
        h[j] = sigmoid(g[3 * H + j]) * tanh(cn)


@numba.njit(**_JIT)
def _cell_lanes(g, c, h, y):
    lanes.lstm_cell(g, c, h, y)


@given(H=st.integers(1, 70), seed=st.integers(0, 999), spread=st.sampled_from([1.0, 8.0, 40.0]))
@settings(max_examples=30, deadline=None)
def test_gate_pass_on_16_lanes(H: int, seed: int, spread: float) -> None:
    """``int8_lanes.lstm_cell`` (16 units per call of LLVM IR, the rest scalar) against the same
    arithmetic in a numba loop: the same constants, clamps and saturation, so equal up to the
    fused multiply-adds LLVM may place differently (measured: bit-equal here; bound 1e-6 of the
    magnitude), and NaN and ±inf in the same places, saturated values included."""
    rng = np.random.default_rng(seed)
    g = (rng.standard_normal(4 * H) * spread).astype(np.float32)
    g[rng.random(4 * H) < 0.05] = rng.choice([np.inf, -np.inf, np.nan, 9.5, -20.0, 17.0, -90.0])
    c0 = (rng.standard_normal(H) * spread).astype(np.float32)
    c1, h1 = c0.copy(), np.empty(H, np.float32)
    _cell_scalar(g, c1, h1)
    c2, h2, y2 = c0.copy(), np.empty(H, np.float32), np.empty(H, np.float32)
    _cell_lanes(g, c2, h2, y2)
    for a, b in ((c1, c2), (h1, h2), (h1, y2)):
        assert (np.isnan(a) == np.isnan(b)).all()
        ok = ~np.isnan(a)
        assert (np.abs(a[ok] - b[ok]) <= 1e-6 * np.maximum(1.0, np.abs(a[ok]))).all()


@pytest.mark.slow
def test_benchmark_quick(capsys) -> None:
    """``benchmarks/int8.py --quick`` runs every column at a tiny shape and writes nothing."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is in the interop extra")
    path = Path(__file__).parent.parent / "benchmarks" / "int8.py"
    spec = importlib.util.spec_from_file_location("_bench_int8", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| (20, 2, 16, 32) |")]
    times = [float(v) for v in rows[0].strip("|").split("|")[1:]]  # the time table comes first
    assert len(times) == 8 and all(t > 0 for t in times)
    assert "ORT int8 (per_channel=True)" in out
