"""Training steps as one autograd node each (``gatedrnn.engines.step_grad``): a cell call under
autograd, and a module's training call of a few steps. Each must give torch.nn's outputs, states
and gradients, and step aside for every call it does not compute."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.engines import dispatch, one_step, step_grad
from parity import TOL, assert_parity
from parity import cases as parity_cases

CELLS = {"lstm": gatedrnn.LSTMCell, "gru": gatedrnn.GRUCell, "rnn_tanh": gatedrnn.RNNCell,
         "rnn_relu": gatedrnn.RNNCell}


def _cells(kind: str, I: int, H: int, bias: bool, dtype: torch.dtype, engine: str):
    kw = {"nonlinearity": kind[4:]} if kind.startswith("rnn") else {}
    ours = CELLS[kind](I, H, bias=bias, engine=engine, dtype=dtype, **kw)
    ref = getattr(torch.nn, CELLS[kind].__name__)(I, H, bias=bias, dtype=dtype, **kw)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _spy(monkeypatch, module, name: str) -> list:
    """Count the calls of ``module.name`` that return something (not None)."""
    taken: list = []
    real = getattr(module, name)

    def spy(*a, **k):
        out = real(*a, **k)
        if out is not None:
            taken.append(1)
        return out

    monkeypatch.setattr(module, name, spy)
    return taken


@settings(max_examples=40, deadline=None)
@given(kind=st.sampled_from(list(CELLS)), B=st.integers(1, 4), I=st.integers(1, 5),
       H=st.integers(1, 6), bias=st.booleans(), hx=st.booleans(), engine=st.sampled_from(["auto", "fused"]),
       dtype=st.sampled_from([torch.float64, torch.float32]), seed=st.integers(0, 1000))
def test_cell_matches_torch(kind, B, I, H, bias, hx, engine, dtype, seed) -> None:
    torch.manual_seed(seed)
    ours, ref = _cells(kind, I, H, bias, dtype, engine)
    x = torch.randn(B, I, dtype=dtype, requires_grad=True)
    leaves = [x]
    state = None
    if hx:
        leaves += [torch.randn(B, H, dtype=dtype, requires_grad=True)
                   for _ in range(2 if kind == "lstm" else 1)]
        state = tuple(leaves[1:]) if kind == "lstm" else leaves[1]
    results = []
    for cell in (ours, ref):
        out = cell(x, state)
        outs = list(out) if isinstance(out, tuple) else [out]
        g = torch.Generator().manual_seed(seed)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=dtype)).sum() for o in outs)
        grads = torch.autograd.grad(loss, leaves + list(cell.parameters()))
        results.append(outs + list(grads))
    # auto gives the Elman cell's training step to torch's op (dispatch.TABLE); "fused" forces it
    assert ours.last_engine == ("native" if engine == "auto" and kind.startswith("rnn") else "fused")
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.parametrize("kind", list(CELLS))
def test_cell_gradcheck_and_double_backward(kind) -> None:
    cell, _ = _cells(kind, 3, 4, True, torch.float64, "auto")
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    hs = [torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
          for _ in range(2 if kind == "lstm" else 1)]
    if kind == "rnn_relu":  # away from the kink at 0
        with torch.no_grad():
            cell.weight_ih.abs_()
            cell.bias_ih.fill_(1.0)
            x.abs_()

    def f(x, *hs):
        return step_grad.cell_call(cell, x, tuple(hs) if kind == "lstm" else hs[0])

    assert torch.autograd.gradcheck(f, (x, *hs))
    assert torch.autograd.gradgradcheck(f, (x, *hs))


@settings(max_examples=40, deadline=None)
@given(case=parity_cases(proj=st.just(0), input=st.sampled_from(["padded", "unbatched"]),
                         layers=st.integers(1, 2), T=st.integers(1, 5), B=st.integers(1, 3)),
       engine=st.sampled_from(["auto", "fused"]))
def test_module_training_matches_torch(case, engine) -> None:
    """A training call of a few steps: outputs, states and every gradient as torch.nn's (through
    the module, so the auto table's choice is what runs)."""
    assert_parity(case, engine)


def test_module_training_takes_the_step_path(monkeypatch) -> None:
    taken = _spy(monkeypatch, step_grad, "module_call")
    for cls in (gatedrnn.GRU, gatedrnn.RNN, gatedrnn.LSTM):
        m = cls(3, 4, num_layers=2, bidirectional=True, engine="fused")
        y, _ = m(torch.randn(1, 2, 3, requires_grad=True))  # (T·layers·directions ≤ MAX_STEPS)
        y.sum().backward()
    assert len(taken) == 3


