"""The LSTM time loop in numba: the forward pass and, next to it, its hand-derived backward.

The equations are ``gatedrnn.equations.cells.lstm_cell``. The input projection ``W_ih x + b`` of every step
arrives precomputed in ``G`` (one large GEMM outside, see ``lstm.py``); each step adds the recurrent
product with one ``gemm`` (with num_heads, one per head and gate) into ``G[t]`` and then activates
the gates in place in one pass, so no step allocates. Variants are switched on by the shapes of
their arrays (a size-0 array means "off"), which keeps one compiled specialisation per dtype.

Legend (kernel-local short names):
    T, B, H, Ho   steps, batch, hidden, output size (Ho = proj_size or H); GH = 4H
    G  (T, B, 4H) in: W_ih x_t + b; out: activated gates i | f | g | o
    hw, cw        working state (B, Ho), (B, H): rows not active at a step keep their value,
                  which is exactly the carried state of finished / not yet started rows
    Y  (T, B, Ho) outputs, zero where inactive;  C (T, B, H) carried cell per step (training only)
    CH (T, B, H)  c' before cell zoneout (only with zoneout_c; otherwise C is used)
    wp            W_hh packed for MKL's packed GEMM (packed.pack_weight, dense W_hh only; then
                  the step's product runs packed.packed_prod), or the gemv pair of one or two
                  rows (pair.packed_rows), or size 0 or omitted
    wpt           backward: W_hh^T packed for gemv (pair.packed_rows_t, one or two rows), or
                  omitted; the product packed.step_prod_t gives the same bits either way
    w_hh (nh, 4d, d)  the recurrent weight per head, d = H / nh (heads.as_heads; the dense
                  (4H, Ho) one arrives as the single head (1, 4H, Ho)); the product runs per head
                  and gate on views of G's gate-major rows (heads.headwise_prod), so everything
                  after it is the same for every nh
    P  (3, H)     peepholes P_i, P_f, P_o;  m (B, Ho) recurrent dropout mask (already / (1 - p))
    zh, zc        zoneout keep-weights d: (T, B, ·) masks, or shape (1, 1, 1) holding p (evaluation)
    lnh (2, 4H), lnc (2, H)  layer-norm gain and bias of W_hh h and of c'
    XH (T, B, 4H), XC (T, B, H), RS (T, B, 2)  normalised values and 1/std saved for backward
    n = sizes[t]  rows [0, n) are active at time t
    lo, hi        this call runs rows [lo, hi) only (rows are independent; see threads.split_rows)
"""

from __future__ import annotations

import numba

# sigmoid and tanh are inlined from common (saturating exactly where torch's do), the recurrent
# products from heads and packed; numba's cache is keyed on this file, so an edit to them must
# touch this file too.
from .common import JIT, layer_norm_row, layer_norm_row_bwd, prod, sigmoid, tanh
from .heads import headwise_prod
from .packed import has_packed, packed_or_none, step_prod, step_prod_t


@numba.njit(inline="always", **JIT)
def _zone_row(z, t, b):
    """Zoneout keep-weights of row b at step t: the mask row, or the evaluation-mode p (1 value)."""
    if z.shape[0] == 1 and z.shape[1] == 1 and z.shape[2] == 1:
        return z[0, 0]
    return z[t, b]


