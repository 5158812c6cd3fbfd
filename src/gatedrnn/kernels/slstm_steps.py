"""The sLSTM time loop in numba: the forward pass and, next to it, its hand-derived backward.

The equations are ``gatedrnn.cells.slstm_cell``. The input projection arrives precomputed in ``Z``
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
    C, N, M (T, B, H)  c', n', m' after each step, kept for backward (size 0 when not kept)
    GI, GF (T, B, H)   the stabilised gates i, f when recording (size 0 otherwise)
    n = sizes[t]    rows [0, n) are active at time t; lo, hi: this call's rows (split_rows)

Per element, with u = log σ(f̃) + m and m' = max(u, ĩ):
    i = exp(ĩ − m'), f = exp(u − m'), c' = f c + i tanh(z̃), n' = f n + i, h' = σ(õ) c' / n'
"""

from __future__ import annotations

import math

import numba

from .common import JIT, sigmoid, tanh
from .heads import heads_prod
from .minrnn_steps import _prev


@numba.njit(inline="always", **JIT)
def _log_sigmoid(x):
    """log σ(x) = min(x, 0) − log1p(exp(−|x|)), finite for every finite x."""
    return (x if x < 0.0 else 0.0) - math.log1p(math.exp(-abs(x)))


@numba.njit(inline="always", **JIT)
def _maximum(a, b):
    """torch.maximum: NaN if either is NaN (a plain comparison would drop one)."""
    if a != a or b != b:
        return a + b
    return a if a >= b else b


@numba.njit(**JIT)
def forward(Z, R, hh, cw, nw, mw, rg, Y, C, N, M, GI, GF, sizes, reverse, keep, lo, hi, scratch):
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
                    m = _maximum(lf, ai)
                    i = math.exp(ai - m)
                    f = math.exp(lf - m)
                    c = f * cb[u] + i * tanh(az)
                    nn = f * nb[u] + i
                    h = sigmoid(ao) * c / nn
                    if keep:
                        g[q], g[d + q], g[2 * d + q], g[3 * d + q] = ai, af, az, ao
                        C[t, b, u], N[t, b, u], M[t, b, u] = c, nn, m
                    if rec:
                        GI[t, b, u], GF[t, b, u] = i, f
                    cb[u], nb[u], mb[u] = c, nn, m
                    hb[q] = h
                    yb[u] = h
        for b in range(max(lo, n), hi):
            Y[t, b, :] = 0


@numba.njit(**JIT)
def backward(Z, R, C, N, M, c0, n0, m0, dY, dh, dc, dn, dm, dZ, dg, dhh, sizes, reverse, lo, hi,
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
            mp = m0[b] if p < 0 else M[p, b]
            zb, dzb, dyb = Z[t, b], dZ[t, b], dY[t, b]
            dhb, dcb, dnb, dmb = dh[b], dc[b], dn[b], dm[b]
            for j in range(nh):
                g = zb[j * 4 * d:(j + 1) * 4 * d]
                dgj = dg[j, b]
                for q in range(d):
                    u = j * d + q
                    ai, af, az, ao = g[q], g[d + q], g[2 * d + q], g[3 * d + q]
                    lf = _log_sigmoid(af) + mp[u]
                    m = M[t, b, u]
                    i = math.exp(ai - m)
                    f = math.exp(lf - m)
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
