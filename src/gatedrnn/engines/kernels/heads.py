"""Head-wise (block-diagonal) recurrence for the fused kernels, shared by every cell that has it.

With num_heads = nh, H splits into nh blocks of d = H / nh units and W_hh into nh blocks
R_j (G·d, d): head j maps h[:, j·d:(j+1)·d] to the G gates of its own units (the equation is
``gatedrnn.equations.cells.headwise_product``). A dense product costs G·H² multiply-adds per row and step,
the head-wise one G·H²/nh.

Two layouts serve two kinds of kernel.

sLSTM keeps two things head-major so that each head's product reads and writes contiguous
(rows, ·) blocks (``heads_prod``):
- the gate pre-activations, (B, nh·G·d): head j's block holds its G gates, each d wide
  (``head_major`` permutes torch's gate-major rows of W_ih and the biases into this order);
- the state fed to the product, (nh, B, d) (``to_heads``).
With nh = 1 both layouts are torch.nn's, and nothing is permuted.

The LSTM and GRU kernels (many variants, all written against torch's gate-major rows) keep the
gate-major layout and run nh·G small GEMMs per step on strided views instead
(``headwise_prod`` / ``headwise_prod_t``): head j, gate g reads h[:, j·d:+d] and writes
G[:, g·H + j·d:+d]; ``common.gemm`` takes each view's leading dimension from its strides, so
nothing is copied. They always receive W_hh as (nh, G·d, d) (``as_heads``: the dense (G·H, H_out)
matrix is the one head (1, G·H, H_out)) and take the dense path, one GEMM, when nh = 1.
"""

from __future__ import annotations

import numba
import numpy as np
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


def as_heads(w_hh: Tensor, gates: int, H: int) -> np.ndarray:
    """W_hh as the LSTM and GRU kernels read it: (nh, G·d, d) as given, or the dense (G·H, H_out)
    as the single head (1, G·H, H_out); a numpy view (of a contiguous copy when needed).
    A head-wise shape that does not fit H raises ValueError (the kernels index by it)."""
    if w_hh.dim() == 3:
        nh, Gd, d = w_hh.shape
        if nh < 1 or nh * d != H or Gd != gates * d:
            raise ValueError(f"head-wise weight_hh must be (num_heads, {gates}·d, d) with "
                             f"num_heads·d = hidden_size = {H}, got {tuple(w_hh.shape)}")
    w = w_hh.detach().contiguous().numpy()
    return w if w.ndim == 3 else w.reshape(1, *w.shape)


def heads_of(w_hh: Tensor) -> int:
    """0 for torch.nn's dense (G·H, H_out) W_hh, else nh of a head-wise (nh, G·d, d) one."""
    return w_hh.shape[0] if w_hh.dim() == 3 else 0


@numba.njit(inline="always", **JIT)
def headwise_prod(a, R, c, g0, g1, H, beta, scratch):
    """c = a R^T + beta c for gates g0 … g1 − 1, gate-major: a (rows, H_out) the state,
    R (nh, G·d, d), c (rows, (g1 − g0)·H) (a view of the gate rows is fine). Per head and gate:
        c[:, (g − g0)·H + j·d : +d] = a[:, j·d : +d] R_j[g·d : +d]^T (+ beta c)
    With nh = 1 this is one GEMM against rows g0·H … g1·H − 1 of the dense W_hh."""
    nh = R.shape[0]
    if nh == 1:
        prod(a, R[0, g0 * H:g1 * H], c, True, beta, scratch)
        return
    d = H // nh
    for j in range(nh):
        aj = a[:, j * d:(j + 1) * d]
        for g in range(g0, g1):
            o = (g - g0) * H + j * d
            prod(aj, R[j, g * d:(g + 1) * d], c[:, o:o + d], True, beta, scratch)


@numba.njit(inline="always", **JIT)
def headwise_prod_t(a, R, c, g0, g1, H, beta, scratch):
    """The backward product: c = a R + beta c, a (rows, (g1 − g0)·H) the gradients of gates
    g0 … g1 − 1 (gate-major), c (rows, H_out). Per head:
        c[:, j·d : +d] = Σ_g a[:, (g − g0)·H + j·d : +d] R_j[g·d : +d] (+ beta c)
    With nh = 1 this is one GEMM against rows g0·H … g1·H − 1 of the dense W_hh."""
    nh = R.shape[0]
    if nh == 1:
        prod(a, R[0, g0 * H:g1 * H], c, False, beta, scratch)
        return
    d = H // nh
    for j in range(nh):
        cj = c[:, j * d:(j + 1) * d]
        for g in range(g0, g1):
            o = (g - g0) * H + j * d
            prod(a[:, o:o + d], R[j, g * d:(g + 1) * d], cj, False, beta if g == g0 else 1.0,
                 scratch)
