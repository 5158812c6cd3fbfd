"""The whole-sequence GEMMs outside the time loops (input projection, input gradient), on oneDNN.

Every fused engine does its largest GEMMs once per layer, over all T·B rows: the input projection
x W_ih^T + b and, in the backward pass, dx = dA W_ih. torch.mm runs them on MKL, and on this
machine's AMD EPYC (Zen 4) MKL reaches 160-180 GFLOP/s on those shapes where oneDNN's matmul, the
library behind torch.nn.LSTM's fused CPU path, reaches 175-213 (measured at 2 threads with
``torch.ops.mkldnn._linear_pointwise``, the op torch's own inductor emits for CPU linears; the
engine's shapes ran 5-17% faster). So float32 products of at least ``MIN_MACS`` multiply-adds go
through oneDNN; small ones, float64 (which oneDNN lacks) and torch builds without the op use
torch.mm. The two differ only in the order of float32 sums.

One exception, also measured: with a short inner dimension (K = I < 256, as in the input
projection of the (50, 256, 128, 256) benchmark shape) both libraries run the whole
(12800 x 128) x (128 x 768) product at only ~110 GFLOP/s, while MKL on blocks of 1024 rows reaches
165-180. Such products run block by block into one output.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

MIN_MACS = 50_000_000  # below this (e.g. T = 200, B = 1) oneDNN's set-up costs more than it saves
SHORT_K = 256  # inner dimensions below this run in row blocks on MKL
ROWS = 1024  # the row block


def _probe() -> bool:
    """Whether oneDNN's linear is there and agrees with addmm (checked once, on tiny tensors)."""
    if os.environ.get("GATEDRNN_NO_ONEDNN") or not torch.backends.mkldnn.is_available():
        return False
    try:
        # Fixed values, not torch.randn: drawing from the global generator at import would shift
        # every user's random stream (masks, init) after they had seeded it.
        a = torch.linspace(-1.0, 1.0, 15).reshape(5, 3)
        w = torch.linspace(0.5, -0.7, 12).reshape(4, 3)
        b = torch.tensor([0.1, -0.2, 0.3, -0.4])
        out = torch.ops.mkldnn._linear_pointwise(a, w, b, "none", [], "")
        return bool(torch.allclose(out, torch.addmm(b, a, w.t()), atol=1e-5))
    except (AttributeError, RuntimeError):
        return False


HAVE_ONEDNN = _probe()


def _big(a: Tensor, n: int) -> bool:
    return a.dtype == torch.float32 and a.shape[0] * a.shape[1] * n >= MIN_MACS


def linear(a: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """a W^T (+ bias): a (M, K), w (N, K), bias (N,) or None -> (M, N), outside autograd (the
    engines differentiate by hand)."""
    a, w, bias = a.detach(), w.detach(), None if bias is None else bias.detach()
    if _big(a, w.shape[0]) and a.shape[1] < SHORT_K:
        out = torch.empty(a.shape[0], w.shape[0], dtype=a.dtype)
        for i in range(0, a.shape[0], ROWS):
            block(a[i:i + ROWS], w, bias, out[i:i + ROWS])  # K < SHORT_K: MKL into out
        return out
    if HAVE_ONEDNN and _big(a, w.shape[0]):
        return torch.ops.mkldnn._linear_pointwise(a.contiguous(), w.contiguous(), bias, "none", [], "")
    return torch.mm(a, w.t()) if bias is None else torch.addmm(bias, a, w.t())


def matmul(a: Tensor, w: Tensor) -> Tensor:
    """a W: a (M, N), w (N, K) -> (M, K), as the input gradient dx = dA W_ih; outside autograd."""
    a, w = a.detach(), w.detach()
    if HAVE_ONEDNN and _big(a, w.shape[1]):
        return linear(a, w.t().contiguous(), None)  # the copy of W is small next to a
    return torch.mm(a, w)


def block(a: Tensor, w: Tensor, bias: Tensor | None, out: Tensor) -> Tensor:
    """a W^T (+ bias) for one block of at most ``ROWS`` rows (``time_blocks``): into ``out``, a
    buffer reused from block to block, or for long inner dimensions a fresh oneDNN result (it has
    no out= form; a 4 MB block comes from the heap again, not from new pages)."""
    a, w = a.detach(), w.detach()
    if HAVE_ONEDNN and a.shape[1] >= SHORT_K and _big(a, w.shape[0]):
        return linear(a, w, bias)
    if bias is None:
        return torch.mm(a, w.t(), out=out)
    return torch.addmm(bias.detach(), a, w.t(), out=out)


def time_blocks(T: int, B: int, reverse: bool) -> list[tuple[int, int]]:
    """Inference projects the input block by block, each block's steps right after it: [t0, t1)
    spans of about ``ROWS`` rows, in the order the time loop visits them.

    Why: a whole-sequence projection is a fresh (T, B, G·H) buffer (52 MB at (50, 256, 128, 256)
    for the LSTM). Above glibc's mmap threshold every call page-faults all of it in, which made
    the projection 1.5x slower inside the engine than in isolation, and the loop then reads it back
    from memory. A block of 1024 rows (4 MB at G·H = 1024) is reused, stays in cache and runs at
    MKL's best rate for short inner dimensions (see above). Training keeps the whole G for BPTT;
    the Elman RNN (not benchmarked) still projects the whole sequence at once.
    """
    step = max(1, ROWS // max(B, 1))
    spans = [(t0, min(t0 + step, T)) for t0 in range(0, T, step)]
    return spans[::-1] if reverse else spans


def project_and_run(x2: Tensor, w: Tensor, bias: Tensor | None, buf: Tensor, spans: list,
                    run: Callable[[int, int, np.ndarray], None]) -> None:
    """Inference in blocks: for each span [t0, t1) of ``time_blocks``, project its rows of x2
    (T·B, I) into the reused ``buf`` (≥ t1 − t0, B, G·H), then ``run(t0, t1, g)`` its steps."""
    B, GH = buf.shape[1], buf.shape[2]
    for t0, t1 in spans:
        g = block(x2[t0 * B:t1 * B], w, bias, buf[:t1 - t0].view(-1, GH))
        run(t0, t1, g.view(t1 - t0, B, GH).numpy())
