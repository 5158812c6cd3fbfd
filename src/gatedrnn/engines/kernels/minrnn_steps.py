"""The minGRU / minLSTM scan in numba: the forward pass and, next to it, its hand-derived backward.

The equations are ``gatedrnn.equations.cells.mingru_cell`` and ``minlstm_cell``. Their gates see x_t only, so
the projection a = W_ih x + b of every step arrives precomputed in ``A`` (one large GEMM outside,
see ``minrnn.py``) and a step is pure elementwise work: no recurrent GEMM, no allocation.

Legend (kernel-local short names):
    T, B, H       steps, batch, hidden size; rows of A are G·H wide: z | h̃ (minGRU, G = 2) or
                  f | i | h̃ (minLSTM, G = 3), pre-activation
    hw (B, H)     working state: rows not active at a step keep their value
    Y  (T, B, H)  outputs (= the state after each step), zero where inactive
    h0 (B, H)     initial state (backward reads it at each row's first step)
    dh (B, H)     backward carry: in dL/dh_n, out dL/dh0
    dA (T, B, GH) out: dL/da, zero where inactive
    n = sizes[t]  rows [0, n) are active at time t; lo, hi: this call's rows (threads.split_rows)

g(v) = v + 0.5 (v ≥ 0), σ(v) (v < 0) and g'(v) = 1 (v ≥ 0), σ(v)(1 − σ(v)) (v < 0).
"""

from __future__ import annotations

import numba
import numpy as np

from .common import JIT, sigmoid

_INF = float("inf")
_ZERO32, _ONE32 = np.float32(0.0), np.float32(1.0)
# Without "reassoc": with it LLVM may rewrite (1 − z) h + z h̃ as h + z (h̃ − h), which turns an
# infinite state into NaN where the reference keeps inf. These loops have no reductions, so they
# vectorise without it.
EXACT = {**JIT, "fastmath": JIT["fastmath"] - {"reassoc"}}


@numba.njit(inline="always", **EXACT)
def _sig(x):
    """σ(x), exactly 0 and 1 at ∓inf as torch's: float32's rational σ is 1.7e-7 off there, and
    0 · inf (a zero update gate meeting an infinite candidate) must stay NaN as in the reference."""
    s = sigmoid(x)
    if x == _INF:
        return s * _ZERO32 + _ONE32  # s's type: bare 0, 1 would make float32 float64
    if x == -_INF:
        return s * _ZERO32
    return s


@numba.njit(inline="always", **EXACT)
def _prev(t, b, T, sizes, reverse):
    """The step whose output is row b's state before step t, or −1 for its initial state. A row
    active at t was active at t − 1 (forward); for reverse, at t + 1 only if it is long enough."""
    if reverse:
        return t + 1 if t + 1 < T and b < sizes[t + 1] else -1
    return t - 1


@numba.njit(**EXACT)
def forward(A, hw, Y, sizes, reverse, lstm, lo, hi):
    """Run all steps (see the legend); hw ends as h_n.

    minGRU: z = σ(a_z), h' = (1 − z) ⊙ h + z ⊙ g(a_h)
    minLSTM: f = σ(a_f), i = σ(a_i), h' = (f ⊙ h + i ⊙ g(a_h)) / (f + i)
    """
    T = A.shape[0]
    H = hw.shape[1]
    one, half = A.dtype.type(1.0), A.dtype.type(0.5)
    for k in range(T):
        t = T - 1 - k if reverse else k
        n = min(sizes[t], hi)
        for b in range(lo, n):
            row, hp, yb = A[t, b], hw[b], Y[t, b]
            if lstm:
                af, ai, ah = row[:H], row[H:2 * H], row[2 * H:]
                for j in range(H):
                    f = _sig(af[j])
                    i = _sig(ai[j])
                    v = ah[j]
                    c = v + half if v >= 0 else _sig(v)
                    y = (f * hp[j] + i * c) / (f + i)
                    yb[j] = y
                    hp[j] = y
            else:
                az, ah = row[:H], row[H:]
                for j in range(H):
                    z = _sig(az[j])
                    v = ah[j]
                    c = v + half if v >= 0 else _sig(v)
                    y = (one - z) * hp[j] + z * c
                    yb[j] = y
                    hp[j] = y
        for b in range(max(lo, n), hi):
            Y[t, b, :] = 0


@numba.njit(**EXACT)
def backward(A, Y, h0, dY, dh, dA, sizes, reverse, lstm, lo, hi):
    """BPTT over the steps of ``forward`` in the opposite order; per element, with δ = dh + dY[t]
    and h the state before the step:

    minGRU:  da_z = δ (h̃ − h) z (1 − z),  da_h = δ z g'(a_h),  dh ← δ (1 − z)
    minLSTM: with s = f + i, f' = f/s, i' = i/s and q = δ (h f' + h̃ i'):
             da_f = (δ h − q) f (1 − f) / s,  da_i = (δ h̃ − q) i (1 − i) / s,
             da_h = δ i' g'(a_h),  dh ← δ f'
    """
    T = A.shape[0]
    H = dh.shape[1]
    one, half = A.dtype.type(1.0), A.dtype.type(0.5)
    for k in range(T):
        t = k if reverse else T - 1 - k
        n = min(sizes[t], hi)
        for b in range(lo, n):
            p = _prev(t, b, T, sizes, reverse)
            hp = h0[b] if p < 0 else Y[p, b]
            row, drow, db, dyb = A[t, b], dA[t, b], dh[b], dY[t, b]
            if lstm:
                af, ai, ah = row[:H], row[H:2 * H], row[2 * H:]
                daf, dai, dah = drow[:H], drow[H:2 * H], drow[2 * H:]
                for j in range(H):
                    f = _sig(af[j])
                    i = _sig(ai[j])
                    v = ah[j]
                    sv = _sig(v)
                    c = v + half if v >= 0 else sv
                    gp = one if v >= 0 else sv * (one - sv)
                    s = f + i
                    fn, inn = f / s, i / s
                    d = db[j] + dyb[j]
                    dfn, din = d * hp[j], d * c
                    q = dfn * fn + din * inn
                    daf[j] = (dfn - q) / s * f * (one - f)
                    dai[j] = (din - q) / s * i * (one - i)
                    dah[j] = d * inn * gp
                    db[j] = d * fn
            else:
                az, ah = row[:H], row[H:]
                daz, dah = drow[:H], drow[H:]
                for j in range(H):
                    z = _sig(az[j])
                    v = ah[j]
                    sv = _sig(v)
                    c = v + half if v >= 0 else sv
                    gp = one if v >= 0 else sv * (one - sv)
                    d = db[j] + dyb[j]
                    daz[j] = d * (c - hp[j]) * z * (one - z)
                    dah[j] = d * z * gp
                    db[j] = d * (one - z)
        for b in range(max(lo, n), hi):
            dA[t, b, :] = 0
