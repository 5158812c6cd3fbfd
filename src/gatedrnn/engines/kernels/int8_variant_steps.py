"""The numba loops of the int8 variants engine: head-wise products, layer norm, peepholes, zoneout
(its evaluation form), the sLSTM, and the whole-sequence projection of minGRU and minLSTM.

The scheme is ``gatedrnn.equations.quantized``'s; every integer product is ``int8_gemm.qgemm``
(VNNI or AMX). A recurrent weight is held as ``nh`` packed heads (a dense W_hh is one head)::

    wp (nh, nblk, Kp/4, 256) int8   head j's rows (G·dh, k), packed (``int8_gemm.pack``)
    comp (nh, Np) int32             128 Σ_k w of each row (the unsigned-input correction)
    sw (nh, G·dh) float32           the row scales

and its product with h (B, nh·k) quantized per batch row over all its units (one scale s_b) is

    out[b, g·H + j·dh + e] += (acc_j[b, g·dh + e] − comp[j, g·dh + e]) · s_b · sw[j, g·dh + e]

with H = nh·dh: the dense gate-major layout [gate 0 (H) | gate 1 (H) | …] of ``cells.py``.

Legend (kernel-local short names, as ``int8_steps``):
    G  (T, B, GH)  the input projection (with its biases, or layer-normed: see each loop), then,
                   in place, the pre-activations of each step
    Y  (T, B, Ho)  outputs, zero where a row is inactive; hw (B, Ho), cw (B, H): carried state
    xu (nh, B, Kp) h's quantized rows + 128, split per head; full (B, Kp) scratch; sx (B,) scales
    acc (nh, B, Np) int32 sums; hp (B, GH) float32 scratch for a product kept apart (layer norm,
                   the GRU's b_hh and r ⊙ v_n)
    zo_h, zo_c     zoneout probabilities (evaluation: h' = p h + (1 − p) h'; 0 = off)
    n = sizes[t]   rows [0, n) active at time t; lo, hi: this call's rows
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .common import JIT, sigmoid, tanh
from .int8_gemm import qgemm
from .int8_steps import JIT8, quant_row
from .slstm_steps import _gates, _log_sigmoid

_F32 = np.float32


@numba.njit(**JIT8)
def quant_heads(h, xu, full, sx, lo, n):
    """sx[b] = quant_row(h[b]) for rows [lo, n), one scale per row over all of h[b]; head j's
    inputs h[b, j·k:(j+1)·k] land in xu[j, b, :k] (k = Ho / nh)."""
    nh = xu.shape[0]
    k = h.shape[1] // nh
    for b in range(lo, n):
        if nh == 1:
            sx[b] = quant_row(h[b], xu[0, b])
        else:
            sx[b] = quant_row(h[b], full[b])
            for j in range(nh):
                xu[j, b, :k] = full[b, j * k:(j + 1) * k]


@numba.njit(inline="always", **JIT)
def rec_prod(xu, lo, n, wp, comp, sw, acc, sx, out, ng, isa):
    """out[b] += the dequantized product of every head (module docstring), rows [lo, n); out
    (B, ≥ ng·H), ng the gates of this weight."""
    nh = wp.shape[0]
    dh = sw.shape[1] // ng
    H = nh * dh
    for j in range(nh):
        qgemm(xu[j], lo, n, wp[j], acc[j], isa)
    if nh == 1:  # dense: the rows are in place (one flat loop, 20% faster a step than the nest)
        for b in range(lo, n):
            o, s, a, c, w = out[b], sx[b], acc[0, b], comp[0], sw[0]
            for r in range(ng * dh):
                o[r] += _F32(np.int32(a[r] - c[r])) * s * w[r]
        return
    for b in range(lo, n):
        o, s = out[b], sx[b]
        for j in range(nh):
            a, c, w = acc[j, b], comp[j], sw[j]
            for g in range(ng):
                for e in range(dh):
                    r = g * dh + e
                    o[g * H + j * dh + e] += _F32(np.int32(a[r] - c[r])) * s * w[r]


@numba.njit(inline="always", **JIT)
def layer_norm(v, w, b, eps):
    """v ← w ⊙ (v − mean v) / sqrt(var v + eps) + b in place (biased variance; sums in float64)."""
    N = v.shape[0]
    m = 0.0
    for j in range(N):
        m += v[j]
    m /= N
    q = 0.0
    for j in range(N):
        q += (v[j] - m) * (v[j] - m)
    r = _F32(1.0 / math.sqrt(q / N + eps))
    mf = _F32(m)
    for j in range(N):
        v[j] = (v[j] - mf) * r * w[j] + b[j]


@numba.njit(**JIT)
def ln_rows(G, w, b, eps, bias, lo, hi):
    """G[r] = LN(G[r]) + bias for rows [lo, hi) of G (R, N): the layer-normed input projection."""
    for r in range(lo, hi):
        g = G[r]
        layer_norm(g, w, b, eps)
        for j in range(g.shape[0]):
            g[j] += bias[j]


@numba.njit(inline="always", **JIT)
def _zone(old, new, p):
    return p * old + (_F32(1.0) - p) * new


@numba.njit(inline="always", **JIT)
def _carry(hw, y, lo, n, zo_h):
    """Rows [lo, n) of a step's output y (B, Ho) become the carried state, through zoneout's
    evaluation form when zo_h > 0: h = p h + (1 − p) y, and y = h."""
    zero = _F32(0.0)
    for b in range(lo, n):
        h, yb = hw[b], y[b]
        for j in range(h.shape[0]):
            v = _zone(h[j], yb[j], zo_h) if zo_h > zero else yb[j]
            h[j] = v
            yb[j] = v


@numba.njit(**JIT)
def lstm(G, Y, hw, cw, sizes, reverse, wp, comp, sw, xu, full, sx, acc, hp, ln, lnw, eps, bias,
         peep, zo_h, zo_c, rp, rcomp, rs, hv, pu, pacc, lo, hi, isa):
    """LSTM steps with the variants (``cells.lstm_cell``). Without layer norm G[t] holds
    W_ih x + b_ih + b_hh and the product adds into it; with it G[t] holds LN_x(W_ih x), the product
    goes to hp, and a = G[t] + LN_h(hp) + bias (bias = b_ih + b_hh). lnw (4, 4H): the gain and
    bias of LN_h (rows 0, 1) and of LN_c (rows 2, 3, in their first H).
    peep (3, H) P_i, P_f, P_o or empty. With a projection (rp non-empty) h' = W_hr (o tanh c')
    on the row-quantized o tanh c' (hv (B, H), pu, pacc its u8 rows and sums)."""
    T = G.shape[0]
    H = cw.shape[1]
    Ho = hw.shape[1]
    proj = rp.shape[0] > 0
    has_peep = peep.shape[0] > 0
    zero = _F32(0.0)
    for k in range(T):
        t = T - 1 - k if reverse else k
        n = min(sizes[t], hi)
        if n > lo:
            quant_heads(hw, xu, full, sx, lo, n)
            if ln:
                hp[lo:n] = zero
                rec_prod(xu, lo, n, wp, comp, sw, acc, sx, hp, 4, isa)
            else:
                rec_prod(xu, lo, n, wp, comp, sw, acc, sx, G[t], 4, isa)
            for b in range(lo, n):
                g, c, y = G[t, b], cw[b], Y[t, b]
                if ln:
                    v = hp[b]
                    layer_norm(v, lnw[0], lnw[1], eps)
                    for j in range(4 * H):
                        g[j] = g[j] + v[j] + bias[j]
                out = hv[b] if proj else y  # o ⊙ tanh(shown), before any projection or zoneout
                if has_peep:  # (measured: this form, with the tests inside, is 2x faster
                    for j in range(H):  # than the same loop without them)
                        ai, af = g[j], g[H + j]
                        if has_peep:
                            ai += peep[0, j] * c[j]
                            af += peep[1, j] * c[j]
                        cn = sigmoid(af) * c[j] + sigmoid(ai) * tanh(g[2 * H + j])
                        ao = g[3 * H + j]
                        if has_peep:
                            ao += peep[2, j] * cn
                        g[3 * H + j] = sigmoid(ao)
                        g[j] = cn  # (a_i is spent) the new cell until the state is written
                else:
                    for j in range(H):
                        cn = sigmoid(g[H + j]) * c[j] + sigmoid(g[j]) * tanh(g[2 * H + j])
                        g[3 * H + j] = sigmoid(g[3 * H + j])
                        g[j] = cn
                if ln:
                    shown = g[2 * H:3 * H]  # (a_g is spent) LN_c(c')
                    shown[:] = g[:H]
                    layer_norm(shown, lnw[2, :H], lnw[3, :H], eps)
                else:
                    shown = g[:H]
                for j in range(H):
                    out[j] = g[3 * H + j] * tanh(shown[j])
                    c[j] = _zone(c[j], g[j], zo_c) if zo_c > zero else g[j]
            if proj:
                for b in range(lo, n):
                    sx[b] = quant_row(hv[b], pu[b])
                qgemm(pu, lo, n, rp, pacc, isa)
                for b in range(lo, n):
                    y, a, s = Y[t, b], pacc[b], sx[b]
                    for j in range(Ho):
                        y[j] = _F32(np.int32(a[j] - rcomp[j])) * s * rs[j]
            _carry(hw, Y[t], lo, n, zo_h)
        if n < hi:  # inactive rows output zeros
            Y[t, max(lo, n):hi] = zero


