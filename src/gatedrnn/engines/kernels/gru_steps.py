"""The GRU time loop in numba: the forward pass and, next to it, its hand-derived backward.

The equations are ``gatedrnn.equations.cells.gru_cell``, in both forms. The input projection
u = W_ih x + b of every step arrives precomputed in ``G`` (one large GEMM outside, see ``gru.py``);
each step runs the recurrent GEMM(s) (with num_heads, one per head and gate) through
``common.gemm`` into caller-owned buffers and then one fused pass over the gate math, which
overwrites ``G[t]`` with the activated gates r | z | n. No step allocates. Variants are switched
on by the shapes of their arrays (a size-0 array means "off"), which keeps one compiled
specialisation per dtype.

Legend (kernel-local short names):
    T, B, H       steps, batch, hidden size; rows of G are 3H wide, in the order r | z | n
    G  (T, B, 3H) in: u = W_ih x + b (see gru.py for which biases are folded in); out: r | z | n
    hw (B, H)     working state: rows not active at a step keep their value, which is exactly the
                  carried state of finished / not yet started rows
    Y  (T, B, H)  outputs (= the carried state after each step), zero where inactive
    VN (T, B, H)  reset_after: v_n = [W_hh (m ⊙ h)]_n + b_hn (after LN_h), kept for backward
    Q  (T, B, H)  reset_after=False: q = r ⊙ (m ⊙ h), the input of the candidate's GEMM (for dW_hn)
    wp            W_hh packed for MKL's packed GEMM (packed.pack_weight; reset_after, dense W_hh
                  only; then the product runs packed.packed_prod), or the gemv pair of one or
                  two rows (pair.packed_rows), or size 0 or omitted
    wpt           backward, reset_after: W_hh^T packed for gemv (pair.packed_rows_t, one or two
                  rows), or omitted; the product packed.step_prod_t gives the same bits either way
    w_hh (nh, 3d, d)  the recurrent weight per head, d = H / nh (heads.as_heads; the dense (3H, H)
                  one arrives as the single head (1, 3H, H)); rows per gate r | z | n. Each
                  product takes a range of gates (W_hrz: gates 0-1, W_hn: gate 2) and runs per
                  head and gate on views of the gate-major rows (heads.headwise_prod), so
                  everything after it is the same for every nh
    bn (H,)       reset_after without layer norm: b_hn (zeros without bias)
    m  (B, H)     recurrent dropout mask (already / (1 − p));  ones (H,) stands in when absent
    zh (T, B, H)  zoneout keep masks d (training), or size 0;  zp (H,) filled with p (evaluation)
    lnh (2, 3H)   gain and shift of LN_h (the shift already includes b_hh); XH (T, B, 3H) the
                  normalised W_hh (m ⊙ h) and RS (T, B) its 1/std, kept for backward
    n = sizes[t]  rows [0, n) are active at time t
    lo, hi        this call runs rows [lo, hi) only (rows are independent; see threads.split_rows)

Vectorisation (see the notes in ``lstm_steps``): each gate gets its own 1-D row view, the hot
loops never write an array they also read at another offset, every buffer comes from the
caller, and variant values are loaded unconditionally from stand-in arrays (``ones``, ``zp``)
rather than inside a branch.
"""

from __future__ import annotations

import numba

# sigmoid and tanh are inlined from common (saturating exactly where torch's do),
# the recurrent products from heads and packed; numba's cache is keyed on this file, so an edit to them must
# touch this file too.
from .common import JIT, layer_norm_row, layer_norm_row_bwd, sigmoid, tanh
from .heads import headwise_prod, headwise_prod_t
from .packed import has_packed, packed_or_none, step_prod, step_prod_t


