"""Head-wise (block-diagonal) recurrence for the fused kernels, shared by every cell that has it.

With num_heads = nh, H splits into nh blocks of d = H / nh units and W_hh into nh blocks
R_j (G·d, d): head j maps h[:, j·d:(j+1)·d] to the G gates of its own units (the equation is
``gatedrnn.cells.headwise_product``). A dense product costs G·H² multiply-adds per row and step,
the head-wise one G·H²/nh.

The kernels keep two things head-major so that each head's product reads and writes contiguous
(rows, ·) blocks, which is what ``common.prod`` (and the BLAS under it) needs:
- the gate pre-activations, (B, nh·G·d): head j's block holds its G gates, each d wide
  (``head_major`` permutes torch's gate-major rows of W_ih and the biases into this order);
- the state fed to the product, (nh, B, d) (``to_heads``).
With nh = 1 both layouts are torch.nn's, and nothing is permuted.
"""

from __future__ import annotations

import numba
import torch
from torch import Tensor

from .common import JIT, prod


def head_major(H: int, num_heads: int, gates: int) -> Tensor:
    """Row order of the head-major gate layout: index j·G·d + g·d + q takes torch's row
    g·H + j·d + q (gate g of unit j·d + q)."""
    d = H // num_heads
    return torch.arange(gates * H).view(gates, num_heads, d).transpose(0, 1).reshape(-1)


def to_heads(h: Tensor, num_heads: int) -> Tensor:
    """(B, H) -> a fresh contiguous (nh, B, d) copy (never a view: the kernels write into it)."""
    B, H = h.shape
    return h.detach().reshape(B, num_heads, H // num_heads).transpose(0, 1).clone(
        memory_format=torch.contiguous_format)


def from_heads(hh: Tensor) -> Tensor:
    """(nh, B, d) -> (B, H) in torch's unit order."""
    return hh.transpose(0, 1).reshape(hh.shape[1], -1)


@numba.njit(inline="always", **JIT)
def heads_prod(a, R, out, lo, n, transpose, scratch):
    """Per head j, rows [lo, n): out[j] = a[j] R_j^T (``transpose``, the forward product: a the
    state (nh, B, d), out (nh, B, G·d)) or out[j] = a[j] R_j (the backward one: a the gate
    gradients (nh, B, G·d), out (nh, B, d)). R (nh, G·d, d)."""
    if n <= lo:
        return
    for j in range(R.shape[0]):
        prod(a[j, lo:n], R[j], out[j, lo:n], transpose, 0.0, scratch)
