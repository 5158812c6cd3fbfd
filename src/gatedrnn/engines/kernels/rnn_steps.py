"""The Elman RNN time loop in numba: the forward pass and, next to it, its hand-derived backward.

The equations are ``gatedrnn.equations.cells.rnn_cell``. The input projection ``W_ih x + b`` of every step
arrives precomputed in ``G`` (one large GEMM outside, see ``rnn.py``); each step adds the recurrent
product with one ``packed.packed_prod`` (MKL's GEMM, or vectorised loops for one or two rows) into
``G[t]`` and then activates it in place in one pass, so no step allocates. Variants are switched
on by the shapes of their arrays (a size-0 array means "off"), which keeps one compiled
specialisation per dtype.

Legend (kernel-local short names):
    T, B, H       steps, batch, hidden size
    G  (T, B, H)  in: W_ih x_t + b; out: φ(a_t), the activation before zoneout. Without zoneout
                  it is also the output (zeroed on inactive rows)
    Y  (T, B, H)  outputs h_t (after zoneout), zero where inactive; the same array as G unless
                  zoneout is on (then G keeps φ(a) for backward, in training and inference alike,
                  so that both paths run the same loop and give the same bits)
    hw (B, H)     working state: rows not active at a step keep their value, which is exactly
                  the carried state of finished / not yet started rows
    wp            W_hh packed for MKL's packed GEMM (packed.pack_weight), or size 0 or omitted
    m  (B, H)     recurrent dropout mask (already / (1 − p));  hm (B, H) m ⊙ h, the GEMM input
    zh            zoneout keep-weights d: (T, B, H) masks, or (1, 1, H) holding p (evaluation);
                  indices broadcast over size-1 axes
    n = sizes[t]  rows [0, n) are active at time t
    lo, hi        this call runs rows [lo, hi) only (rows are independent; see threads.split_rows)

Vectorisation (see lstm_steps): every hot loop below is branch-free in j, with the activation
and variant choices hoisted out of it, and never reads one array through two different views
while writing it (LLVM's runtime alias check would then fail and the loop run scalar).
"""

from __future__ import annotations

import numba

from .common import JIT, prod, tanh
from .packed import packed_or_none, packed_prod


@numba.njit(inline="always", **JIT)
def _zone_row(z, t, b):
    """Zoneout keep-weights of row b at step t, (H,): size-1 axes broadcast (evaluation p)."""
    return z[t if z.shape[0] > 1 else 0, b if z.shape[1] > 1 else 0]


@numba.njit(**JIT)
def forward(G, Y, hw, sizes, reverse, relu, w_hh, m, zh, hm, lo, hi, scratch, wp=None):
    """Run all steps; see the module legend.

    One step (cells.rnn_cell): a = G[t] + W_hh (m ⊙ h);  v = φ(a) (tanh or relu);
        zoneout: h' = d ⊙ h + (1 − d) ⊙ v, else h' = v;  y_t = h'.
    """
    T, B, H = G.shape
    wpk = packed_or_none(wp)  # callers that predate the packed path pass none
    mask, use_zh = m.shape[0] > 0, zh.shape[0] > 0
    zero = G.dtype.type(0.0)
    one = G.dtype.type(1.0)
    hin = hm if mask else hw  # the recurrent GEMM's input
    if mask:
        for b in range(lo, hi):
            for j in range(H):
                hm[b, j] = hw[b, j] * m[b, j]
    for k in range(T):
        t = T - 1 - k if reverse else k
        n = min(sizes[t], hi)  # this call's active rows are [lo, n)
        g = G[t]
        packed_prod(hin[lo:n], wpk, w_hh, g[lo:n], 1.0, scratch)  # G[t] += (m ⊙ h) W_hh^T
        for b in range(lo, n):
            gb, hb = g[b], hw[b]
            if not use_zh:
                if relu:
                    for j in range(H):
                        v = max(gb[j], zero)
                        gb[j] = v
                        hb[j] = v
                else:
                    for j in range(H):
                        v = tanh(gb[j])
                        gb[j] = v
                        hb[j] = v
            else:  # zoneout: G keeps φ(a) (for backward), Y gets h'
                zr, yb = _zone_row(zh, t, b), Y[t, b]
                if relu:
                    for j in range(H):
                        d = zr[j]
                        a = max(gb[j], zero)
                        gb[j] = a
                        v = d * hb[j] + (one - d) * a
                        yb[j] = v
                        hb[j] = v
                else:
                    for j in range(H):
                        d = zr[j]
                        a = tanh(gb[j])
                        gb[j] = a
                        v = d * hb[j] + (one - d) * a
                        yb[j] = v
                        hb[j] = v
            if mask:
                mb, hmb = m[b], hm[b]
                for j in range(H):
                    hmb[j] = hb[j] * mb[j]
        Y[t, max(lo, n):hi] = zero  # inactive rows output zeros


