"""The whole-sequence GEMMs (kernels.linear): oneDNN above a size, torch.mm below, same numbers."""

from __future__ import annotations

import pytest
import torch

import gatedrnn
from gatedrnn.engines.kernels import linear


def test_onednn_is_used_where_torch_has_it() -> None:
    # Otherwise the tests below would only ever check torch.mm against itself.
    assert linear.HAVE_ONEDNN == torch.backends.mkldnn.is_available()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_and_matmul_match_torch_above_and_below_the_threshold(dtype, bias) -> None:
    g = torch.Generator().manual_seed(0)
    # Row blocks on MKL (K < 256), oneDNN, and small enough for plain torch.mm.
    for M, K, N in [(3000, 160, 512), (2000, 300, 512), (7, 3, 5)]:
        a = torch.randn(M, K, generator=g, dtype=dtype)
        w = torch.randn(N, K, generator=g, dtype=dtype)
        b = torch.randn(N, generator=g, dtype=dtype) if bias else None
        want = a @ w.t() + (0 if b is None else b)
        tol = 1e-4 if dtype == torch.float32 else 1e-10  # float32: another order of the sums
        torch.testing.assert_close(linear.linear(a, w, b), want, atol=tol, rtol=tol)
        dA = torch.randn(M, N, generator=g, dtype=dtype)
        torch.testing.assert_close(linear.matmul(dA, w), dA @ w, atol=tol, rtol=tol)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_fused_engine_on_the_onednn_path_matches_torch(kind) -> None:
    """A shape whose input projection and input gradient go through oneDNN: outputs and every
    gradient against torch.nn with the same weights."""
    torch.manual_seed(0)
    T, B, I, H = 40, 48, 128, 256  # T·B·I·G·H >= linear.MIN_MACS for every cell (G >= 1)
    ours = getattr(gatedrnn, kind)(I, H, engine="fused")
    ref = getattr(torch.nn, kind)(I, H)
    ref.load_state_dict(ours.state_dict())
    assert T * B * I * H >= linear.MIN_MACS
    x = torch.randn(T, B, I, requires_grad=True)
    outs = []
    for net in (ours, ref):
        y, _ = net(x)
        grads = torch.autograd.grad(y.square().sum(), [x, *net.parameters()])
        outs.append((y, *grads))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


BLOCK_CASES = [
    ("LSTM", {"bidirectional": True, "num_layers": 2}),
    ("LSTM", {"proj_size": 3, "peephole": True}),
    ("LSTM", {"zoneout": 0.3, "zoneout_cell": 0.2, "recurrent_dropout": 0.25}),  # training masks
    ("GRU", {"bidirectional": True, "reset_after": False}),
    ("GRU", {"zoneout": 0.3, "recurrent_dropout": 0.25}),
]


@pytest.mark.parametrize("kind,kw", BLOCK_CASES)
@pytest.mark.parametrize("packed", [False, True])
def test_inference_in_time_blocks_equals_one_block(monkeypatch, kind, kw, packed) -> None:
    """The blocked input projection (linear.time_blocks) over spans of 2 steps gives the numbers
    of one whole-sequence block: both directions, packed lengths, and per-step zoneout masks,
    which must follow their span (float64: only the order of work differs)."""
    T, B, I, H = 7, 4, 3, 5
    net = getattr(gatedrnn, kind)(I, H, engine="fused", dtype=torch.float64, **kw)
    net.train(any(k in kw for k in ("zoneout", "recurrent_dropout")))
    x = torch.randn(T, B, I, dtype=torch.float64)
    if packed:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([7, 2, 5, 1]),
                                                    enforce_sorted=False)
    outs = []
    for rows in (8, 10**9):  # 8 rows = spans of 2 steps at B = 4; then one block
        monkeypatch.setattr(linear, "ROWS", rows)
        assert (len(linear.time_blocks(T, B, False)) > 1) == (rows == 8)
        torch.manual_seed(1)  # the same masks in both runs
        with torch.no_grad():
            outs.append(torch.utils._pytree.tree_leaves(net(x)))
    for a, b in zip(*outs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_onednn_and_blocked_paths_are_deterministic(kind) -> None:
    """Identical inputs give identical bits, in inference (blocked projection) and training."""
    torch.manual_seed(0)
    net = getattr(gatedrnn, kind)(128, 256, engine="fused")
    x = torch.randn(40, 48, 128, requires_grad=True)
    runs = []
    for _ in range(2):
        with torch.no_grad():
            y_inf = net(x)[0]
        y = net(x)[0]
        runs.append((y_inf, y.detach(), *torch.autograd.grad(y.square().sum(), [x, *net.parameters()])))
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
