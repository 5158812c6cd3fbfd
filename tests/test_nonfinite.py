"""NaN and inf propagate exactly as in torch.nn, on every engine and dtype, gradients included.

A hypothesis property puts nan / +inf / -inf into random positions of the input, the initial
state and one weight, runs torch.nn and gatedrnn (modules and cells, float32 and float64, the
fused and reference engines) on copies, and compares outputs, final states and every gradient:
the NaN, +inf and -inf masks exactly, and the finite values within the engine's tolerance.

Both without autograd (the fused inference paths, the streaming step kernels) and with it (the
fused autograd Function, the reference engine under autograd).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn

KINDS = {"lstm": ("LSTM", {}), "gru": ("GRU", {}), "rnn_tanh": ("RNN", {}),
         "rnn_relu": ("RNN", {"nonlinearity": "relu"})}
SPECIAL = (math.nan, math.inf, -math.inf)
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}
T, B, I, H = 3, 2, 3, 4  # noqa: E741


def assert_same_nonfinite(got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> None:
    """NaN, +inf and -inf at the same positions; finite values close (relative and absolute)."""
    for name, mask in (("nan", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        a, b = mask(got), mask(want)
        assert torch.equal(a, b), f"{what}: {name} at {a.nonzero().tolist()}, torch.nn at " \
                                  f"{b.nonzero().tolist()}"
    fin = torch.isfinite(want)
    torch.testing.assert_close(got[fin], want[fin], rtol=tol, atol=tol, msg=what)


def _poison(data: st.DataObject, t: torch.Tensor, label: str) -> None:
    """Write 0 to 2 special values at drawn positions of t (in place, no autograd)."""
    k = data.draw(st.integers(0, 2), label=f"{label} count")
    for _ in range(k):
        i = data.draw(st.integers(0, t.numel() - 1), label=f"{label} index")
        v = data.draw(st.sampled_from(SPECIAL), label=f"{label} value")
        with torch.no_grad():
            t.view(-1)[i] = v


def _draw_case(data: st.DataObject, kind: str, dtype: torch.dtype, cell: bool):
    """torch.nn's module or cell and gatedrnn's, with the same poisoned weights, and poisoned
    inputs (x, h0[, c0])."""
    name, kw = KINDS[kind]
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 16), label="seed"))
    ref = getattr(torch.nn, name + ("Cell" if cell else ""))(I, H, dtype=dtype, **kw)
    for p in ref.parameters():
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.5)
    pname = data.draw(st.sampled_from([k for k, _ in ref.named_parameters()]), label="weight")
    _poison(data, ref.get_parameter(pname), pname)
    x = torch.randn((B, I) if cell else (T, B, I), generator=g, dtype=dtype)
    states = [torch.randn(((B, H) if cell else (1, B, H)), generator=g, dtype=dtype)
              for _ in range(2 if kind == "lstm" else 1)]
    for t, label in zip((x, *states), ("x", "h0", "c0")):
        _poison(data, t, label)
    return ref, name, kw, x, states


def _ours(ref: torch.nn.Module, name: str, kw: dict, dtype, engine: str) -> torch.nn.Module:
    m = getattr(gatedrnn, name)(I, H, dtype=dtype, engine=engine, **kw)
    m.load_state_dict(ref.state_dict())
    return m


def _run(module, x, states, lstm: bool, grad: bool):
    """Outputs (flat list) and, with ``grad``, the gradients of x, the states and the weights."""
    leaves = [t.clone().requires_grad_(grad) for t in (x, *states)]
    hx = tuple(leaves[1:]) if lstm else leaves[1]
    out = module(leaves[0], hx)
    if isinstance(out, tuple):  # a module (y, h | (h, c)) or an LSTMCell (h, c)
        flat = [out[0], *(out[1] if isinstance(out[1], tuple) else (out[1],))] \
            if not isinstance(module, torch.nn.RNNCellBase) else list(out)
    else:
        flat = [out]
    if not grad:
        return flat, []
    params = list(module.parameters())
    # Fixed finite output weights: every output position reaches the loss, none cancels by
    # symmetry.
    loss = sum((o * torch.linspace(0.5, 1.5, o.numel(), dtype=o.dtype).view(o.shape)).sum()
               for o in flat)
    grads = torch.autograd.grad(loss, leaves + params, allow_unused=True)
    return flat, [g if g is not None else torch.zeros_like(t) for g, t in zip(grads, leaves + params)]


def _compare(kind: str, dtype, engine: str, cell: bool, data: st.DataObject) -> None:
    ref, name, kw, x, states = _draw_case(data, kind, dtype, cell)
    ours = _ours(ref, name + ("Cell" if cell else ""), kw, dtype, engine)
    lstm = kind == "lstm"
    for grad in (False, True):
        ctx = torch.enable_grad() if grad else torch.no_grad()
        with ctx:
            want_o, want_g = _run(ref, x, states, lstm, grad)
            got_o, got_g = _run(ours, x, states, lstm, grad)
        names = ["x", "h", "c"][:1 + len(states)] + [k for k, _ in ref.named_parameters()]
        for i, (a, b) in enumerate(zip(got_o, want_o)):
            assert_same_nonfinite(a.detach(), b.detach(), TOL[dtype], f"output {i} (grad={grad})")
        for k, a, b in zip(names, got_g, want_g):
            assert_same_nonfinite(a, b, TOL[dtype], f"d/d{k}")


ENGINES = ["fused", "reference"]
DTYPES = [torch.float32, torch.float64]


@pytest.mark.slow
@pytest.mark.parametrize("cell", [False, True], ids=["module", "cell"])
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=12)
@given(data=st.data())
def test_nonfinite_like_torch_nn(kind: str, dtype, engine: str, cell: bool, data) -> None:
    _compare(kind, dtype, engine, cell, data)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gru_with_inf_state_gives_nan_like_torch_nn(dtype) -> None:
    """The reported case: inf in h; the fused sigmoid once stopped at 1.2e-7 above 0,
    so z ⊙ h stayed inf where torch.nn's 0 ⊙ inf is NaN."""
    torch.manual_seed(0)
    ref = torch.nn.GRU(2, 3, dtype=dtype)
    ours = gatedrnn.GRU(2, 3, dtype=dtype, engine="fused")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 2, dtype=dtype)
    h0 = torch.randn(1, 2, 3, dtype=dtype)
    h0[0, 1, 2] = math.inf
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            want = ref(x, h0)
            got = ours(x.requires_grad_(grad), h0)
        for a, b in zip(got, want):
            assert_same_nonfinite(a.detach(), b.detach(), TOL[dtype], "GRU")
            assert a.isnan().any()


def test_relu_gradient_passes_nan_like_torch_nn() -> None:
    """torch's relu backward zeroes the gradient where relu(a) <= 0, which NaN is not."""
    ref = torch.nn.RNN(2, 2, nonlinearity="relu", dtype=torch.float64)
    ours = gatedrnn.RNN(2, 2, nonlinearity="relu", dtype=torch.float64, engine="fused")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 1, 2, dtype=torch.float64)
    x[1, 0, 0] = math.nan
    grads = []
    for m in (ref, ours):
        m.zero_grad()
        m(x)[0].sum().backward()
        grads.append([p.grad for p in m.parameters()])
    for a, b in zip(*grads):
        assert_same_nonfinite(b, a, 1e-9, "relu")