@numba.njit(**JIT)
def gru(G, Y, hw, sizes, reverse, reset_after, wp, comp, sw, xu, full, sx, acc, hp, ln, lnw,
        eps, b_hh, zo_h, wp2, comp2, sw2, rv, lo, hi, isa):
    """GRU steps with the variants (``cells.gru_cell``). G[t] holds u = W_ih x + b_ih (with layer
    norm LN_x(W_ih x) + b_ih); b_hh (3H,) zeros when absent. reset_after: v = W_hh h (to hp),
    LN_h(v) with layer norm (lnw rows 0, 1), + b_hh; r = σ(u_r + v_r), z = σ(u_z + v_z),
    n = tanh(u_n + r v_n). Cho form: v_rz = W_hh[r, z rows] h + b_hz (wp), r, z, then r ⊙ h (rv
    (B, H)) quantized per row times W_hn (wp2), n = tanh(u_n + (W_hn (r ⊙ h) + b_hn)). Both:
    h' = (1 − z) n + z h, then zoneout."""
    T = G.shape[0]
    H = hw.shape[1]
    one, zero = _F32(1.0), _F32(0.0)
    for k in range(T):
        t = T - 1 - k if reverse else k
        n = min(sizes[t], hi)
        if n > lo:
            quant_heads(hw, xu, full, sx, lo, n)
            hp[lo:n] = zero
            rec_prod(xu, lo, n, wp, comp, sw, acc, sx, hp, 3 if reset_after else 2, isa)
            for b in range(lo, n):
                g, v, h, y = G[t, b], hp[b], hw[b], Y[t, b]
                if reset_after:
                    if ln:
                        layer_norm(v, lnw[0], lnw[1], eps)
                    for j in range(3 * H):
                        v[j] += b_hh[j]
                    for j in range(H):
                        r = sigmoid(g[j] + v[j])
                        z = sigmoid(g[H + j] + v[H + j])
                        c = tanh(g[2 * H + j] + r * v[2 * H + j])
                        y[j] = (one - z) * c + z * h[j]
                else:  # g's z rows keep z until the second product; rv holds r ⊙ h
                    for j in range(H):
                        r = sigmoid(g[j] + (v[j] + b_hh[j]))
                        g[H + j] = sigmoid(g[H + j] + (v[H + j] + b_hh[H + j]))
                        rv[b, j] = r * h[j]
            if not reset_after:
                quant_heads(rv, xu, full, sx, lo, n)
                rec_prod(xu, lo, n, wp2, comp2, sw2, acc, sx, hp[:, 2 * H:], 1, isa)
                for b in range(lo, n):
                    g, v, h, y = G[t, b], hp[b], hw[b], Y[t, b]
                    for j in range(H):
                        c = tanh(g[2 * H + j] + (v[2 * H + j] + b_hh[2 * H + j]))
                        z = g[H + j]
                        y[j] = (one - z) * c + z * h[j]
            _carry(hw, Y[t], lo, n, zo_h)
        if n < hi:
            Y[t, max(lo, n):hi] = zero