@numba.njit(**JIT)
def forward(G, hw, cw, Y, C, CH, sizes, reverse, keep, w_hh, w_hr, P, m, zh, zc,
            lnh, lnc, XH, XC, RS, eps, work, hm, hh, vec, lo, hi, scratch, wp=None):
    """Run all steps; see the module legend. ``keep`` stores C (and CH, XH, XC, RS) for backward.

    One step (cells.lstm_cell): a = G[t] + W_hh (m ⊙ h)   [LN_h(W_hh (m ⊙ h)) with layer norm]
        i = σ(a_i + P_i c), f = σ(a_f + P_f c), g = tanh(a_g), c' = f c + i g,
        o = σ(a_o + P_o c'), r = o tanh(c' or LN_c(c')), ĥ = r or W_hr r,
        h = d_h h + (1 − d_h) ĥ, c = d_c c + (1 − d_c) c'   (zoneout)
    """
    T, B, GH = G.shape
    H = cw.shape[1]
    Ho = hw.shape[1]
    wpk = packed_or_none(wp)  # callers that predate the packed path pass none
    peep, mask, proj = P.shape[0] > 0, m.shape[0] > 0, w_hr.shape[0] > 0
    use_zh, use_zc, ln_h, ln_c = zh.shape[0] > 0, zc.shape[0] > 0, lnh.shape[0] > 0, lnc.shape[0] > 0
    plain = not (peep or use_zc or ln_c)  # the gate pass without variants (see the step)
    # Work buffers come from the caller: numba's own np.empty inside this function made the
    # gate loop 5x slower (measured; LLVM then did not vectorise it).
    hm = hm if mask else hw  # (B, Ho) m ⊙ h, the recurrent GEMM's input
    hh = hh if ln_h else G[0]  # (B, 4H) W_hh h before its layer norm
    cc, r = work[0], work[1]  # (B, H) c' before zoneout; o ⊙ tanh(c') before projection
    nop, xc = vec[0], vec[1]  # (H,) zeros read in place of absent peepholes; LN_c scratch
    one = G.dtype.type(1.0)
    zh_full = zh.size > 1
    zc_full = zc.size > 1
    for k in range(T):
        t = T - 1 - k if reverse else k
        n = min(sizes[t], hi)  # this call's active rows are [lo, n)
        g = G[t]
        if mask:
            for b in range(lo, n):
                for j in range(Ho):
                    hm[b, j] = hw[b, j] * m[b, j]
        if ln_h:
            if has_packed(wpk):
                step_prod(hm[lo:n], wpk, w_hh[0], hh[lo:n], 0.0, scratch)
            else:
                headwise_prod(hm[lo:n], w_hh, hh[lo:n], 0, 4, H, 0.0, scratch)
            for b in range(lo, n):
                xh = XH[t, b] if keep else hh[b]  # without keep, normalise in place
                RS[t if keep else 0, b, 0] = layer_norm_row(hh[b], lnh[0], lnh[1], xh, g[b], True, eps)
        elif has_packed(wpk):  # the same product on the packed W_hh (packed.pack_weight)
            step_prod(hm[lo:n], wpk, w_hh[0], g[lo:n], 1.0, scratch)
        else:
            headwise_prod(hm[lo:n], w_hh, g[lo:n], 0, 4, H, 1.0, scratch)  # G[t] += (m ⊙ h) W_hh^T
        for b in range(lo if plain else n, n):
            # The plain cell in three loops of one array each (the activations, in place), then
            # c' and r: 1.6x faster than the general loop below (measured at (B, H) = (32, 128),
            # 11 against 18 µs a step; that loop reads and writes many arrays, probably more than
            # LLVM's run-time alias checks cover). c' is written ig·gg + fg·c in this order: LLVM
            # then contracts it to the FMA the general loop uses (fg·c + ig·gg here gave other
            # bits), and the results equal the general loop's to the bit (checked on float32 and
            # float64, H from 1 to 256, with and without keep).
            row = g[b]
            head = row[:2 * H]
            for j in range(2 * H):
                head[j] = sigmoid(head[j])
            mid = row[2 * H:3 * H]
            for j in range(H):
                mid[j] = tanh(mid[j])
            tail = row[3 * H:]
            for j in range(H):
                tail[j] = sigmoid(tail[j])
            ai, af, ag, ao = row[:H], row[H:2 * H], mid, tail
            cp, rb = cw[b], r[b]
            for j in range(H):
                c = ai[j] * ag[j] + af[j] * cp[j]
                cp[j] = c
                rb[j] = ao[j] * tanh(c)
            if keep:
                C[t, b] = cp
        for b in range(n if plain else lo, n):
            # One 1-D view per gate: LLVM vectorises a[j], a[H + j] badly (it cannot prove the
            # offsets apart), and views of a row make the loop 6x faster.
            row = g[b]
            ai, af, ag, ao = row[:H], row[H:2 * H], row[2 * H:3 * H], row[3 * H:]
            cp, rb = cw[b], r[b]
            # Vectorising needs LLVM's runtime alias checks to pass: an array written in the hot
            # loop must never be the same memory as another one it reads (hence cb, not cp, and
            # an untouched stand-in for absent peepholes), else it silently runs scalar, 7x slower.
            cb = cc[b]
            Pi, Pf, Po = (P[0], P[1], P[2]) if peep else (nop, nop, nop)
            for j in range(H):
                xi = ai[j]
                xf = af[j]
                if peep:
                    xi += Pi[j] * cp[j]
                    xf += Pf[j] * cp[j]
                ig = sigmoid(xi)
                fg = sigmoid(xf)
                gg = tanh(ag[j])
                c = fg * cp[j] + ig * gg  # c'
                xo = ao[j]
                if peep:
                    xo += Po[j] * c
                og = sigmoid(xo)
                ai[j] = ig
                af[j] = fg
                ag[j] = gg
                ao[j] = og
                cb[j] = c
                if not ln_c:
                    rb[j] = og * tanh(c)
            if use_zc:  # c = d c + (1 − d) c'
                zr = _zone_row(zc, t, b)
                if keep:
                    CH[t, b] = cb
                for j in range(H):
                    d = zr[j] if zc_full else zr[0]
                    cp[j] = d * cp[j] + (one - d) * cb[j]
            else:
                cp[:] = cb
            if keep:
                C[t, b] = cp
            if ln_c:
                xcb = XC[t, b] if keep else xc
                RS[t if keep else 0, b, 1] = layer_norm_row(cb, lnc[0], lnc[1], xcb, rb, False, eps)
                for j in range(H):
                    rb[j] = ao[j] * tanh(rb[j])
        if proj:
            prod(r[lo:n], w_hr, Y[t, lo:n], True, 0.0, scratch)  # ĥ = r W_hr^T
        else:
            Y[t, lo:n] = r[lo:n]
        for b in range(lo, n):
            yb, hb = Y[t, b], hw[b]
            if use_zh:
                zr = _zone_row(zh, t, b)
                for j in range(Ho):
                    d = zr[j] if zh_full else zr[0]
                    yb[j] = d * hb[j] + (one - d) * yb[j]
            hb[:] = yb


