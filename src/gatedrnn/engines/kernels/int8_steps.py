"""The int8 engine's numba loops: the input projection and the time loops of LSTM, GRU and RNN.

The scheme (weights int8 per output row, activations int8 per row, dynamically) is fixed in
``gatedrnn.equations.quantized``; the integer products run in ``int8_gemm.qgemm``. Per step, each
loop quantizes the carried h of its active rows, runs one ``qgemm`` on them, and computes the
gates and the state in float32 (``gatedrnn.equations.cells``)::

    q_b = round_half_even(h_b / s_b),  s_b = max|h_b| / 127 (1 where h_b = 0),  |q| ≤ 127
    a   = G[t] + (acc − comp) · s_b · s_w          G[t] = the input projection and the biases

Legend (kernel-local short names):
    T, B, H, Ho   steps, batch, hidden size, output size (H, or proj_size)
    G  (T, B, GH) W_ih x_t + b_ih (+ the b_hh terms that add outside any gate product), float32;
                  the GRU (Cho form) also keeps z in it, in place, between its two products
    Y  (T, B, Ho) outputs, zero where a row is inactive
    hw (B, Ho)    carried h; cw (B, H) carried c (LSTM); rows not active at a step keep theirs
    wp, comp, sw  a packed int8 weight (``int8_gemm.pack``), 128 Σ_k w, its row scales (float32)
    xu (·, Kp)    quantized rows + 128 (uint8, the u8 side of vpdpbusd); sx their scales
    acc (·, Np)   int32 sums of ``qgemm``
    n = sizes[t]  rows [0, n) are active at time t; lo, hi: this call's rows (threads.split_rows)
    isa           the instruction set of ``qgemm``, a token (``int8_gemm.token``)

The quantization (``quant_row``) compiles without ``arcp``, as a function of its own: h / s must be
a true division, as in the reference, or a rounding tie would go the other way. The loops compile
with the fused engine's flags (``common.JIT``): with exact divisions their activations (a
division each) ran at 4.5 ns a unit, 3x slower. Vectorisation: LLVM vectorises a loop over numba arrays
only after runtime checks that the arrays it writes do not overlap the others, and gives up past
8 such checks (it then ran the LSTM's gate loop scalar, 3x slower per step). So each product is
first dequantized into G's row in a loop of its own (``_deq``: writes one array, reads three),
and the gate loops read that row, the state and one output; and max |v| is an integer maximum
over the float's bits with the sign cleared (a float max reduction needs ``nnan`` to vectorise,
which the kernels must not assume). The LSTM's gate pass runs 16 units a call in LLVM IR
(``int8_lanes.lstm_cell``: LLVM vectorised the numba loop on 8 lanes only), with the same results.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .common import JIT, sigmoid, tanh
from .int8_gemm import UNITS, qgemm
from .int8_lanes import lstm_cell
from .int8_team import barrier

JIT8 = dict(nogil=True, cache=True, error_model="numpy", fastmath={"nsz", "contract"})  # exact /
_F32 = np.float32
ROW_TILE = 64  # rows of the input projection at once (two AMX chunks; 5-15% faster than 32, as 128)


@intrinsic
def _float_of_bits(typingctx, bits):
    """The float32 whose bit pattern is the low 32 bits of the integer ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        low = builder.trunc(args[0], ir.IntType(32)) if bits.bitwidth > 32 else args[0]
        return builder.bitcast(low, ir.FloatType())
    return types.float32(bits), codegen


@numba.njit(**JIT8)
def quant_row(v, xu):
    """xu[:n] = round_half_even(v / s) + 128 with s = max|v| / 127 (1 for a zero row); returns s."""
    bits = v.view(np.int32)  # |v| ordered as its bits with the sign cleared (non-negative floats)
    mb = np.int32(0)
    for j in range(v.shape[0]):
        mb = max(mb, bits[j] & np.int32(0x7FFFFFFF))
    m = _float_of_bits(mb)
    s = m / _F32(127.0) if m > _F32(0.0) else _F32(1.0)
    for j in range(v.shape[0]):
        q = min(max(np.rint(v[j] / s), _F32(-127.0)), _F32(127.0))
        xu[j] = np.uint8(np.int32(q) + 128)
    return s


