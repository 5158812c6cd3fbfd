"""Drop-in parity against torch.nn: the same weights, inputs and upstream gradients, compared.

Used by the module tests (engine="reference" and engine="fused") and by the kernel tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import gatedrnn

TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


@dataclass(frozen=True)
class Case:
    kind: str = "LSTM"  # LSTM | GRU | RNN_TANH | RNN_RELU
    layers: int = 1
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    proj: int = 0
    input: str = "padded"  # padded | packed_sorted | packed_unsorted | unbatched
    hx: bool = False
    T: int = 5
    B: int = 3
    I: int = 4  # noqa: E741
    H: int = 6
    dtype: torch.dtype = torch.float64
    seed: int = 0


KINDS = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
INPUTS = ("padded", "packed_sorted", "packed_unsorted", "unbatched")


def cases(**overrides: st.SearchStrategy) -> st.SearchStrategy[Case]:
    """Random configurations for the module parity runs; ``overrides`` replace a field's strategy."""
    fields = dict(
        kind=st.sampled_from(KINDS), layers=st.integers(1, 3), bidirectional=st.booleans(),
        batch_first=st.booleans(), bias=st.booleans(), proj=st.sampled_from([0, 0, 2]),
        input=st.sampled_from(INPUTS), hx=st.booleans(), T=st.integers(1, 7), B=st.integers(1, 5),
        I=st.integers(1, 5), H=st.integers(3, 7), seed=st.integers(0, 10_000),
        dtype=st.sampled_from([torch.float64, torch.float32]))
    fields.update(overrides)
    return st.builds(Case, **fields)


def build(case: Case, engine: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    kw = dict(num_layers=case.layers, bidirectional=case.bidirectional,
              batch_first=case.batch_first, bias=case.bias, dtype=case.dtype)
    if case.kind == "LSTM":
        kw["proj_size"] = case.proj
        ours, ref = gatedrnn.LSTM(case.I, case.H, engine=engine, **kw), torch.nn.LSTM(case.I, case.H, **kw)
    elif case.kind == "GRU":
        ours, ref = gatedrnn.GRU(case.I, case.H, engine=engine, **kw), torch.nn.GRU(case.I, case.H, **kw)
    else:
        nl = "tanh" if case.kind == "RNN_TANH" else "relu"
        ours = gatedrnn.RNN(case.I, case.H, nonlinearity=nl, engine=engine, **kw)
        ref = torch.nn.RNN(case.I, case.H, nonlinearity=nl, **kw)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def make_inputs(case: Case, g: torch.Generator):
    """Input (and its leaf), hx (and its leaves) for one case."""
    D = 2 if case.bidirectional else 1
    H_out = case.proj or case.H
    dt = case.dtype
    if case.input == "unbatched":
        leaf = torch.randn(case.T, case.I, generator=g, dtype=dt, requires_grad=True)
        shape_h, shape_c = (case.layers * D, H_out), (case.layers * D, case.H)
        x = leaf
    else:
        shape = (case.B, case.T, case.I) if case.batch_first else (case.T, case.B, case.I)
        leaf = torch.randn(shape, generator=g, dtype=dt, requires_grad=True)
        shape_h, shape_c = (case.layers * D, case.B, H_out), (case.layers * D, case.B, case.H)
        x = leaf
        if case.input.startswith("packed"):
            lengths = torch.randint(1, case.T + 1, (case.B,), generator=g)
            if case.input == "packed_sorted":
                lengths = lengths.sort(descending=True).values
            lengths[0 if case.input == "packed_sorted" else -1] = case.T
            x = pack_padded_sequence(leaf, lengths, batch_first=case.batch_first,
                                     enforce_sorted=case.input == "packed_sorted")
    leaves = [leaf]
    hx = None
    if case.hx:
        h0 = torch.randn(shape_h, generator=g, dtype=dt, requires_grad=True)
        leaves.append(h0)
        hx = h0
        if case.kind == "LSTM":
            c0 = torch.randn(shape_c, generator=g, dtype=dt, requires_grad=True)
            leaves.append(c0)
            hx = (h0, c0)
    return x, hx, leaves


def _flat(out) -> list[torch.Tensor]:
    y, state = out
    y = y.data if isinstance(y, PackedSequence) else y
    return [y] + (list(state) if isinstance(state, tuple) else [state])


def run_case(case: Case, engine: str = "reference", train: bool = False):
    """Forward and backward both modules; return (ours, ref) lists: outputs, then every gradient."""
    g = torch.Generator().manual_seed(case.seed)
    ours, ref = build(case, engine)
    results = []
    for module in (ours, ref):
        module.train(train)
        g.manual_seed(case.seed + 1)
        x, hx, leaves = make_inputs(case, g)
        outs = _flat(module(x, hx))
        upstream = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
        loss = sum((o * u).sum() for o, u in zip(outs, upstream))
        params = list(module.parameters())
        grads = torch.autograd.grad(loss, leaves + params, allow_unused=True)
        results.append([o.detach() for o in outs] + [
            torch.zeros_like(t) if gr is None else gr for gr, t in zip(grads, leaves + params)])
    return results


def assert_parity(case: Case, engine: str = "reference") -> None:
    ours, ref = run_case(case, engine)
    tol = TOL[case.dtype]
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.shape == b.shape, (i, a.shape, b.shape, case)
        err = (a - b).abs().max().item() if a.numel() else 0.0
        assert err <= tol * max(1.0, b.abs().max().item()), (i, err, case)
