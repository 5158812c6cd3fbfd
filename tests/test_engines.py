"""The fused engine through the modules: parity with torch.nn over random configurations, engine
selection, torch.compile, threads and determinism."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
from hypothesis import given, settings

import gatedrnn
from gatedrnn.engines import dispatch, machine, stack
from gatedrnn.equations import reference
from parity import KINDS, Case, assert_parity
from parity import cases as parity_cases

cases = parity_cases()


@settings(max_examples=60, deadline=None)
@given(cases)
def test_fused_matches_torch_on_random_configurations(case: Case) -> None:
    if case.kind != "LSTM":
        case = Case(**{**case.__dict__, "proj": 0})
    assert_parity(case, "fused")


@pytest.mark.parametrize("kind", KINDS)
def test_fused_gradcheck_float64(kind: str) -> None:
    torch.manual_seed(0)
    cls = {"LSTM": gatedrnn.LSTM, "GRU": gatedrnn.GRU}.get(kind, gatedrnn.RNN)
    kw = {"nonlinearity": kind[4:].lower()} if kind.startswith("RNN") else {}
    if kind == "LSTM":
        kw["proj_size"] = 2
    m = cls(2, 3, num_layers=2, bidirectional=True, engine="fused", dtype=torch.float64, **kw)
    x = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 2 if kind == "LSTM" else 3, dtype=torch.float64, requires_grad=True)
    if kind == "LSTM":
        c0 = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x, h, c: m(x, (h, c))[0], (x, h0, c0))
    else:
        assert torch.autograd.gradcheck(lambda x, h: m(x, h)[0], (x, h0))


def test_auto_picks_fused_on_cpu_and_reference_elsewhere() -> None:
    x = torch.randn(2, 1, 3)
    assert stack.choose_engine("auto", "lstm", x) is not reference.run
    assert stack.choose_engine("auto", "lstm", x.half()) is reference.run
    assert stack.choose_engine("reference", "gru", x) is reference.run
    with pytest.raises(RuntimeError, match="fused"):
        stack.choose_engine("fused", "gru", x.half())


def test_reference_engine_runs_half_precision() -> None:
    m = gatedrnn.GRU(3, 4).to(torch.bfloat16)
    out, h = m(torch.randn(5, 2, 3, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and h.shape == (1, 2, 4)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fused", "reference"])
def test_torch_compile_gives_eager_results(engine: str) -> None:
    torch.manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = gatedrnn.LSTM(3, 8, num_layers=2, engine=engine)
            self.head = torch.nn.Linear(8, 1)

        def forward(self, x):
            return self.head(self.rnn(x)[0][-1])

    model = Model()
    x = torch.randn(6, 4, 3, requires_grad=True)
    eager = model(x)
    eager.sum().backward()
    g_eager = x.grad.clone()
    x.grad = None
    compiled = torch.compile(model)
    out = compiled(x)
    out.sum().backward()
    assert torch.allclose(out, eager, atol=1e-6)
    assert torch.allclose(x.grad, g_eager, atol=1e-6)


@pytest.mark.parametrize("cls", [gatedrnn.LSTM, gatedrnn.GRU])
def test_concurrent_inference_from_threads(cls) -> None:
    torch.manual_seed(0)
    m = cls(4, 16, num_layers=2, engine="fused").eval()
    xs = [torch.randn(20, 3, 4) for _ in range(8)]
    with torch.no_grad():
        expected = [m(x)[0] for x in xs]
    got: list = [None] * len(xs)
    errors: list = []

    def work(i: int) -> None:
        try:
            with torch.no_grad():
                for _ in range(5):
                    got[i] = m(xs[i])[0]
        except Exception as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [gatedrnn.LSTM, gatedrnn.GRU, gatedrnn.RNN])
def test_fused_is_deterministic(cls) -> None:
    torch.manual_seed(0)
    m = cls(4, 8, bidirectional=True, engine="fused")
    x = torch.randn(7, 3, 4, requires_grad=True)
    runs = []
    for _ in range(2):
        out = m(x)[0]
        (g,) = torch.autograd.grad(out.square().sum(), x)
        runs.append((out.detach(), g))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind,kw", [("LSTM", {}), ("LSTM", {"proj_size": 2}), ("GRU", {}),
                                     ("GRU", {"reset_after": False}), ("RNN", {}),
                                     ("RNN", {"nonlinearity": "relu"})])
def test_nan_input_propagates_like_torch(kind: str, kw: dict, dtype) -> None:
    """A NaN in one row poisons that row from its step on, as in torch.nn; it is never clamped
    into a finite number (the float32 activations clamp their argument)."""
    torch.manual_seed(0)
    ours = getattr(gatedrnn, kind)(3, 4, dtype=dtype, engine="fused", **kw)
    ref = getattr(torch.nn, kind)(3, 4, dtype=dtype, **{k: v for k, v in kw.items() if k != "reset_after"})
    x = torch.randn(5, 2, 3, dtype=dtype)
    x[1, 0, 0] = float("nan")
    want = torch.zeros(5, 2, dtype=torch.bool)
    want[1:, 0] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's oneDNN notice for proj_size
        outs = [ours(x)[0]] + ([ref(x)[0]] if "reset_after" not in kw else [])
    for out in outs:
        assert torch.equal(out.isnan().all(-1), want) and not out[:, 1].isnan().any()
    cell = {"LSTM": gatedrnn.LSTMCell, "GRU": gatedrnn.GRUCell, "RNN": gatedrnn.RNNCell}[kind]
    ckw = {k: v for k, v in kw.items() if k != "proj_size"}
    with torch.no_grad():  # the numba streaming step
        h = cell(3, 4, dtype=dtype, engine="fused", **ckw)(x[1])
    h = h[0] if isinstance(h, tuple) else h
    assert h[0].isnan().all() and not h[1].isnan().any()


# --- engine="auto": the dispatch table and what it chose -----------------------------------------


def _choose(device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True, training=False,
            batch=32):
    return dispatch.choose(device, kind, dtype, torch_op=torch_op, simple=simple,
                           training=training, batch=batch)


def test_rule_off_the_cpu_is_native_where_torch_computes_it() -> None:
    for kind in ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"):
        for dtype in ("float32", "float64", "half", "bfloat16"):
            for training in (False, True):
                assert _choose("cuda", kind, dtype, training=training) == "native"
                assert _choose("cuda", kind, dtype, torch_op=False, training=training) == "reference"
                assert _choose("mps", kind, dtype, simple=False, batch=1) == "native"


def test_rule_on_the_cpu() -> None:
    # The rows of dispatch.TABLE, as benchmarks/dispatch.py measured them (see the table's notes).
    assert _choose(batch=64) == "native"  # oneDNN's LSTM in inference from B = 16
    assert _choose(batch=1) == "fused"
    assert _choose(batch=1, training=True) == "native"  # training: native below B = 32
    assert _choose(batch=32, training=True) == "native"
    assert _choose(batch=45, training=True) == "native"
    assert _choose(batch=46, training=True) == "fused"
    assert _choose(batch=64, training=True) == "fused"
    assert _choose(batch=256, training=True) == "fused"
    assert _choose(simple=False, batch=32) == "fused"  # packed or proj_size: torch leaves oneDNN
    assert _choose(simple=False, batch=64) == "native"  # ... but its packed loop wins at B = 64
    assert _choose(torch_op=False, batch=64) == "fused"  # a variant
    assert _choose(dtype="float64", training=False) == "native"
    assert _choose(dtype="float64", training=False, simple=False) == "native"
    assert _choose(dtype="float64", training=False, batch=1) == "fused"
    assert _choose(dtype="float64", training=True) == "fused"
    assert _choose(kind="GRU", dtype="float64", training=False) == "native"
    assert _choose(kind="GRU", dtype="float64", training=True) == "fused"
    assert _choose(kind="RNN", dtype="float64", training=False) == "native"  # from B = 16
    assert _choose(kind="RNN", dtype="float64", training=False, batch=1) == "fused"
    for kind in ("LSTM", "GRU", "RNN"):  # torch.nn's float16 and (without AMX) bfloat16 are slow
        assert _choose(kind=kind, dtype="half") == "fused-float32"
        assert _choose(kind=kind, dtype="half", training=True) == "fused-float32"
    for kind in ("GRU", "RNN"):
        assert _choose(kind=kind, batch=64, training=True) == "fused"
    def cell_step(cell: str, B: int, H: int) -> str:
        return dispatch.choose("cpu", cell, "float32", torch_op=True, simple=True, training=True,
                               batch=B, work=B * H, hidden=H)

    for cell in ("LSTMCell", "GRUCell"):  # one step_grad node per step, up to a size
        assert cell_step(cell, 8, 64) == cell_step(cell, 16, 128) == "fused"
        assert cell_step(cell, 4, 256) == "fused"
        assert cell_step(cell, 64, 128) == cell_step(cell, 2, 512) == "native"
        assert _choose(kind=cell, training=True) == "native"  # (H unknown: not the step's rows)
    assert cell_step("GRUCell", 32, 128) == cell_step("GRUCell", 8, 256) == "fused"
    assert cell_step("LSTMCell", 32, 128) == cell_step("LSTMCell", 8, 256) == "native"
    assert _choose(kind="RNNCell", training=True) == "native"  # torch's ~4-op tanh cell
    for cell in ("LSTMCell", "GRUCell", "RNNCell"):
        assert _choose(kind=cell, training=True, dtype="half") == "native"
        assert _choose(kind=cell, training=False) == "fused"
        assert _choose(kind=cell, torch_op=False) == "reference"
    assert _choose(dtype="other") == "native"


def test_lstm_inference_at_a_small_batch_goes_to_onednn_on_two_threads() -> None:
    # The fused loops give one batch row to one thread; oneDNN splits the product over both
    # (the row's notes: native 1.6-2.3x fused from work 51200 at 2 threads).
    def pick(threads: int, work: int) -> str:
        before = torch.get_num_threads()
        try:
            torch.set_num_threads(threads)
            return dispatch.choose("cpu", "LSTM", "float32", torch_op=True, simple=True,
                                   training=False, batch=1, work=work)
        finally:
            torch.set_num_threads(before)

    assert pick(2, 200 * 512) == "native"
    assert pick(2, 100 * 256) == "fused"  # below the border: level there, the fused loops kept
    assert pick(1, 200 * 512) == "fused"  # one thread: nothing to split
    assert pick(2, 4 * 32) == "fused"  # a short call: the step kernels


def test_rule_never_picks_the_reference_loop_where_another_engine_computes_it() -> None:
    for row in dispatch.TABLE:
        if row.engine == "reference":
            assert row.torch_op is False or row.device == "other" or row.dtype == "other"


AUTO_CASES = [
    # (module, input shape, grad, the engine auto must pick)
    (lambda: gatedrnn.LSTM(4, 8), (40, 32, 4), False, "native"),
    (lambda: gatedrnn.LSTM(4, 8), (5, 1, 4), False, "fused"),
    (lambda: gatedrnn.LSTM(4, 8), (2, 1, 4), True, "fused"),  # small: one step_grad node a step
    (lambda: gatedrnn.LSTM(4, 8), (5, 1, 4), True, "native"),  # from 3 steps oneDNN's one node wins
    (lambda: gatedrnn.LSTM(4, 8), (40, 2, 4), True, "native"),
    (lambda: gatedrnn.LSTM(4, 8), (5, 64, 4), True, "fused"),
    (lambda: gatedrnn.LSTM(4, 8, proj_size=3), (5, 32, 4), False, "fused"),
    (lambda: gatedrnn.GRU(4, 8, num_layers=2), (5, 32, 4), True, "fused"),
    (lambda: gatedrnn.LSTM(4, 8, dtype=torch.float64), (5, 32, 4), False, "native"),
    (lambda: gatedrnn.LSTM(4, 8, dtype=torch.float64), (5, 32, 4), True, "fused"),
    (lambda: gatedrnn.GRU(4, 8, dtype=torch.bfloat16), (5, 3, 4), True, "fused-float32"),
    # with AMX, oneDNN runs a bfloat16 LSTM on the tile unit (dispatch.AMX)
    (lambda: gatedrnn.LSTM(4, 8, dtype=torch.bfloat16), (5, 3, 4), False,
     "native" if dispatch.AMX else "fused-float32"),
]


@pytest.mark.parametrize("make,shape,grad,want", AUTO_CASES)
def test_auto_reports_its_choice_and_matches_torch(make, shape, grad, want) -> None:
    torch.manual_seed(0)
    ours = make()
    ref = getattr(torch.nn, type(ours).__name__)(4, 8, num_layers=ours.num_layers,
                                                 proj_size=ours.proj_size, dtype=torch.float64) \
        if isinstance(ours, torch.nn.LSTM) else torch.nn.GRU(4, 8, num_layers=ours.num_layers,
                                                             dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    dtype = ours.weight_ih_l0.dtype
    x = torch.randn(shape, dtype=dtype)
    with torch.set_grad_enabled(grad):
        out = ours(x)[0]
    assert ours.last_engine == want
    tol = {torch.float32: 1e-5, torch.float64: 1e-12, torch.bfloat16: 2e-2}[dtype]
    assert torch.allclose(out.double(), ref(x.double())[0], atol=tol)


def test_last_engine_is_logged_when_it_changes(caplog) -> None:
    m = gatedrnn.LSTM(4, 8)
    with caplog.at_level("DEBUG", logger="gatedrnn"):
        with torch.no_grad():
            m(torch.randn(3, 1, 4))
            m(torch.randn(3, 1, 4))
            m(torch.randn(40, 32, 4))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["LSTM: engine fused (was None)", "LSTM: engine native (was fused)"]


def test_engine_choices_are_checked() -> None:
    with pytest.raises(ValueError, match="'native'"):
        gatedrnn.GRU(3, 4, engine="cuda")
    with pytest.raises(RuntimeError, match="fused"):
        gatedrnn.GRU(3, 4, engine="fused").to("meta")(torch.randn(2, 1, 3, device="meta"))


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "RNN"])
def test_half_precision_through_float32_is_float32_rounded_once(kind) -> None:
    """bfloat16 storage, float32 arithmetic: the output is the float32 result rounded to bfloat16
    once (relative error <= 2^-8, bfloat16's unit roundoff; measured 4.9e-4..1.9e-3 absolute at
    (50, 4, 16, 32), where torch's own bfloat16 GRU/LSTM/RNN err 2.0e-3..5.4e-3). Gradients
    likewise: float32 sums, one rounding."""
    torch.manual_seed(0)
    ours = getattr(gatedrnn, kind)(6, 8, num_layers=2, engine="fused").to(torch.bfloat16)
    f32 = getattr(torch.nn, kind)(6, 8, num_layers=2)
    f32.load_state_dict({k: v.float() for k, v in ours.state_dict().items()})
    x = torch.randn(20, 3, 6).to(torch.bfloat16)
    y = ours(x)[0]
    assert ours.last_engine == "fused-float32" and y.dtype == torch.bfloat16
    y32 = f32(x.float())[0]
    assert torch.all((y.float() - y32).abs() <= 2 ** -8 * y32.abs() + 1e-5)
    g = torch.autograd.grad(y.float().sum(), list(ours.parameters()))
    g32 = torch.autograd.grad(y32.sum(), list(f32.parameters()))
    for a, b in zip(g, g32):
        assert a.dtype == torch.bfloat16
        assert torch.all((a.float() - b).abs() <= 2 ** -8 * b.abs() + 1e-4)


@pytest.mark.parametrize("cls", [gatedrnn.LSTMCell, gatedrnn.GRUCell, gatedrnn.RNNCell])
@pytest.mark.parametrize("grad", [False, True])
def test_half_precision_cells_compute_in_float32(cls, grad) -> None:
    torch.manual_seed(0)
    cell = cls(6, 8, engine="fused").to(torch.bfloat16)
    f32 = getattr(torch.nn, cls.__name__)(6, 8)
    f32.load_state_dict({k: v.float() for k, v in cell.state_dict().items()})
    x = torch.randn(3, 6).to(torch.bfloat16)
    with torch.set_grad_enabled(grad):
        got = cell(x)
    want = f32(x.float())
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        assert a.dtype == torch.bfloat16
        assert torch.all((a.float() - b).abs() <= 2 ** -8 * b.abs() + 1e-5)


def test_rule_on_a_gpu_with_triton() -> None:
    # Planned from the design (docs/gpu.md), not yet measured: cuDNN where torch has the op, the
    # Triton kernels for what it lacks where triton runs, and the old answers where it does not.
    def gpu(kind: str, torch_op: bool, triton: bool) -> str:
        return dispatch.choose("cuda", kind, "float32", torch_op=torch_op, simple=True,
                               training=True, batch=8, triton=triton)

    for kind in ("LSTM", "GRU"):
        assert gpu(kind, torch_op=True, triton=True) == "native"
        assert gpu(kind, torch_op=False, triton=True) == "triton"
        assert gpu(kind, torch_op=False, triton=False) == "reference"
    assert gpu("RNN", torch_op=False, triton=True) == "reference"  # no Triton Elman RNN
    for kind in ("mingru", "minlstm", "slstm"):
        assert gpu(kind, torch_op=False, triton=True) == "triton"
    assert gpu("mingru", torch_op=False, triton=False) == "scan"
    assert gpu("slstm", torch_op=False, triton=False) == "reference"
    assert gpu("LSTMCell", torch_op=False, triton=True) == "reference"  # cells: one step a call


def test_triton_is_ready_only_on_cuda_and_where_a_cell_has_it() -> None:
    from types import SimpleNamespace

    assert not stack.triton_ready("lstm", torch.zeros(1))  # the CPU: never auto's pick
    assert not stack.triton_ready("rnn_tanh", SimpleNamespace(is_cuda=True))  # no such kernel
    assert "rnn_tanh" in stack._NO_TRITON  # and not asked again


@pytest.mark.parametrize("amx", [False, True])
def test_bfloat16_lstm_runs_onednn_where_the_cpu_has_amx(monkeypatch: pytest.MonkeyPatch, amx: bool) -> None:
    flags = {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"} if amx else {"avx512f"}
    monkeypatch.setattr(dispatch, "CPU", machine.detect(frozenset(flags)))
    # Rules and answers cached for the real CPU do not apply here, and come back afterwards.
    monkeypatch.setattr(dispatch, "_RULES", None)
    monkeypatch.setattr(dispatch, "_CACHE", {})

    def pick(**kw) -> str:  # type: ignore[no-untyped-def]
        args = {"kind": "LSTM", "dtype": "bfloat16", "torch_op": True, "simple": True,
                "training": False, "batch": 32, **kw}
        return dispatch.choose("cpu", args.pop("kind"), args.pop("dtype"), **args)

    onednn = "native" if amx else "fused-float32"
    assert pick() == onednn and pick(batch=1) == onednn and pick(simple=False) == onednn  # packed
    assert pick(training=True) == pick(training=True, batch=64) == onednn
    assert pick(training=True, batch=1) == "fused-float32"  # a short step: fused is ahead
    assert pick(training=True, simple=False) == "fused-float32"  # packed training: fused
    assert pick(simple=False, proj=True) == "fused-float32"  # torch leaves oneDNN with proj_size
    assert pick(torch_op=False) == "fused-float32"  # a variant
    assert pick(kind="GRU") == pick(kind="RNN") == pick(dtype="half") == "fused-float32"
    assert pick(dtype="float32") == "native" and pick(dtype="float32", batch=1) == "fused"