@numba.njit(**JIT)
def forward(G, hw, Y, VN, Q, XH, RS, sizes, reverse, keep, reset_after, w_hh, bn,
            m, ones, zh, zp, lnh, eps, V, hm, work, lo, hi, scratch, wp=None):
    """Run all steps; see the module legend. ``keep`` stores VN or Q (and XH, RS) for backward.

    One step (cells.gru_cell), with u = G[t] and h̃ = m ⊙ h:
      reset_after:  v = W_hh h̃ (+ LN_h), r = σ(u_r + v_r), z = σ(u_z + v_z),
                    n = tanh(u_n + r ⊙ (v_n + b_hn))
      otherwise:    r = σ(u_r + W_hr h̃), z = σ(u_z + W_hz h̃), q = r ⊙ h̃, n = tanh(u_n + W_hn q)
      ĥ = (1 − z) ⊙ n + z ⊙ h;  h' = d ⊙ h + (1 − d) ⊙ ĥ  (zoneout; d = 0 when off)
    Scratch from the caller: V (B, 3H) (reset_after) or (B, 2H); hm (B, H) when masked;
    work (2, B, H).
    """
    T, B, GH = G.shape
    H = hw.shape[1]
    wpk = packed_or_none(wp)  # callers that predate the packed path pass none
    mask, use_zh, ln = m.shape[0] > 0, zh.shape[0] > 0 or zp.shape[0] > 0, lnh.shape[0] > 0
    zh_full = zh.shape[0] > 0
    hm = hm if mask else hw  # (B, H) m ⊙ h, the recurrent GEMM's input
    one = G.dtype.type(1.0)
    for k in range(T):
        t = T - 1 - k if reverse else k
        n = min(sizes[t], hi)  # this call's active rows are [lo, n)
        g = G[t]
        if mask:
            for b in range(lo, n):
                hmb, hb, mb = hm[b], hw[b], m[b]
                for j in range(H):
                    hmb[j] = hb[j] * mb[j]
        if reset_after:
            if has_packed(wpk):  # the same product on the packed W_hh (packed.pack_weight)
                step_prod(hm[lo:n], wpk, w_hh[0], V[lo:n], 0.0, scratch)
            else:
                headwise_prod(hm[lo:n], w_hh, V[lo:n], 0, 3, H, 0.0, scratch)  # v = h̃ W_hh^T
            for b in range(lo, n):
                vb = V[b]
                if ln:  # v = LN_h(v) in place; XH keeps the normalised values
                    xh = XH[t, b] if keep else work[1, b]
                    RS[t if keep else 0, b] = layer_norm_row(vb, lnh[0], lnh[1], xh, vb, False, eps)
                row = g[b]
                ur, uz, un = row[:H], row[H:2 * H], row[2 * H:]
                vr, vz, vn = vb[:H], vb[H:2 * H], vb[2 * H:]
                vo = VN[t, b] if keep else work[0, b]
                hp, yb = hw[b], Y[t, b]
                zr = zh[t, b] if zh_full else zp
                for j in range(H):
                    r = sigmoid(ur[j] + vr[j])
                    z = sigmoid(uz[j] + vz[j])
                    a = vn[j] + bn[j]
                    c = tanh(un[j] + r * a)
                    h = hp[j]
                    y = (one - z) * c + z * h
                    if use_zh:
                        d = zr[j]
                        y = d * h + (one - d) * y
                    ur[j] = r
                    uz[j] = z
                    un[j] = c
                    vo[j] = a
                    yb[j] = y
                    hp[j] = y
        else:
            headwise_prod(hm[lo:n], w_hh, V[lo:n], 0, 2, H, 0.0, scratch)  # [v_r | v_z] = h̃ W_hrz^T
            qq = Q[t] if keep else work[0]
            for b in range(lo, n):
                row, vb = g[b], V[b]
                ur, uz = row[:H], row[H:2 * H]
                vr, vz = vb[:H], vb[H:]
                qb, hmb = qq[b], hm[b]
                for j in range(H):
                    r = sigmoid(ur[j] + vr[j])
                    ur[j] = r
                    uz[j] = sigmoid(uz[j] + vz[j])
                    qb[j] = r * hmb[j]
            vq = work[1]
            headwise_prod(qq[lo:n], w_hh, vq[lo:n], 2, 3, H, 0.0, scratch)  # W_hn q
            for b in range(lo, n):
                row = g[b]
                zs, un = row[H:2 * H], row[2 * H:]
                vb, hp, yb = vq[b], hw[b], Y[t, b]
                zr = zh[t, b] if zh_full else zp
                for j in range(H):
                    c = tanh(un[j] + vb[j])
                    z = zs[j]
                    h = hp[j]
                    y = (one - z) * c + z * h
                    if use_zh:
                        d = zr[j]
                        y = d * h + (one - d) * y
                    un[j] = c
                    yb[j] = y
                    hp[j] = y


