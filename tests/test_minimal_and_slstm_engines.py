"""The engines of MinGRU, MinLSTM and SLSTM: gradcheck of every fused backward, the log-space scan
against the sequential scan, float32 accuracy, NaN propagation, two-thread rows, recorded gates.

Tolerances are measured (relative to the largest magnitude, against the float64 reference):
fused float32 outputs and gradients at most 4.3e-7 (T = 50 and 300, H = 32); the scan at
T = 300 in float32 2.6e-5, in float64 8.8e-14 (its error grows with T, see ``gatedrnn.equations.scan``).
"""

from __future__ import annotations

import pytest
import torch

import gatedrnn
from gatedrnn.engines.kernels import minrnn, slstm
from gatedrnn.equations.cells import CellOptions

DT = torch.float64


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


def _inputs(T, B, I, H, G, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=DT).requires_grad_()

    return r(T, B, I), r(G * H, I), r(G * H), r(B, H)


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("sizes", [None, [3, 3, 2, 1, 1]])
def test_gradcheck_fused_min(kind, reverse, sizes):
    G = 2 if kind == "mingru" else 3
    x, w, b, h0 = _inputs(5, 3, 2, 4, G)
    bs = None if sizes is None else torch.tensor(sizes)

    def f(x, w, b, h0):
        y, (h,), _ = minrnn.run(x, (h0,), {"w_ih": w, "b_ih": b}, bs, reverse, CellOptions(kind),
                                {}, False)
        return y, h

    assert torch.autograd.gradcheck(f, (x, w, b, h0))


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("sizes", [None, [3, 2, 2, 1]])
def test_gradcheck_fused_slstm(heads, reverse, sizes):
    T, B, I, H = 4, 3, 2, 4
    d = H // heads
    x, w_ih, b_ih, h0 = _inputs(T, B, I, H, 4, seed=heads)
    g = torch.Generator().manual_seed(7)
    w_hh = (torch.randn(4 * H, H, generator=g, dtype=DT) if heads == 1 else
            torch.randn(heads, 4 * d, d, generator=g, dtype=DT)).requires_grad_()
    b_hh = torch.randn(4 * H, generator=g, dtype=DT).requires_grad_()
    c0, m0 = (torch.randn(B, H, generator=g, dtype=DT).requires_grad_() for _ in range(2))
    n0 = (torch.rand(B, H, generator=g, dtype=DT) + 0.5).requires_grad_()
    bs = None if sizes is None else torch.tensor(sizes)

    def f(x, w_ih, w_hh, b_ih, b_hh, h0, c0, n0, m0):
        w = {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
        y, state, _ = slstm.run(x, (h0, c0, n0, m0), w, bs, reverse, CellOptions("slstm"), {}, False)
        return (y, *state)

    assert torch.autograd.gradcheck(f, (x, w_ih, w_hh, b_ih, b_hh, h0, c0, n0, m0))


def _pair(cls, engine, dtype, seed=0, **kw):
    torch.manual_seed(seed)
    ref = cls(8, 16, dtype=DT, engine="reference", **kw)
    other = cls(8, 16, dtype=dtype, engine=engine, **kw)
    other.load_state_dict(ref.state_dict())
    return ref, other


def _run_both(ref, other, x, dtype):
    xr = x.detach().clone().requires_grad_()
    xo = x.detach().to(dtype).clone().requires_grad_()
    yr, yo = ref(xr)[0], other(xo)[0]
    yr.sum().backward()
    yo.sum().backward()
    return (yr, xr.grad, ref.weight_ih_l0.grad), (yo, xo.grad, other.weight_ih_l0.grad)


@pytest.mark.parametrize("cls", [gatedrnn.MinGRU, gatedrnn.MinLSTM])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-11), (torch.float32, 2e-4)])
def test_scan_engine_matches_the_sequential_scan(cls, dtype, tol):
    """The log-space scan against the float64 sequential engine at T = 300."""
    ref, scan = _pair(cls, "scan", dtype, bidirectional=True)
    ref.engine = "fused"
    x = torch.randn(300, 4, 8, dtype=DT)
    for a, b in zip(*_run_both(ref, scan, x, dtype)):
        assert _rel(b, a) < tol


@pytest.mark.parametrize("cls", [gatedrnn.MinGRU, gatedrnn.MinLSTM, gatedrnn.SLSTM])
def test_fused_float32_accuracy(cls):
    ref, fused = _pair(cls, "fused", torch.float32, num_layers=2)
    x = torch.randn(60, 3, 8, dtype=DT)
    for a, b in zip(*_run_both(ref, fused, x, torch.float32)):
        assert _rel(b, a) < 3e-6