@numba.njit(**JIT)
def backward(G, C, CH, c0, dY, dh, dc, dA, DZ, E, R, sizes, reverse, w_hh, w_hr, P, m, zh, zc,
             lnh, lnc, XH, XC, RS, dP, dlnh, dlnc, work, dr, vec, lo, hi, scratch, wpt=None):
    """BPTT through ``forward``'s steps in reverse order; dh, dc enter as dL/d(final state) and
    leave as dL/d(initial state). Writes dA = dL/da (the gradient of G before activation, zero on
    inactive rows), DZ = dL/d(W_hh h) (DZ is dA without layer norm), E[t] = dL/dĥ (with proj, for
    dW_hr) and R[t] = r (with proj); accumulates dP, dlnh, dlnc.

    Derivatives of one step (δx = dL/dx; d_h, d_c zoneout keep-weights):
        δh_t = dh + dY[t];  δĥ = (1 − d_h) δh_t;  δr = δĥ (proj: δĥ W_hr)
        δo = δr ⊙ tanh(s), s = c' (or LN_c(c'));  δs = δr ⊙ o ⊙ (1 − tanh²s)
        δc' = δs (or LN_c backward) + (1 − d_c) δc_t + P_o ⊙ δa_o
        δa_i = δc' ⊙ g ⊙ i(1 − i),  δa_f = δc' ⊙ c ⊙ f(1 − f),  δa_g = δc' ⊙ i ⊙ (1 − g²),
        δa_o = δo ⊙ o(1 − o)
        δc_{t−1} = δc' ⊙ f + d_c δc_t + P_i ⊙ δa_i + P_f ⊙ δa_f
        δh_{t−1} = m ⊙ (δz W_hh) + d_h δh_t, δz = δa (or LN_h backward of δa)
    """
    T, B, GH = G.shape
    H = c0.shape[1]
    Ho = dh.shape[1]
    peep, mask, proj = P.shape[0] > 0, m.shape[0] > 0, w_hr.shape[0] > 0
    use_zh, use_zc, ln_h, ln_c = zh.shape[0] > 0, zc.shape[0] > 0, lnh.shape[0] > 0, lnc.shape[0] > 0
    # Work buffers from the caller (see forward): (3, B, Ho) and (3, H).
    kept = work[0]  # d_h δh_t
    tmp = work[1] if (mask or use_zh) else dh  # δz W_hh before mask/zoneout
    e = work[2]  # δĥ of this step (E[t] with proj)
    dr = dr if proj else e  # (B, H) δr
    nop, ds, dcp = vec[0], vec[1], vec[2]  # zeros read in place of absent variants; LN_c scratch
    one = G.dtype.type(1.0)
    zero = G.dtype.type(0.0)
    zh_full = zh.size > 1
    zc_full = zc.size > 1
    wptk = packed_or_none(wpt)  # W_hh^T packed for gemv (pair.packed_rows_t), or size 0
    for k in range(T):
        t = k if reverse else T - 1 - k
        n = min(sizes[t], hi)  # this call's active rows are [lo, n)
        tp = t + 1 if reverse else t - 1  # the step before t in the forward order
        n_prev = sizes[tp] if 0 <= tp < T else 0
        ee = E[t] if proj else e
        for b in range(lo, n):
            eb, dhb, dyb = ee[b], dh[b], dY[t, b]
            if use_zh:
                zr, kb = _zone_row(zh, t, b), kept[b]
                for j in range(Ho):
                    d = zr[j] if zh_full else zr[0]
                    v = dhb[j] + dyb[j]
                    kb[j] = d * v
                    eb[j] = (one - d) * v
            else:
                for j in range(Ho):
                    eb[j] = dhb[j] + dyb[j]
        if proj:
            prod(ee[lo:n], w_hr, dr[lo:n], False, 0.0, scratch)  # δr = δĥ W_hr
        for b in range(lo, n):
            row, drow = G[t, b], dA[t, b]
            ig_, fg_, gg_, og_ = row[:H], row[H:2 * H], row[2 * H:3 * H], row[3 * H:]
            dai_, daf_, dag_, dao_ = drow[:H], drow[H:2 * H], drow[2 * H:3 * H], drow[3 * H:]
            cp = C[tp, b] if b < n_prev else c0[b]  # rows starting here come from c0
            ch = CH[t, b] if use_zc else C[t, b]
            drb, dcb = dr[b], dc[b]
            zr = _zone_row(zc, t, b) if use_zc else nop
            Pi, Pf, Po = (P[0], P[1], P[2]) if peep else (nop, nop, nop)
            if ln_c:
                xcb = XC[t, b]
                for j in range(H):
                    th = tanh(xcb[j] * lnc[0, j] + lnc[1, j])
                    og = og_[j]
                    dcp[j] = drb[j] * og * (one - th * th)
                    dao_[j] = drb[j] * th * og * (one - og)
                layer_norm_row_bwd(dcp, xcb, RS[t, b, 1], lnc[0], ds, dlnc[0], dlnc[1])
            # The hot loop writes only dA's row and dc (see the aliasing note in forward).
            for j in range(H):
                ig = ig_[j]
                fg = fg_[j]
                gg = gg_[j]
                og = og_[j]
                # Both sources are loaded unconditionally and then selected: a load inside the
                # branch kept this loop scalar (2.5x slower). Without LN_c, dA's row and ds hold
                # scratch that is read and discarded.
                ln_dao = dao_[j]
                ln_dcn = ds[j]
                th = tanh(ch[j])
                dao = ln_dao if ln_c else drb[j] * th * og * (one - og)
                dcn = ln_dcn if ln_c else drb[j] * og * (one - th * th)
                dct = dcb[j]
                if use_zc:
                    d = zr[j] if zc_full else zr[0]
                    dcn += (one - d) * dct
                    dct = d * dct  # the part that skips the step
                else:
                    dcn += dct
                    dct = zero
                if peep:
                    dcn += Po[j] * dao
                dai = dcn * gg * ig * (one - ig)
                daf = dcn * cp[j] * fg * (one - fg)
                dag = dcn * ig * (one - gg * gg)
                dcprev = dcn * fg + dct
                if peep:
                    dcprev += Pi[j] * dai + Pf[j] * daf
                dai_[j] = dai
                daf_[j] = daf
                dag_[j] = dag
                dao_[j] = dao
                dcb[j] = dcprev
            if peep:
                for j in range(H):
                    dP[0, j] += dai_[j] * cp[j]
                    dP[1, j] += daf_[j] * cp[j]
                    dP[2, j] += dao_[j] * ch[j]
            if proj:  # r = o ⊙ tanh(s), kept for dW_hr = Σ δĥ^T r
                Rb = R[t, b]
                for j in range(H):
                    s = XC[t, b, j] * lnc[0, j] + lnc[1, j] if ln_c else ch[j]
                    Rb[j] = og_[j] * tanh(s)
            if ln_h:
                layer_norm_row_bwd(drow, XH[t, b], RS[t, b, 0], lnh[0], DZ[t, b], dlnh[0], dlnh[1])
        dA[t, max(lo, n):hi] = 0.0
        if ln_h:
            DZ[t, max(lo, n):hi] = 0.0
        step_prod_t(DZ[t, lo:n], wptk, w_hh, tmp[lo:n], 0, 4, H, 0.0, scratch)  # δz W_hh
        if mask or use_zh:
            for b in range(lo, n):
                dhb, tb = dh[b], tmp[b]
                if mask:
                    tb *= m[b]
                if use_zh:
                    tb += kept[b]
                dhb[:] = tb
