"""The fused engine through the modules: parity with torch.nn over random configurations, engine
selection, torch.compile, threads and determinism."""

from __future__ import annotations

import threading
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn import functional, reference
from parity import Case, assert_parity

KINDS = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
INPUTS = ("padded", "packed_sorted", "packed_unsorted", "unbatched")

cases = st.builds(
    Case,
    kind=st.sampled_from(KINDS), layers=st.integers(1, 3), bidirectional=st.booleans(),
    batch_first=st.booleans(), bias=st.booleans(), proj=st.sampled_from([0, 0, 2]),
    input=st.sampled_from(INPUTS), hx=st.booleans(), T=st.integers(1, 7), B=st.integers(1, 5),
    I=st.integers(1, 5), H=st.integers(3, 7), seed=st.integers(0, 10_000),
    dtype=st.sampled_from([torch.float64, torch.float32]),
)


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
    assert functional.choose_engine("auto", "lstm", x) is not reference.run
    assert functional.choose_engine("auto", "lstm", x.half()) is reference.run
    assert functional.choose_engine("reference", "gru", x) is reference.run
    with pytest.raises(RuntimeError, match="fused"):
        functional.choose_engine("fused", "gru", x.half())


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