@numba.njit(**JIT)
def project(X, wp, comp, sw, bias, G, xu, sx, acc, lo, hi, isa):
    """G[r] = (Σ_k q_r,k w_j,k) · s_r · s_w[j] + bias[j] for rows r in [lo, hi) of X (R, I);
    ``ROW_TILE`` rows at a time (xu, sx, acc hold one tile). (Unit groups outermost, each over
    all rows, to keep a group's weights in L2, measured 1.2-3x slower.)"""
    N = G.shape[1]
    for r0 in range(lo, hi, ROW_TILE):
        r1 = min(r0 + ROW_TILE, hi)
        for r in range(r0, r1):
            sx[r - r0] = quant_row(X[r], xu[r - r0])
        qgemm(xu, 0, r1 - r0, wp, acc, isa)
        for r in range(r0, r1):
            a, g, s = acc[r - r0], G[r], sx[r - r0]
            for j in range(N):
                g[j] = _F32(np.int32(a[j] - comp[j])) * s * sw[j] + bias[j]


@numba.njit(**JIT8)
def _quant_rows(h, xu, sx, lo, n):
    for b in range(lo, n):
        sx[b] = quant_row(h[b], xu[b])


@numba.njit(inline="always", **JIT)
def _deq(g, a, comp, s, sw):
    """g[j] += (a[j] − comp[j]) · s · sw[j] for j < len(g): the exact sum, then float32."""
    for j in range(g.shape[0]):
        g[j] += _F32(np.int32(a[j] - comp[j])) * s * sw[j]


@numba.njit(**JIT)
def lstm(G, Y, hw, cw, sizes, reverse, wp, comp, sw, rp, rcomp, rs, xu, sx, acc, hv, pu, pacc,
         lo, hi, isa):
    """LSTM steps (cells.lstm_cell): a = G[t] + W_hh·h (int8), gates i|f|g|o,
    c' = f c + i g, h' = o tanh c'; with a projection (rp non-empty) h' = W_hr·(o tanh c') on the
    row-quantized o tanh c' (kept in hv (B, H); pu, pacc its u8 rows and sums)."""
    T = G.shape[0]
    Ho = hw.shape[1]
    proj = rp.shape[0] > 0
    for k in range(T):
        t = T - 1 - k if reverse else k
        n = min(sizes[t], hi)
        if n > lo:
            _quant_rows(hw, xu, sx, lo, n)
            qgemm(xu, lo, n, wp, acc, isa)
            for b in range(lo, n):
                _deq(G[t, b], acc[b], comp, sx[b], sw)
                if proj:
                    lstm_cell(G[t, b], cw[b], hv[b], hv[b])
                else:
                    lstm_cell(G[t, b], cw[b], hw[b], Y[t, b])
            if proj:
                _quant_rows(hv, pu, sx, lo, n)
                qgemm(pu, lo, n, rp, pacc, isa)
                for b in range(lo, n):
                    h, y, a, s = hw[b], Y[t, b], pacc[b], sx[b]
                    for j in range(Ho):
                        h[j] = _F32(np.int32(a[j] - rcomp[j])) * s * rs[j]
                        y[j] = h[j]
        if n < hi:  # inactive rows output zeros
            Y[t, max(lo, n):hi] = _F32(0.0)


@numba.njit(**JIT)
def lstm_units(G, Y, hb, cw, sizes, reverse, wp, comp, sw, units, blocks, xu, sx, acc, lo, hi,
               p0, p1, sync, isa):
    """LSTM steps as ``lstm`` (no projection), on gate rows in parts of hidden units
    (``int8.pack``): part p, units [u0, u1) = [units[p], units[p + 1]), holds its gates i|f|g|o
    side by side, in G[t, b, 4·u0 : 4·u1] and in W_hh's packed blocks [blocks[p], blocks[p + 1])
    (comp, sw in the same row order). Runs rows [lo, hi) and parts [p0, p1). h lives in hb
    (2, B, H): step k reads hb[k % 2] and writes hb[1 − k % 2] (rows inactive at a step copy
    theirs across). With ``sync`` non-empty this call is one of two halves (its part p0,
    p1 = p0 + 1, all rows) that meet after every step (``int8_team.barrier``), so each reads the
    h the other wrote."""
    T = G.shape[0]
    U0, U1 = units[p0], units[p1]
    for k in range(T):
        t = T - 1 - k if reverse else k
        cur, nxt = hb[k % 2], hb[1 - k % 2]
        n = min(sizes[t], hi)
        if n > lo:
            _quant_rows(cur, xu, sx, lo, n)
            for i in range(p0, p1):
                # odd steps take the parts backwards: one thread's first part is then the one it
                # streamed last, still partly in its L2
                p = i if k % 2 == 0 else p0 + p1 - 1 - i
                u0, u1, c0 = units[p], units[p + 1], blocks[p] * UNITS
                qgemm(xu, lo, n, wp[blocks[p]:blocks[p + 1]], acc, isa)
                for b in range(lo, n):
                    g = G[t, b, 4 * u0:4 * u1]
                    _deq(g, acc[b], comp[c0:], sx[b], sw[c0:])
                    lstm_cell(g, cw[b, u0:u1], nxt[b, u0:u1], Y[t, b, u0:u1])
        for b in range(max(lo, n), hi):  # inactive rows keep their h and output zeros
            nxt[b, U0:U1] = cur[b, U0:U1]
            Y[t, b, U0:U1] = _F32(0.0)
        if sync.shape[0]:
            barrier(sync, p0, k + 1)


