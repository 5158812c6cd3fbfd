"""The plain LSTM's and GRU's inference loops of one or two rows, for all hidden units or one
part of them, so that two threads can share one sequence (``pair``).

Each call runs units [u0, u1) of every row: per step, the product of its rows of W_hh (gate
blocks i|f|g|o, or r|z|n, each cut to its units) and the gate pass of its units. The product is
``common.prod``'s GEMV loops, or on one thread (all units) ``gemv``'s on a W_hh packed for it.
h lives in two buffers (step k reads hb[k % 2] and writes the other), so when two calls run as
the halves of a pair (``sync`` non-empty) one meeting per step (``int8_team.barrier``) is
enough: no half writes a buffer the other may still read.

The halves give the bits of one call over all units and of ``lstm_steps.forward`` and
``gru_steps.forward``: every output of ``common.prod``'s GEMV is one dot product, summed in an
order that does not depend on which rows share the call (the parts are cut at multiples of 4
units, so no row falls to the GEMV's one-row tail), and the gate math is the same expressions,
elementwise (tests/test_kernel_pair.py compares the bits). ``gemv``'s sums are in another
order, so the one-thread loop on a packed W_hh differs from those in the last bits.

Legend: G (T, B, GH) the input projection of the steps (overwritten: the pre-activations), hb
(2, B, H) the state buffers, hb[0] the initial h; cw (B, H) the LSTM's cell state, updated in
place; Y (T, B, H) outputs, zero on rows inactive at a step (the caller's zeros); rows
[0, sizes[t]) are active at step t, the others carry their h across; wp W_hh packed for
``gemv`` (``gemv.pack``; all units only), or size 0 for ``common.prod`` on w_hh; tail a (2, 64)
scratch.
"""

from __future__ import annotations

import numba

# gemv, prod, sigmoid and tanh are inlined (numba's cache is keyed on this file: an edit to them
# must touch this file too)
from .common import JIT, prod, sigmoid, tanh
from .gemv import gemv
from .int8_team import barrier


@numba.njit(**JIT)
def lstm(G, hb, cw, Y, sizes, reverse, w_hh, wp, u0, u1, part, sync, scratch, tail):
    """Units [u0, u1) of the plain LSTM (cells.lstm_cell, no variant): a = G[t] + W_hh h,
    c' = σ(a_f) c + σ(a_i) tanh(a_g), h' = σ(a_o) tanh(c')."""
    T, B = G.shape[0], G.shape[1]
    H = cw.shape[1]
    U = u1 - u0
    for k in range(T):
        t = T - 1 - k if reverse else k
        cur, nxt = hb[k % 2], hb[1 - k % 2]
        n = sizes[t]
        g = G[t]
        if wp.shape[0] > 0:  # a = G[t] + W_hh h
            gemv(cur[:n], wp, g[:n], tail)
        else:
            for q in range(4):
                prod(cur[:n], w_hh[q * H + u0:q * H + u1], g[:n, q * H + u0:q * H + u1], True,
                     1.0, scratch)
        for b in range(n):
            row = g[b]
            ai, af = row[u0:u1], row[H + u0:H + u1]
            ag, ao = row[2 * H + u0:2 * H + u1], row[3 * H + u0:3 * H + u1]
            # one array per loop, as lstm_steps' plain pass (which vectorises that way)
            for j in range(U):
                ai[j] = sigmoid(ai[j])
            for j in range(U):
                af[j] = sigmoid(af[j])
            for j in range(U):
                ag[j] = tanh(ag[j])
            for j in range(U):
                ao[j] = sigmoid(ao[j])
            cp, hn = cw[b, u0:u1], nxt[b, u0:u1]
            for j in range(U):
                c = ai[j] * ag[j] + af[j] * cp[j]  # lstm_steps' order: the same FMA
                cp[j] = c
                hn[j] = ao[j] * tanh(c)
            Y[t, b, u0:u1] = hn
        for b in range(n, B):
            nxt[b, u0:u1] = cur[b, u0:u1]
        if sync.shape[0]:
            barrier(sync, part, k + 1)


@numba.njit(**JIT)
def gru(G, hb, Y, V, sizes, reverse, w_hh, wp, bn, u0, u1, part, sync, scratch, tail):
    """Units [u0, u1) of the plain GRU, reset_after form (cells.gru_cell): v = W_hh h,
    r = σ(u_r + v_r), z = σ(u_z + v_z), n = tanh(u_n + r (v_n + b_hn)), h' = (1 − z) n + z h.
    V (B, 3H) holds v (each half writes its units' columns)."""
    T, B = G.shape[0], G.shape[1]
    H = hb.shape[2]
    U = u1 - u0
    one = G.dtype.type(1.0)
    for k in range(T):
        t = T - 1 - k if reverse else k
        cur, nxt = hb[k % 2], hb[1 - k % 2]
        n = sizes[t]
        g = G[t]
        if wp.shape[0] > 0:  # v = W_hh h
            V[:n] = 0.0
            gemv(cur[:n], wp, V[:n], tail)
        else:
            for q in range(3):
                prod(cur[:n], w_hh[q * H + u0:q * H + u1], V[:n, q * H + u0:q * H + u1], True,
                     0.0, scratch)
        bp = bn[u0:u1]
        for b in range(n):
            row, vb = g[b], V[b]
            ur, uz, un = row[u0:u1], row[H + u0:H + u1], row[2 * H + u0:2 * H + u1]
            vr, vz, vn = vb[u0:u1], vb[H + u0:H + u1], vb[2 * H + u0:2 * H + u1]
            hp, hn = cur[b, u0:u1], nxt[b, u0:u1]
            for j in range(U):
                r = sigmoid(ur[j] + vr[j])
                z = sigmoid(uz[j] + vz[j])
                a = vn[j] + bp[j]
                c = tanh(un[j] + r * a)
                h = hp[j]
                hn[j] = (one - z) * c + z * h  # gru_steps' expressions, in its order
            Y[t, b, u0:u1] = hn
        for b in range(n, B):
            nxt[b, u0:u1] = cur[b, u0:u1]
        if sync.shape[0]:
            barrier(sync, part, k + 1)