@numba.njit(**JIT)
def backward(G, VN, Q, Y, h0, dY, dh, DU, DZ, sizes, reverse, reset_after, w_hh,
             m, ones, zh, zp, lnh, XH, RS, dlnh, dv, work, lo, hi, scratch, wpt=None):
    """BPTT through ``forward``'s steps in reverse order; dh enters as dL/dh_T and leaves as
    dL/dh0. Writes DU = dL/du (zero on inactive rows) and, for reset_after, DZ: with layer norm
    (T, B, 3H) dL/d(W_hh h̃), the gradient of the recurrent GEMM's output; without, only its n third
    (T, B, H) δv_n = δu_n ⊙ r, since its r and z thirds equal DU's (this saves 2·T·B·H of peak
    memory). Accumulates dlnh (gain, shift of LN_h).

    Derivatives of one step (δx = dL/dx; d zoneout keep-weights, h = h_{t−1}, h̃ = m ⊙ h):
        s = δh + dY[t];  δĥ = (1 − d) s;  δh ← d s + z ⊙ δĥ + m ⊙ δh̃
        δu_z = δĥ ⊙ (h − n) ⊙ z(1 − z);  δu_n = δĥ ⊙ (1 − z) ⊙ (1 − n²)
      reset_after (v = W_hh h̃ [LN_h] + b_hh, n = tanh(u_n + r ⊙ v_n)):
        δu_r = δu_n ⊙ v_n ⊙ r(1 − r);  δv = [δu_r, δu_z, δu_n ⊙ r]
        δ(W_hh h̃) = δv (or LN_h backward of δv);  δh̃ = δ(W_hh h̃) W_hh
      reset_after=False (n = tanh(u_n + W_hn q + b_hn), q = r ⊙ h̃):
        δq = δu_n W_hn;  δu_r = δq ⊙ h̃ ⊙ r(1 − r);  δh̃ = δq ⊙ r + [δu_r, δu_z] W_hrz
    Weight gradients are GEMMs over all steps afterwards (gru.py): dW_ih = DU^T x; dW_hh =
    [DU_r, DU_z, DZ]^T h̃_prev (reset_after; DZ^T h̃_prev with layer norm), or dW_hrz = DU_rz^T
    h̃_prev and dW_hn = DU_n^T Q.
    Scratch from the caller: dv (B, 3H) (reset_after: δv, dense for the GEMM) or (B, 2H)
    (otherwise: a dense copy of [δu_r, δu_z] for the GEMM); work (3, B, H).
    """
    T, B, GH = G.shape
    H = dh.shape[1]
    mask, use_zh, ln = m.shape[0] > 0, zh.shape[0] > 0 or zp.shape[0] > 0, lnh.shape[0] > 0
    zh_full = zh.shape[0] > 0
    one = G.dtype.type(1.0)
    zero = G.dtype.type(0.0)
    tmp = work[0]  # δh̃ before the mask
    dn = work[1]  # reset_after=False: δu_n, contiguous for the GEMM
    dq = work[2]  # reset_after=False: δq
    wptk = packed_or_none(wpt)  # reset_after: W_hh^T packed for gemv (pair.packed_rows_t), or size 0
    for k in range(T):
        t = k if reverse else T - 1 - k
        n = min(sizes[t], hi)  # this call's active rows are [lo, n)
        tp = t + 1 if reverse else t - 1  # the step before t in the forward order
        n_prev = sizes[tp] if 0 <= tp < T else 0
        if reset_after:
            for b in range(lo, n):
                row, du = G[t, b], DU[t, b]
                rs, zs, cs = row[:H], row[H:2 * H], row[2 * H:]
                dur, duz, dun = du[:H], du[H:2 * H], du[2 * H:]
                dvb = dv[b]  # δv, the gradient of v (before LN_h's backward)
                dvr, dvz, dvn = dvb[:H], dvb[H:2 * H], dvb[2 * H:]
                hp = Y[tp, b] if b < n_prev else h0[b]  # rows starting here come from h0
                vn, dhb, dyb = VN[t, b], dh[b], dY[t, b]
                zr = zh[t, b] if zh_full else zp
                for j in range(H):
                    s = dhb[j] + dyb[j]
                    e = s
                    kept = zero
                    if use_zh:
                        d = zr[j]
                        e = (one - d) * s
                        kept = d * s
                    r = rs[j]
                    z = zs[j]
                    c = cs[j]
                    duz_ = e * (hp[j] - c) * z * (one - z)
                    dun_ = e * (one - z) * (one - c * c)
                    dur_ = dun_ * vn[j] * r * (one - r)
                    dur[j] = dur_
                    duz[j] = duz_
                    dun[j] = dun_
                    dvr[j] = dur_
                    dvz[j] = duz_
                    dvn[j] = dun_ * r
                    dhb[j] = e * z + kept
                if ln:
                    layer_norm_row_bwd(dvb, XH[t, b], RS[t, b], lnh[0], DZ[t, b], dlnh[0], dlnh[1])
                else:
                    DZ[t, b] = dvn  # δv_r, δv_z equal δu_r, δu_z: only the n third is kept
            DU[t, max(lo, n):hi] = 0.0
            DZ[t, max(lo, n):hi] = 0.0
            src = DZ[t] if ln else dv  # δ(W_hh h̃), dense (rows, 3H)
            if mask:
                step_prod_t(src[lo:n], wptk, w_hh, tmp[lo:n], 0, 3, H, 0.0, scratch)  # δh̃
                for b in range(lo, n):
                    dhb, tb, mb = dh[b], tmp[b], m[b]
                    for j in range(H):
                        dhb[j] += mb[j] * tb[j]
            else:
                step_prod_t(src[lo:n], wptk, w_hh, dh[lo:n], 0, 3, H, 1.0, scratch)  # δh += δh̃
        else:
            for b in range(lo, n):
                row, du = G[t, b], DU[t, b]
                zs, cs = row[H:2 * H], row[2 * H:]
                duz, dun = du[H:2 * H], du[2 * H:]
                hp = Y[tp, b] if b < n_prev else h0[b]
                dhb, dyb, dnb = dh[b], dY[t, b], dn[b]
                zr = zh[t, b] if zh_full else zp
                for j in range(H):
                    s = dhb[j] + dyb[j]
                    e = s
                    kept = zero
                    if use_zh:
                        d = zr[j]
                        e = (one - d) * s
                        kept = d * s
                    z = zs[j]
                    c = cs[j]
                    duz[j] = e * (hp[j] - c) * z * (one - z)
                    dun_ = e * (one - z) * (one - c * c)
                    dun[j] = dun_
                    dnb[j] = dun_
                    dhb[j] = e * z + kept
            headwise_prod_t(dn[lo:n], w_hh, dq[lo:n], 2, 3, H, 0.0, scratch)  # δq = δu_n W_hn
            for b in range(lo, n):
                row, du, drz = G[t, b], DU[t, b], dv[b]
                rs, dur = row[:H], du[:H]
                drr, drz_z, duz = drz[:H], drz[H:], du[H:2 * H]
                hp = Y[tp, b] if b < n_prev else h0[b]
                mb = m[b] if mask else ones
                dqb, tb = dq[b], tmp[b]
                for j in range(H):
                    r = rs[j]
                    dr = dqb[j] * hp[j] * mb[j] * r * (one - r)
                    dur[j] = dr
                    drr[j] = dr
                    drz_z[j] = duz[j]
                    tb[j] = dqb[j] * r
            DU[t, max(lo, n):hi] = 0.0
            headwise_prod_t(dv[lo:n], w_hh, tmp[lo:n], 0, 2, H, 1.0, scratch)  # δh̃ += δu_rz W_hrz
            for b in range(lo, n):
                dhb, tb = dh[b], tmp[b]
                mb = m[b] if mask else ones
                for j in range(H):
                    dhb[j] += mb[j] * tb[j]