@numba.njit(**JIT)
def gru(G, Y, hw, sizes, reverse, reset_after, wp, comp, sw, bn, np2, comp2, sw2, xu, sx, acc,
        ru, acc2, lo, hi, isa):
    """GRU steps (cells.gru_cell). reset_after: v = W_hh·h (int8, all 3H rows), r = σ(u_r + v_r),
    z = σ(u_z + v_z), n = tanh(u_n + r (v_n + b_hn)) (bn = b_hn). Cho form: the product with the
    r, z rows (wp), then r ⊙ h quantized per row (ru) times the n rows (np2), n = tanh(u_n +
    W_hn·(r ⊙ h) + b_hn) (b_hn already in G). Both: h' = (1 − z) n + z h."""
    T = G.shape[0]
    H = hw.shape[1]
    one = _F32(1.0)
    for k in range(T):
        t = T - 1 - k if reverse else k
        n = min(sizes[t], hi)
        if n > lo:
            _quant_rows(hw, xu, sx, lo, n)
            qgemm(xu, lo, n, wp, acc, isa)
            for b in range(lo, n):
                g, a, s, h, y = G[t, b], acc[b], sx[b], hw[b], Y[t, b]
                _deq(g[: 2 * H], a, comp, s, sw)
                if reset_after:  # y holds v_n + b_hn until h' is known
                    for j in range(H):
                        y[j] = bn[j]
                    _deq(y, a[2 * H:], comp[2 * H:], s, sw[2 * H:])
                    for j in range(H):
                        r = sigmoid(g[j])
                        z = sigmoid(g[H + j])
                        c = tanh(g[2 * H + j] + r * y[j])
                        h[j] = (one - z) * c + z * h[j]
                        y[j] = h[j]
                else:  # y holds r ⊙ h, and G's z rows z, until the second product
                    for j in range(H):
                        g[H + j] = sigmoid(g[H + j])
                        y[j] = sigmoid(g[j]) * h[j]
            if not reset_after:
                _quant_rows(Y[t], ru, sx, lo, n)
                qgemm(ru, lo, n, np2, acc2, isa)
                for b in range(lo, n):
                    g, h, y = G[t, b], hw[b], Y[t, b]
                    _deq(g[2 * H:], acc2[b], comp2, sx[b], sw2)
                    for j in range(H):
                        c = tanh(g[2 * H + j])
                        z = g[H + j]
                        h[j] = (one - z) * c + z * h[j]
                        y[j] = h[j]
        if n < hi:  # inactive rows output zeros
            Y[t, max(lo, n):hi] = _F32(0.0)


@numba.njit(**JIT)
def rnn(G, Y, hw, sizes, reverse, relu, wp, comp, sw, xu, sx, acc, lo, hi, isa):
    """Elman steps (cells.rnn_cell): h' = φ(G[t] + W_hh·h), φ = relu or tanh."""
    T = G.shape[0]
    H = hw.shape[1]
    zero = _F32(0.0)
    for k in range(T):
        t = T - 1 - k if reverse else k
        n = min(sizes[t], hi)
        if n > lo:
            _quant_rows(hw, xu, sx, lo, n)
            qgemm(xu, lo, n, wp, acc, isa)
            for b in range(lo, n):
                g, h, y = G[t, b], hw[b], Y[t, b]
                _deq(g, acc[b], comp, sx[b], sw)
                if relu:
                    for j in range(H):
                        h[j] = max(g[j], zero)
                        y[j] = h[j]
                else:
                    for j in range(H):
                        h[j] = tanh(g[j])
                        y[j] = h[j]
        if n < hi:
            Y[t, max(lo, n):hi] = zero
