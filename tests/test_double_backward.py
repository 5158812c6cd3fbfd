"""Double backward on the fused engine (``kernels.fused.FusedFunction``): gradients of gradients
(gradient penalties, Hessian-vector products, MAML) are right, and reach every parameter.

The oracles: ``torch.autograd.gradgradcheck`` in float64 on the kernels' ``run``, and torch.nn's own
LSTM/GRU/RNN with the same weights for a gradient penalty through a Linear layer (the
penalty once left weight_hh_l0.grad None and gave the Linear a wrong gradient, with no error).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import gatedrnn
from gatedrnn.engines.kernels import gru, lstm, rnn
from gatedrnn.equations.cells import CellOptions

F64 = torch.float64
KERNELS = {"lstm": lstm, "gru": gru, "rnn_tanh": rnn, "rnn_relu": rnn}
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _case(mode: str, *, proj: int = 0, peephole: bool = False, layer_norm: bool = False,
          bias: bool = True, T: int = 3, B: int = 3, I: int = 2, H: int = 3):  # noqa: E741
    """Leaves (float64, requiring grad) and a function of them that runs the fused kernel."""
    g = torch.Generator().manual_seed(0)

    def leaf(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, dtype=F64) * 0.7).requires_grad_()

    G, Ho = GATES[mode] * H, proj or H
    leaves = {"x": leaf(T, B, I), "h0": leaf(B, Ho), "w_ih": leaf(G, I), "w_hh": leaf(G, Ho)}
    if mode == "lstm":
        leaves["c0"] = leaf(B, H)
    if bias:
        leaves.update(b_ih=leaf(G), b_hh=leaf(G))
    if proj:
        leaves["w_hr"] = leaf(proj, H)
    if peephole:
        leaves["peephole"] = leaf(3, H)
    if layer_norm:
        for which, n in (("x", G), ("h", G), ("c", H)):
            if mode == "lstm" or which != "c":
                leaves[f"ln_{which}_w"], leaves[f"ln_{which}_b"] = leaf(n), leaf(n)
    opts = CellOptions(mode, layer_norm=layer_norm)
    names = list(leaves)

    def f(*values: torch.Tensor, batch_sizes=None, reverse=False, masks=None):
        v = dict(zip(names, values))
        state = (v.pop("h0"), v.pop("c0")) if mode == "lstm" else (v.pop("h0"),)
        y, final, _ = KERNELS[mode].run(v.pop("x"), state, v, batch_sizes, reverse, opts,
                                        masks or {}, False)
        return (y, *final)

    return leaves, f


@pytest.mark.parametrize("mode,kw", [
    ("lstm", {}),
    ("lstm", {"proj": 2}),
    ("lstm", {"peephole": True, "layer_norm": True}),
    ("gru", {}),
    ("gru", {"layer_norm": True}),
    ("rnn_tanh", {}),
    ("rnn_relu", {"bias": False}),
])
def test_gradgradcheck_float64(mode: str, kw: dict) -> None:
    leaves, f = _case(mode, **kw)
    assert torch.autograd.gradgradcheck(f, tuple(leaves.values()))


def test_gradgradcheck_gru_cho_form() -> None:
    leaves, f = _case("gru")
    opts = CellOptions("gru", reset_after=False)
    names = list(leaves)

    def cho(*values):
        v = dict(zip(names, values))
        y, (h,), _ = gru.run(v.pop("x"), (v.pop("h0"),), v, None, False, opts, {}, False)
        return y, h

    assert torch.autograd.gradgradcheck(cho, tuple(leaves.values()))


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_relu"])
def test_gradgradcheck_packed_reverse_with_masks(mode: str) -> None:
    """Lengths, direction and the random masks reach the differentiable backward unchanged."""
    leaves, f = _case(mode, T=4, B=3)
    H = leaves["w_hh"].shape[1]
    g = torch.Generator().manual_seed(1)
    masks = {"recurrent": torch.bernoulli(torch.full((3, H), 0.7, dtype=F64), generator=g) / 0.7,
             "zoneout_h": torch.bernoulli(torch.full((4, 3, H), 0.3, dtype=F64), generator=g)}
    if mode == "lstm":
        masks["zoneout_c"] = torch.bernoulli(torch.full((4, 3, H), 0.3, dtype=F64), generator=g)
    sizes = torch.tensor([3, 3, 2, 1])

    def g_(*values):
        return f(*values, batch_sizes=sizes, reverse=True, masks=masks)

    assert torch.autograd.gradgradcheck(g_, tuple(leaves.values()))


def test_first_derivative_under_create_graph_equals_the_fast_backward() -> None:
    """create_graph=True switches the backward to the reference engine: same numbers."""
    leaves, f = _case("lstm", proj=2, peephole=True)
    values = tuple(leaves.values())
    outs = f(*values)
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=F64).view(o.shape)).sum() for o in outs)
    fast = torch.autograd.grad(loss, values, retain_graph=True)
    slow = torch.autograd.grad(loss, values, create_graph=True)
    for a, b in zip(fast, slow):
        assert b.requires_grad
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# --- gradient penalty through Linear -> recurrent module, against torch.nn ----------------------

def _penalty_grads(module: torch.nn.Module, lin: torch.nn.Linear, x: torch.Tensor,
                   lengths: list[int] | None) -> dict[str, torch.Tensor | None]:
    module.zero_grad(set_to_none=True)
    lin.zero_grad(set_to_none=True)
    inp = lin(x)  # (T, B, I)
    seq = inp if lengths is None else pack_padded_sequence(inp, lengths)
    out, state = module(seq)
    h = state[0] if isinstance(state, tuple) else state
    y = out.data if lengths is not None else out
    loss = (y ** 2).sum() + (h ** 3).sum()
    (g,) = torch.autograd.grad(loss, inp, create_graph=True)
    (g.norm() + 0.1 * loss).backward()
    named = [*(("m." + k, p) for k, p in module.named_parameters()),
             *(("lin." + k, p) for k, p in lin.named_parameters())]
    return {k: (None if p.grad is None else p.grad.clone()) for k, p in named}


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
@pytest.mark.parametrize("name,kw,lengths", [
    ("LSTM", {}, None),
    ("LSTM", {"proj_size": 2, "num_layers": 2}, None),
    ("LSTM", {"bidirectional": True}, [4, 3, 1]),
    ("GRU", {}, None),
    ("GRU", {"bidirectional": True, "num_layers": 2}, [4, 4, 2]),
    ("RNN", {}, None),
    ("RNN", {"nonlinearity": "relu"}, [4, 2, 2]),
])
def test_gradient_penalty_matches_torch_nn(name: str, kw: dict, lengths, dtype, tol) -> None:
    torch.manual_seed(0)
    ref = getattr(torch.nn, name)(3, 4, dtype=dtype, **kw)
    ours = getattr(gatedrnn, name)(3, 4, dtype=dtype, engine="fused", **kw)
    ours.load_state_dict(ref.state_dict())
    lin = torch.nn.Linear(2, 3, dtype=dtype)
    x = torch.randn(4, 3, 2, dtype=dtype)
    want = _penalty_grads(ref, lin, x, lengths)
    got = _penalty_grads(ours, lin, x, lengths)
    assert want.keys() == got.keys()
    for k in want:
        assert want[k] is not None and got[k] is not None, k
        torch.testing.assert_close(got[k], want[k], rtol=tol, atol=tol, msg=k)


def test_hessian_vector_product_matches_torch_nn() -> None:
    """torch.autograd.functional.hvp over the recurrent weights, as second-order optimisers use."""
    torch.manual_seed(1)
    ref = torch.nn.GRU(2, 3, dtype=F64)
    ours = gatedrnn.GRU(2, 3, dtype=F64, engine="fused")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 2, 2, dtype=F64)
    v = torch.randn_like(ref.weight_hh_l0)

    def loss_of(module):
        names = [k for k, _ in module.named_parameters()]

        def f(w_hh):
            params = {k: (w_hh if k == "weight_hh_l0" else p) for k, p in module.named_parameters()}
            out, _ = torch.func.functional_call(module, params, (x,))
            return (out.tanh() ** 2).sum()

        assert "weight_hh_l0" in names
        return f

    _, want = torch.autograd.functional.hvp(loss_of(ref), ref.weight_hh_l0.detach(), v)
    _, got = torch.autograd.functional.hvp(loss_of(ours), ours.weight_hh_l0.detach(), v)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name,kw", [
    ("LSTM", {"layer_norm": True, "peephole": True, "proj_size": 2, "recurrent_dropout": 0.3}),
    ("GRU", {"layer_norm": True, "zoneout": 0.2}),
    ("GRU", {"reset_after": False, "bidirectional": True}),
])
def test_gradient_penalty_of_variants_matches_the_reference_engine(name: str, kw: dict) -> None:
    """Variants torch.nn lacks: the fused engine against the reference engine, same masks
    (same seed), in training mode."""
    results = []
    for engine in ("reference", "fused"):
        torch.manual_seed(0)
        m = getattr(gatedrnn, name)(3, 4, engine=engine, dtype=F64, **kw).train()
        x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
        torch.manual_seed(1)
        y = m(x)[0]
        (g,) = torch.autograd.grad((y ** 2).sum(), x, create_graph=True)
        g.norm().backward()
        results.append([p.grad for p in m.parameters()] + [x.grad])
    for a, b in zip(*results):
        assert a is not None and b is not None
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