@pytest.mark.parametrize("make, x", [
    (lambda: gatedrnn.LSTMCell(3, 4, peephole=True), torch.randn(2, 3)),  # a variant
    (lambda: gatedrnn.GRUCell(3, 4, reset_after=False), torch.randn(2, 3)),  # Cho's form
    (lambda: gatedrnn.GRUCell(3, 4), torch.randn(3)),  # unbatched: torch's op
    (lambda: gatedrnn.GRUCell(3, 4), torch.randn(3, 2).t()),  # not contiguous
    (lambda: gatedrnn.GRUCell(3, 4, dtype=torch.bfloat16), torch.randn(2, 3, dtype=torch.bfloat16)),
    (lambda: gatedrnn.GRUCell(3, 4, engine="native"), torch.randn(2, 3)),
    (lambda: gatedrnn.GRUCell(3, 4, engine="reference"), torch.randn(2, 3)),
])
def test_cell_steps_aside(make, x, monkeypatch) -> None:
    taken = _spy(monkeypatch, step_grad._Step, "apply")
    cell = make()
    out = cell(x.requires_grad_())
    (out[0] if isinstance(out, tuple) else out).float().sum().backward()
    assert not taken
    assert x.grad is not None


@pytest.mark.parametrize("make, T", [
    (lambda: gatedrnn.LSTM(3, 4, proj_size=2, engine="fused"), 3),
    (lambda: gatedrnn.GRU(3, 4, num_layers=2, dropout=0.5, engine="fused"), 3),  # dropout, training
    (lambda: gatedrnn.GRU(3, 4, num_heads=2, engine="fused"), 3),  # head-wise recurrence
    (lambda: gatedrnn.GRU(3, 4, engine="fused"), step_grad.MAX_STEPS + 1),  # too many steps
    (lambda: gatedrnn.GRU(3, 4, layer_norm=True, engine="fused"), 3),
    (lambda: gatedrnn.GRU(3, 4, engine="reference"), 3),
])
def test_module_steps_aside(make, T, monkeypatch) -> None:
    taken = _spy(monkeypatch, step_grad._Step, "apply")
    m = make()
    x = torch.randn(T, 2, 3, requires_grad=True)
    m(x)[0].sum().backward()
    assert not taken and x.grad is not None


def test_inference_without_state_takes_the_step_kernels(monkeypatch) -> None:
    """hx=None is torch.nn's zero state: a one-step module call and a cell call still stream."""
    ours, ref = _cells("lstm", 3, 4, True, torch.float32, "auto")
    module = gatedrnn.GRU(3, 4)
    peer = torch.nn.GRU(3, 4)
    peer.load_state_dict(module.state_dict())
    modules, cells = _spy(monkeypatch, one_step, "module_run"), _spy(monkeypatch, one_step, "cell_call")
    x = torch.randn(2, 3)
    with torch.no_grad():
        for a, b in zip(ours(x), ref(x)):
            torch.testing.assert_close(a, b)
        for a, b in zip(module(x[None]), peer(x[None])):
            torch.testing.assert_close(a, b)
    assert ours.last_engine == module.last_engine == "fused" and modules and cells


def test_dispatch_work_bound_and_cache() -> None:
    table = (dispatch.Row("native", kind="GRU", max_work=100), dispatch.Row("fused"))
    kw = dict(torch_op=True, simple=True, training=True, batch=1)
    assert dispatch.choose("cpu", "GRU", "float32", work=100, table=table, **kw) == "native"
    assert dispatch.choose("cpu", "GRU", "float32", work=101, table=table, **kw) == "fused"
    assert dispatch.choose("cpu", "GRU", "float32", table=table, **kw) == "fused"  # work unknown
    cell = dict(kw, work=64, hidden=64)  # (the cells' step rows read H)
    first = dispatch.choose("cpu", "GRUCell", "float32", **cell)
    assert dispatch.choose("cpu", "GRUCell", "float32", **cell) == first == "fused"
    assert dispatch.choose("cpu", "GRUCell", "half", **cell) == "native"


def test_double_backward_over_chained_steps() -> None:
    """create_graph through several steps that share the weights: each step's differentiable
    backward stays local to its step (torch.func.vjp), so the Hessian-vector product is torch's."""
    torch.manual_seed(1)
    ours, ref = _cells("gru", 2, 3, True, torch.float64, "auto")
    xs = torch.randn(4, 2, 2, dtype=torch.float64)
    v = torch.randn(9, 3, dtype=torch.float64)
    got = []
    for cell in (ours, ref):
        h = torch.zeros(2, 3, dtype=torch.float64)
        ys = []
        for x in xs:
            h = cell(x, h)
            ys.append(h)
        g, = torch.autograd.grad((torch.stack(ys).tanh() ** 2).sum(), cell.weight_hh,
                                 create_graph=True)
        got.append(torch.autograd.grad((g * v).sum(), cell.weight_hh)[0])
    assert ours.last_engine == "fused"
    torch.testing.assert_close(got[0], got[1], rtol=1e-9, atol=1e-10)