@numba.njit(**JIT)
def backward(A, dY, dh, dA, sizes, reverse, relu, w_hh, m, zh, tmp, kept, lo, hi, scratch):
    """BPTT through ``forward``'s steps in reverse order. ``A`` holds v_t = φ(a_t) (the G that
    forward left); dh enters as dL/dh_T and leaves as dL/dh_0; writes dA[t] = dL/da_t (zero on
    inactive rows), from which rnn.py takes dx, dW_ih, db and dW_hh as one GEMM each.

    Derivatives of one step (δx = dL/dx; d the zoneout keep-weights, m the recurrent mask):
        δh_t = dh + dY[t]                              (state carried in, plus this output)
        δv   = (1 − d) ⊙ δh_t                          (δh_t without zoneout)
        δa   = δv ⊙ φ'(a):  tanh: 1 − v²;  relu: 1[a > 0] = 1[v > 0], except that a NaN passes δv
               (torch's threshold_backward zeroes where v <= 0, which a NaN never is)
        δh_{t−1} = (δa W_hh) ⊙ m + d ⊙ δh_t
    Rows not active at t keep dh unchanged (their state skipped the step).
    """
    T, B, H = A.shape
    mask, use_zh = m.shape[0] > 0, zh.shape[0] > 0
    zero = A.dtype.type(0.0)
    one = A.dtype.type(1.0)
    out = tmp if (mask or use_zh) else dh  # δa W_hh lands here
    for k in range(T):
        t = k if reverse else T - 1 - k
        n = min(sizes[t], hi)  # this call's active rows are [lo, n)
        for b in range(lo, n):
            ab, dab, dyb, dhb = A[t, b], dA[t, b], dY[t, b], dh[b]
            if not use_zh:
                if relu:
                    for j in range(H):
                        e = dhb[j] + dyb[j]
                        dab[j] = zero if ab[j] <= zero else e
                else:
                    for j in range(H):
                        v = ab[j]
                        dab[j] = (dhb[j] + dyb[j]) * (one - v * v)
            else:
                zr, kb = _zone_row(zh, t, b), kept[b]
                if relu:
                    for j in range(H):
                        d = zr[j]
                        e = dhb[j] + dyb[j]
                        kb[j] = d * e
                        e = (one - d) * e
                        dab[j] = zero if ab[j] <= zero else e
                else:
                    for j in range(H):
                        d = zr[j]
                        e = dhb[j] + dyb[j]
                        kb[j] = d * e
                        v = ab[j]
                        dab[j] = (one - d) * e * (one - v * v)
        dA[t, max(lo, n):hi] = zero
        prod(dA[t, lo:n], w_hh, out[lo:n], False, 0.0, scratch)  # δa W_hh
        if mask or use_zh:
            for b in range(lo, n):
                dhb, tb = dh[b], tmp[b]
                if mask and use_zh:
                    mb, kb = m[b], kept[b]
                    for j in range(H):
                        dhb[j] = tb[j] * mb[j] + kb[j]
                elif mask:
                    mb = m[b]
                    for j in range(H):
                        dhb[j] = tb[j] * mb[j]
                else:
                    kb = kept[b]
                    for j in range(H):
                        dhb[j] = tb[j] + kb[j]