@pytest.mark.parametrize("cls", [gatedrnn.MinGRU, gatedrnn.MinLSTM, gatedrnn.SLSTM])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seed", range(3))
def test_fused_non_finite_inputs_propagate_like_the_reference(cls, dtype, seed):
    """NaN, +inf and −inf in different rows: the same NaN and inf positions as the reference
    (for minGRU an infinite state meets a saturated gate: 0 · inf must give NaN, finite · inf inf)."""
    torch.manual_seed(seed)
    ref = cls(1, 4, dtype=dtype, engine="reference")
    fused = cls(1, 4, dtype=dtype, engine="fused")
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(6, 4, 1, dtype=dtype)
    x[2, 0, 0], x[3, 1, 0], x[1, 2, 0] = float("inf"), -float("inf"), float("nan")
    (yr, sr), (yf, sf) = ref(x), fused(x)
    assert yr.isnan().any() and (cls is gatedrnn.SLSTM or yr.isinf().any())  # sLSTM: h = o c/n
    for a, b in zip((yr, *(sr if isinstance(sr, tuple) else (sr,))),
                    (yf, *(sf if isinstance(sf, tuple) else (sf,)))):
        assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.isinf(), b.isinf())
        torch.testing.assert_close(b, a, equal_nan=True, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cls", [gatedrnn.MinGRU, gatedrnn.MinLSTM])
def test_scan_propagates_nan(cls):
    ref, scan = _pair(cls, "scan", DT)
    x = torch.randn(6, 3, 8, dtype=DT)
    x[2, 1, 0] = float("nan")
    (yr, sr), (ys, ss) = ref(x), scan(x)
    assert torch.equal(yr.isnan(), ys.isnan()) and yr.isnan().any()
    torch.testing.assert_close(ys, yr, equal_nan=True)
    torch.testing.assert_close(ss, sr, equal_nan=True)


@pytest.mark.parametrize("cls", [gatedrnn.MinGRU, gatedrnn.MinLSTM, gatedrnn.SLSTM])
def test_two_thread_rows_match(cls):
    """B = 40 splits the rows over two threads (threads.split_rows); packed, bidirectional."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ref, fused = _pair(cls, "fused", DT, bidirectional=True)
        seqs = [torch.randn(int(L), 8, dtype=DT) for L in torch.randint(1, 7, (40,))]
        packed = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
        out_r, st_r = ref(packed)
        out_f, st_f = fused(packed)
        torch.testing.assert_close(out_f.data, out_r.data, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(st_f, st_r, atol=1e-12, rtol=1e-12)
        g_r = torch.autograd.grad(out_r.data.square().sum(), ref.weight_ih_l0)
        g_f = torch.autograd.grad(out_f.data.square().sum(), fused.weight_ih_l0)
        torch.testing.assert_close(g_f, g_r, atol=1e-11, rtol=1e-11)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("cls", [gatedrnn.MinGRU, gatedrnn.MinLSTM, gatedrnn.SLSTM])
@pytest.mark.parametrize("engine", ["fused", "scan"])
def test_recorded_gates_match_the_reference(cls, engine):
    if cls is gatedrnn.SLSTM and engine == "scan":
        return
    kw = {"num_heads": 2} if cls is gatedrnn.SLSTM else {}
    ref, other = _pair(cls, engine, DT, bidirectional=True, num_layers=2, **kw)
    seqs = [torch.randn(L, 8, dtype=DT) for L in (3, 5, 2)]
    packed = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
    _, _, g_r = ref(packed, return_gates=True)
    _, _, g_o = other(packed, return_gates=True)
    assert list(g_o) == list(g_r)
    for k in g_r:
        assert g_r[k].shape == (4, 5, 3, 16)
        torch.testing.assert_close(g_o[k], g_r[k], atol=1e-12, rtol=1e-12)


def test_auto_engine_choice():
    from gatedrnn.engines import dispatch
    from gatedrnn.engines.stack import choose_engine, engine_run
    from gatedrnn.equations.reference import run as reference_run
    from gatedrnn.equations.scan import run as scan_run

    def choose(engine, kind, x):  # the modules' choice (dispatch's table), then the stack's lookup
        if engine == "auto":
            engine = dispatch.choose(x.device.type, kind, dispatch.dtype_key(x.dtype),
                                     torch_op=False, simple=True, training=False, batch=1)
        return choose_engine(engine, kind, x) if engine != "scan" else engine_run(kind, engine)

    x64, x16 = torch.zeros(1, 1, 1, dtype=DT), torch.zeros(1, 1, 1, dtype=torch.bfloat16)
    assert choose("auto", "mingru", x64) is minrnn.run
    assert choose("auto", "mingru", x16) is reference_run
    assert choose("auto", "minlstm", torch.zeros(1, 1, 1, device="meta")) is scan_run
    assert choose("scan", "minlstm", x64) is scan_run
    assert choose("auto", "slstm", x16) is reference_run
    with pytest.raises(RuntimeError, match="CPU float32/float64"):
        choose("fused", "slstm", x16)


def test_bfloat16_runs_on_the_auto_engines():
    for cls in (gatedrnn.MinGRU, gatedrnn.SLSTM):
        y, _ = cls(4, 6, dtype=torch.bfloat16)(torch.randn(3, 2, 4, dtype=torch.bfloat16))
        assert y.dtype == torch.bfloat16 and y.isfinite().all()


def test_float32_log_sigmoid_series():
    """The sLSTM kernel's float32 log σ (a series for log1p) against torch in float64: measured
    4.8e-7 absolute, 2.4e-7 relative over [−30, 30]; exact ±inf and NaN behaviour."""
    import numba
    import numpy as np

    from gatedrnn.engines.kernels.slstm_steps import _log_sigmoid

    @numba.njit
    def apply(a, out):
        for j in range(a.shape[0]):
            out[j] = _log_sigmoid(a[j])

    x = np.linspace(-30, 30, 200_001).astype(np.float32)
    out = np.empty_like(x)
    apply(x, out)
    ref = torch.nn.functional.logsigmoid(torch.from_numpy(x).double()).numpy()
    assert np.abs(out - ref).max() < 1e-6
    assert (np.abs(out - ref) / np.abs(ref)).max() < 5e-7
    special = np.array([np.inf, -np.inf, np.nan], np.float32)
    out = np.empty_like(special)
    apply(special, out)
    assert out[0] == 0 and out[1] == -np.inf and np.isnan(out[2])
