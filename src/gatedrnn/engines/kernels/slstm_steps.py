"""The sLSTM time loop in numba: the forward pass and, next to it, its hand-derived backward.

The equations are ``gatedrnn.equations.cells.slstm_cell``. The input projection arrives precomputed in ``Z``
(one large GEMM outside, see ``slstm.py``); each step runs one recurrent product per head
(``heads.heads_prod``) and then one fused pass over the gate math. The gate layout is head-major: the
4d columns of head j are [ĩ | f̃ | z̃ | õ] of its units j·d … (j+1)·d − 1, so that each head's
product reads and writes contiguous (rows, ·) blocks. With one head this is torch.nn's layout.

Legend (kernel-local short names):
    T, B, H, nh, d  steps, batch, hidden size, heads, d = H / nh; unit u = j·d + k of head j
    Z  (T, B, 4H)   in: W_ih x + b (head-major); out when ``keep``: the raw gates incl. R h
    R  (nh, 4d, d)  recurrent weight per head
    hh (nh, B, d)   working h, head-major (the products' input); cw, nw, mw (B, H): c, n, m
    rg (nh, B, 4d)  scratch: the recurrent product of a step
    Y  (T, B, H)    outputs, zero where inactive
    C, N, M (T, B, H)  c', n', m' after each step: C, N for backward, M for the recorded
                       stabiliser (size 0 when not kept)
    L  (T, B, H)    u = log σ(f̃) + m of each step, kept for backward (size 0 when not kept)
    GI, GF (T, B, H)   the stabilised gates i, f when recording (size 0 otherwise)
    n = sizes[t]    rows [0, n) are active at time t; lo, hi: this call's rows (split_rows)

Per element, with u = log σ(f̃) + m and m' = max(u, ĩ):
    i = exp(ĩ − m'), f = exp(u − m'), c' = f c + i tanh(z̃), n' = f n + i, h' = σ(õ) c' / n'
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from .common import JIT, sigmoid, tanh
from .heads import heads_prod
from .minrnn_steps import _prev

_INF = float("inf")
_F32 = np.float32


@numba.njit(inline="always", **JIT)
def _log_sigmoid(x):
    """log σ(x) = min(x, 0) − log1p(exp(−|x|)), finite for every finite x (in x's own type)."""
    e = math.exp(-abs(x))
    return min(x, e * _F32(0.0)) - log1p_unit(e)  # _F32: a bare 0 would promote to float64


def log1p_unit(e):
    """log(1 + e) for e in [0, 1]: libm's log1p for float64; for float32 a vectorisable series
    (libm's log1p was most of the sLSTM forward pass): with s = e / (2 + e) ≤ 1/3,
    log1p(e) = 2 atanh(s) = 2 s Σ_k s^2k / (2k + 1), cut after s^12 (the rest ≤ 1.4e-8 relative)."""
    return math.log1p(e)


@overload(log1p_unit, inline="always", jit_options=JIT)
def _log1p_unit_impl(e):
    if e != numba.float32:
        return lambda e: math.log1p(e)

    def series(e):
        s = e / (_F32(2.0) + e)
        s2 = s * s
        p = _F32(1.0 / 13.0)
        p = p * s2 + _F32(1.0 / 11.0)
        p = p * s2 + _F32(1.0 / 9.0)
        p = p * s2 + _F32(1.0 / 7.0)
        p = p * s2 + _F32(1.0 / 5.0)
        p = p * s2 + _F32(1.0 / 3.0)
        p = p * s2 + _F32(1.0)
        return _F32(2.0) * s * p

    return series


@numba.njit(inline="always", **JIT)
def _maximum(a, b):
    """torch.maximum: NaN if either is NaN (a plain comparison would drop one)."""
    if a != a or b != b:
        return a + b
    return a if a >= b else b


@numba.njit(inline="always", **JIT)
def _gates(lf, ai):
    """(m', i, f) from u = log σ(f̃) + m and ĩ, with one exp: m' is u or ĩ, so one of
    exp(ĩ − m'), exp(u − m') is exp(0) = 1 and the other is exp(−|u − ĩ|), the same values as
    the two exps of the equations. A non-finite m' takes the equations literally (inf − inf)."""
    m = _maximum(lf, ai)
    if abs(m) < _INF:
        e = math.exp(-abs(lf - ai))
        one = e * _F32(0.0) + _F32(1.0)  # e's type (bare 0, 1 would promote float32 to float64)
        if lf >= ai:
            return m, e, one
        return m, one, e
    return m, math.exp(ai - m), math.exp(lf - m)


@numba.njit(**JIT)
def forward(Z, R, hh, cw, nw, mw, rg, Y, C, N, M, L, GI, GF, sizes, reverse, keep, lo, hi,
            scratch):
    """Run all steps (see the legend); hh, cw, nw, mw end as the final state."""
    T = Z.shape[0]
    nh, d = hh.shape[0], hh.shape[2]
    rec = GI.shape[0] > 0
    for k in range(T):
        t = T - 1 - k if reverse else k
        n = min(sizes[t], hi)
        heads_prod(hh, R, rg, lo, n, True, scratch)  # rg[j] = hh[j] R_j^T, (rows, 4d) per head
        for b in range(lo, n):
            zb, yb, cb, nb, mb = Z[t, b], Y[t, b], cw[b], nw[b], mw[b]
            for j in range(nh):
                g, r, hb = zb[j * 4 * d:(j + 1) * 4 * d], rg[j, b], hh[j, b]
                for q in range(d):
                    u = j * d + q
                    ai = g[q] + r[q]
                    af = g[d + q] + r[d + q]
                    az = g[2 * d + q] + r[2 * d + q]
                    ao = g[3 * d + q] + r[3 * d + q]
                    lf = _log_sigmoid(af) + mb[u]
                    m, i, f = _gates(lf, ai)
                    c = f * cb[u] + i * tanh(az)
                    nn = f * nb[u] + i
                    h = sigmoid(ao) * c / nn
                    if keep:
                        g[q], g[d + q], g[2 * d + q], g[3 * d + q] = ai, af, az, ao
                        C[t, b, u], N[t, b, u], M[t, b, u], L[t, b, u] = c, nn, m, lf
                    if rec:
                        GI[t, b, u], GF[t, b, u] = i, f
                    cb[u], nb[u], mb[u] = c, nn, m
                    hb[q] = h
                    yb[u] = h
        for b in range(max(lo, n), hi):
            Y[t, b, :] = 0


@numba.njit(**JIT)
def backward(Z, R, C, N, L, c0, n0, dY, dh, dc, dn, dm, dZ, dg, dhh, sizes, reverse, lo, hi,
             scratch):
    """BPTT over the steps of ``forward`` in the opposite order. Carries dh, dc, dn, dm (B, H):
    in dL/d(final state), out dL/d(initial state). Per element, with δh = dh + dY[t]:

        δc' = dc + δh σ(õ) / n',   δn' = dn − δh σ(õ) c' / n'²,   dõ = δh (c'/n') σ'(õ)
        δf = δc' c + δn' n,   δi = δc' tanh(z̃) + δn',   dz̃ = δc' i (1 − tanh²(z̃))
        δm' = dm − δi i − δf f;   the max sends δm' to u or ĩ (half each on a tie, as torch)
        dĩ = δi i (+ δm'),  δu = δf f (+ δm'),  df̃ = δu σ(−f̃),  dm ← δu
        dc ← δc' f,  dn ← δn' f,  dh ← Σ_heads dZ_j R_j   (one product per head)
    dZ (T, B, 4H) gets the raw gates' gradient (zero where inactive); dg (nh, B, 4d) and
    dhh (nh, B, d) are scratch.
    """
    T = Z.shape[0]
    nh, d = dg.shape[0], dhh.shape[2]
    half = Z.dtype.type(0.5)
    one = Z.dtype.type(1.0)
    for k in range(T):
        t = k if reverse else T - 1 - k
        n = min(sizes[t], hi)
        for b in range(lo, n):
            p = _prev(t, b, T, sizes, reverse)
            cp = c0[b] if p < 0 else C[p, b]
            np_ = n0[b] if p < 0 else N[p, b]
            zb, dzb, dyb = Z[t, b], dZ[t, b], dY[t, b]
            dhb, dcb, dnb, dmb = dh[b], dc[b], dn[b], dm[b]
            for j in range(nh):
                g = zb[j * 4 * d:(j + 1) * 4 * d]
                dgj = dg[j, b]
                for q in range(d):
                    u = j * d + q
                    ai, af, az, ao = g[q], g[d + q], g[2 * d + q], g[3 * d + q]
                    lf = L[t, b, u]
                    m, i, f = _gates(lf, ai)
                    tz = tanh(az)
                    c, nn = C[t, b, u], N[t, b, u]
                    so = sigmoid(ao)
                    gh = dhb[u] + dyb[u]
                    gc = dcb[u] + gh * so / nn
                    gn = dnb[u] - gh * so * c / (nn * nn)
                    dao = gh * c / nn * so * (one - so)
                    gf = gc * cp[u] + gn * np_[u]
                    gi = gc * tz + gn
                    daz = gc * i * (one - tz * tz)
                    dai = gi * i
                    du = gf * f
                    gm = dmb[u] - dai - du
                    if lf > ai:
                        du += gm
                    elif ai > lf:
                        dai += gm
                    else:
                        du += half * gm
                        dai += half * gm
                    daf = du * sigmoid(-af)
                    dcb[u] = gc * f
                    dnb[u] = gn * f
                    dmb[u] = du
                    dgj[q], dgj[d + q], dgj[2 * d + q], dgj[3 * d + q] = dai, daf, daz, dao
                dzb[j * 4 * d:(j + 1) * 4 * d] = dgj
        for b in range(max(lo, n), hi):
            dZ[t, b, :] = 0
        heads_prod(dg, R, dhh, lo, n, False, scratch)  # dhh[j] = dg[j] R_j, (rows, d) per head
        for b in range(lo, n):
            for j in range(nh):
                dhb, src = dh[b], dhh[j, b]
                for q in range(d):
                    dhb[j * d + q] = src[q]
