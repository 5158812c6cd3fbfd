"""One training step of a cell: the forward that keeps what its backward needs, and that backward.

``kernels.step`` runs a cell's inference step; under autograd a cell call (a decoder stepping an
LSTMCell, say) needs the gradient too, and torch.nn's cell op differentiates about ten separate
ops there (two products, a bias add, a chunk, four activations, the state update), each an autograd
node. Here one forward kernel and one backward kernel do the whole step, so the call is one
autograd node (``engines.step_grad``). As in ``kernels.step`` the kernels take the tensors'
addresses; the caller checks shape, dtype, device and contiguity.

The gradients, derived from ``gatedrnn.equations.cells`` (a the gate pre-activations, dh' and dc'
the incoming gradients, σ' = s(1 − s), tanh' = 1 − t²):

- LSTM (saved: i, f, g, o, tanh(c')):
  dc = dc' + dh' ⊙ o ⊙ (1 − tanh²(c')); da_i = dc ⊙ g ⊙ σ'(i); da_f = dc ⊙ c ⊙ σ'(f);
  da_g = dc ⊙ i ⊙ (1 − g²); da_o = dh' ⊙ tanh(c') ⊙ σ'(o); dc_prev = dc ⊙ f.
- GRU, torch's form (reset_after; saved: r, z, n, W_hn h + b_hn):
  dn = dh' ⊙ (1 − z) ⊙ (1 − n²); da_z = dh' ⊙ (h − n) ⊙ σ'(z);
  da_r = dn ⊙ (W_hn h + b_hn) ⊙ σ'(r); the input side takes (da_r, da_z, dn), the recurrent side
  (da_r, da_z, dn ⊙ r); dh_prev = (recurrent side) W_hh + dh' ⊙ z.
- Elman RNN (saved: h' itself): da = dh' ⊙ (1 − h'²) (tanh) or dh' ⊙ [h' > 0] (relu).

Then, for every cell: dx = du W_ih, dh_prev (+)= dv W_hh, dW_ih = duᵀ x, dW_hh = dvᵀ h,
db_ih = Σ_rows du, db_hh = Σ_rows dv (du = dv = da except in the GRU).

Legend: as ``kernels.step``; s the saved activations (B, K·H); d* gradients, each written whole.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .common import JIT, gemm, prod, sigmoid, tanh
from .step import _biases, _scratch, _view

SAVED = {"lstm": 5, "gru": 4, "rnn_tanh": 0, "rnn_relu": 0}  # K: s is (B, K·H) (0: none)


@numba.njit(inline="always", **JIT)
def _weight_grads(du, dv, x, h, pdwi, pdwh, pdbi, pdbh, G, I, H, like, scratch):
    """dW_ih = duᵀ x, dW_hh = dvᵀ h, db_ih = Σ du, db_hh = Σ dv (each skipped at address 0)."""
    if pdwi != 0:
        gemm(du, x, _view(pdwi, (G, I), like), True, False, 0.0, scratch)
    if pdwh != 0:
        gemm(dv, h, _view(pdwh, (G, H), like), True, False, 0.0, scratch)
    if pdbi != 0:
        dbi, dbh = _view(pdbi, (G,), like), _view(pdbh, (G,), like)
        dbi[:] = 0.0
        dbh[:] = 0.0
        for b in range(du.shape[0]):
            dbi += du[b]
            dbh += dv[b]


@numba.njit(**JIT)
def lstm_forward(like, px, ph, pc, pwi, pwh, pbi, pbh, B, I, H, ph2, pc2, ps):
    """h', c' (B, H) and s = [i, f, g, o, tanh(c')] (B, 5H)."""
    x, h, c = _view(px, (B, I), like), _view(ph, (B, H), like), _view(pc, (B, H), like)
    wi, wh = _view(pwi, (4 * H, I), like), _view(pwh, (4 * H, H), like)
    bi, bh = _biases(pbi, pbh, 4 * H, like)
    h2, c2, s = _view(ph2, (B, H), like), _view(pc2, (B, H), like), _view(ps, (B, 5 * H), like)
    scratch = _scratch(like)
    a = np.empty((B, 4 * H), like.dtype)
    prod(x, wi, a, True, 0.0, scratch)
    prod(h, wh, a, True, 1.0, scratch)
    for b in range(B):
        ab, sb = a[b], s[b]
        for j in range(H):
            i = sigmoid(ab[j] + bi[j] + bh[j])
            f = sigmoid(ab[H + j] + bi[H + j] + bh[H + j])
            g = tanh(ab[2 * H + j] + bi[2 * H + j] + bh[2 * H + j])
            o = sigmoid(ab[3 * H + j] + bi[3 * H + j] + bh[3 * H + j])
            cn = f * c[b, j] + i * g
            tc = tanh(cn)
            sb[j], sb[H + j], sb[2 * H + j], sb[3 * H + j], sb[4 * H + j] = i, f, g, o, tc
            c2[b, j] = cn
            h2[b, j] = o * tc


@numba.njit(**JIT)
def lstm_backward(like, px, ph, pc, pwi, pwh, ps, pdh2, pdc2, B, I, H,
                  pdx, pdh, pdc, pdwi, pdwh, pdbi, pdbh):
    """The gradients of one LSTM step (see the module docstring); dh2 or dc2 at 0: zero."""
    x, h, c = _view(px, (B, I), like), _view(ph, (B, H), like), _view(pc, (B, H), like)
    wi, wh = _view(pwi, (4 * H, I), like), _view(pwh, (4 * H, H), like)
    s = _view(ps, (B, 5 * H), like)
    dc_prev = _view(pdc, (B, H), like)
    one = like.dtype.type(1.0)
    da = np.empty((B, 4 * H), like.dtype)
    for b in range(B):
        sb, db = s[b], da[b]
        dh2 = _view(pdh2, (B, H), like)[b] if pdh2 != 0 else np.zeros(H, like.dtype)
        dc2 = _view(pdc2, (B, H), like)[b] if pdc2 != 0 else np.zeros(H, like.dtype)
        for j in range(H):
            i, f, g, o, tc = sb[j], sb[H + j], sb[2 * H + j], sb[3 * H + j], sb[4 * H + j]
            dc = dc2[j] + dh2[j] * o * (one - tc * tc)
            db[j] = dc * g * i * (one - i)
            db[H + j] = dc * c[b, j] * f * (one - f)
            db[2 * H + j] = dc * i * (one - g * g)
            db[3 * H + j] = dh2[j] * tc * o * (one - o)
            dc_prev[b, j] = dc * f
    scratch = _scratch(like)
    prod(da, wi, _view(pdx, (B, I), like), False, 0.0, scratch)
    prod(da, wh, _view(pdh, (B, H), like), False, 0.0, scratch)
    _weight_grads(da, da, x, h, pdwi, pdwh, pdbi, pdbh, 4 * H, I, H, like, scratch)


@numba.njit(**JIT)
def gru_forward(like, px, ph, pc, pwi, pwh, pbi, pbh, B, I, H, ph2, pc2, ps):
    """h' (B, H) and s = [r, z, n, W_hn h + b_hn] (B, 4H); torch's form (reset_after)."""
    x, h = _view(px, (B, I), like), _view(ph, (B, H), like)
    wi, wh = _view(pwi, (3 * H, I), like), _view(pwh, (3 * H, H), like)
    bi, bh = _biases(pbi, pbh, 3 * H, like)
    h2, s = _view(ph2, (B, H), like), _view(ps, (B, 4 * H), like)
    scratch = _scratch(like)
    u = np.empty((B, 3 * H), like.dtype)
    v = np.empty((B, 3 * H), like.dtype)
    prod(x, wi, u, True, 0.0, scratch)
    prod(h, wh, v, True, 0.0, scratch)
    one = like.dtype.type(1.0)
    for b in range(B):
        sb = s[b]
        for j in range(H):
            r = sigmoid(u[b, j] + bi[j] + v[b, j] + bh[j])
            z = sigmoid(u[b, H + j] + bi[H + j] + v[b, H + j] + bh[H + j])
            vn = v[b, 2 * H + j] + bh[2 * H + j]
            n = tanh(u[b, 2 * H + j] + bi[2 * H + j] + r * vn)
            sb[j], sb[H + j], sb[2 * H + j], sb[3 * H + j] = r, z, n, vn
            h2[b, j] = (one - z) * n + z * h[b, j]


@numba.njit(**JIT)
def gru_backward(like, px, ph, pc, pwi, pwh, ps, pdh2, pdc2, B, I, H,
                 pdx, pdh, pdc, pdwi, pdwh, pdbi, pdbh):
    """The gradients of one GRU step (torch's form; see the module docstring)."""
    x, h = _view(px, (B, I), like), _view(ph, (B, H), like)
    wi, wh = _view(pwi, (3 * H, I), like), _view(pwh, (3 * H, H), like)
    s, dh2 = _view(ps, (B, 4 * H), like), _view(pdh2, (B, H), like)
    dh = _view(pdh, (B, H), like)
    one = like.dtype.type(1.0)
    du = np.empty((B, 3 * H), like.dtype)
    dv = np.empty((B, 3 * H), like.dtype)
    for b in range(B):
        sb = s[b]
        for j in range(H):
            r, z, n, vn = sb[j], sb[H + j], sb[2 * H + j], sb[3 * H + j]
            g = dh2[b, j]
            dn = g * (one - z) * (one - n * n)
            dz = g * (h[b, j] - n) * z * (one - z)
            dr = dn * vn * r * (one - r)
            du[b, j], du[b, H + j], du[b, 2 * H + j] = dr, dz, dn
            dv[b, j], dv[b, H + j], dv[b, 2 * H + j] = dr, dz, dn * r
    scratch = _scratch(like)
    prod(du, wi, _view(pdx, (B, I), like), False, 0.0, scratch)
    prod(dv, wh, dh, False, 0.0, scratch)
    for b in range(B):
        for j in range(H):
            dh[b, j] += dh2[b, j] * s[b, H + j]
    _weight_grads(du, dv, x, h, pdwi, pdwh, pdbi, pdbh, 3 * H, I, H, like, scratch)


@numba.njit(**JIT)
def rnn_backward(like, px, ph, ph2, pwi, pwh, relu, pdh2, pdc2, B, I, H,
                 pdx, pdh, pdc, pdwi, pdwh, pdbi, pdbh):
    """The gradients of one Elman step from h' (at ``ph2``); ``relu`` picks φ."""
    x, h, h2 = _view(px, (B, I), like), _view(ph, (B, H), like), _view(ph2, (B, H), like)
    wi, wh = _view(pwi, (H, I), like), _view(pwh, (H, H), like)
    dh2 = _view(pdh2, (B, H), like)
    one = like.dtype.type(1.0)
    da = np.empty((B, H), like.dtype)
    for b in range(B):
        for j in range(H):
            y = h2[b, j]
            if relu:  # (torch's threshold_backward: a NaN h' passes the gradient on)
                da[b, j] = 0.0 if y <= 0 else dh2[b, j]
            else:
                da[b, j] = dh2[b, j] * (one - y * y)
    scratch = _scratch(like)
    prod(da, wi, _view(pdx, (B, I), like), False, 0.0, scratch)
    prod(da, wh, _view(pdh, (B, H), like), False, 0.0, scratch)
    _weight_grads(da, da, x, h, pdwi, pdwh, pdbi, pdbh, H, I, H, like, scratch)


def backward_kernel(mode: str) -> Any:
    """The backward kernel of a mode; all take the same flat arguments (see ``engines.step_grad``)."""
    return {"lstm": lstm_backward, "gru": gru_backward}.get(mode, rnn_backward)