@numba.njit(**JIT)
def slstm(G, Y, hw, cw, nw, mw, sizes, reverse, wp, comp, sw, xu, full, sx, acc, lo, hi, isa):
    """sLSTM steps (``cells.slstm_cell``): a = G[t] + R h (int8, dense or head-wise; G[t] =
    W_ih x + b_ih + b_hh), gates ĩ|f̃|z̃|õ gate-major; m' = max(log σ(f̃) + m, ĩ), i = exp(ĩ − m'),
    f = exp(log σ(f̃) + m − m'), c' = f c + i tanh z̃, n' = f n + i, h' = σ(õ) c' / n'."""
    T = G.shape[0]
    H = hw.shape[1]
    for k in range(T):
        t = T - 1 - k if reverse else k
        n = min(sizes[t], hi)
        if n > lo:
            quant_heads(hw, xu, full, sx, lo, n)
            rec_prod(xu, lo, n, wp, comp, sw, acc, sx, G[t], 4, isa)
            for b in range(lo, n):
                g, y, h, cb, nb, mb = G[t, b], Y[t, b], hw[b], cw[b], nw[b], mw[b]
                for u in range(H):
                    lf = _log_sigmoid(g[H + u]) + mb[u]
                    m, i, f = _gates(lf, g[u])
                    c = f * cb[u] + i * tanh(g[2 * H + u])
                    nn = f * nb[u] + i
                    v = sigmoid(g[3 * H + u]) * c / nn
                    cb[u], nb[u], mb[u] = c, nn, m
                    h[u] = v
                    y[u] = v
        if n < hi:
            Y[t, max(lo, n):hi] = _F32(0.0)
