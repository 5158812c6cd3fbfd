"""The GRU on Triton, in both forms: one direction of one layer, forward and hand-derived backward.

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, (h_n,), gates)

The contract is ``gatedrnn.equations.reference.run``; the equations are
``gatedrnn.equations.cells.gru_cell``. As in
``lstm.py``: u = x W_ih^T + b_ih (or LN_x(x W_ih^T) + b_ih) for all steps as torch ops before the
loop; per step torch GEMMs for the recurrent products and Triton programs, one per active row, for
everything pointwise; backward in reverse with the same split, and dR as one GEMM after the loop.

- reset_after=True (torch.nn's form): one product v = R (m ⊙ h) and one kernel per step
  (``_step_after``), LN_h and b_hh inside it (b_hh cannot join u: r multiplies v_n + b_hn).
- reset_after=False (Cho et al.): the candidate's product reads r ⊙ (m ⊙ h), so a step is two
  products and two kernels (``_step_rz``, then ``_step_n``); all biases join u.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from . import common as cm
from . import gru_heads
from .common import sigmoid, tanh
from .pointwise import gru_gates, gru_gates_back


@triton.jit
def _zoned(hn, hp, ZH, r, mk, ZONE_H: tl.constexpr):
    """Zoneout: d h + (1 − d) h'."""
    if ZONE_H:
        d = tl.load(ZH + r, mask=mk)
        hn = d * hp + (1.0 - d) * hn
    return hn


@triton.jit
def _step_after(U, Z, BH, h, HIN, M, HM, Y, A, HP, VN, XH, RS, LHW, LHB, ZH, H, eps,
                MASK: tl.constexpr, HAS_BH: tl.constexpr, LN: tl.constexpr, ZONE_H: tl.constexpr,
                BLOCK: tl.constexpr):
    """One reset_after=True step of row b. U, Z (B, 3H): u and R (m ⊙ h); h (B, H) updated in
    place; HIN (B, H) the product's input m ⊙ h (h itself without a mask), saved to HM and set
    to m ⊙ h' for the next step (as the LSTM's ``_step``). Writes Y, the gates A (B, 3H), h before
    the step HP and v_n = LN_h(z)_n + b_hn VN (B, H); with LN the normalised XH (B, 3H) and
    1/std RS (B,)."""
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK)
    mk = j < H
    g = b * 3 * H + j
    r = b * H + j
    tl.store(HM + r, tl.load(HIN + r, mask=mk), mask=mk)
    v_r = tl.load(Z + g, mask=mk, other=0.0)
    v_z = tl.load(Z + g + H, mask=mk, other=0.0)
    v_n = tl.load(Z + g + 2 * H, mask=mk, other=0.0)
    if LN:  # LN_h over the row of 3H
        mean = (tl.sum(v_r, 0) + tl.sum(v_z, 0) + tl.sum(v_n, 0)) / (3 * H)
        d_r = tl.where(mk, v_r - mean, 0.0)
        d_z = tl.where(mk, v_z - mean, 0.0)
        d_n = tl.where(mk, v_n - mean, 0.0)
        rstd = 1.0 / tl.sqrt((tl.sum(d_r * d_r, 0) + tl.sum(d_z * d_z, 0) + tl.sum(d_n * d_n, 0))
                             / (3 * H) + eps)
        tl.store(XH + g, d_r * rstd, mask=mk)
        tl.store(XH + g + H, d_z * rstd, mask=mk)
        tl.store(XH + g + 2 * H, d_n * rstd, mask=mk)
        tl.store(RS + b, rstd)
        v_r = d_r * rstd * tl.load(LHW + j, mask=mk) + tl.load(LHB + j, mask=mk)
        v_z = d_z * rstd * tl.load(LHW + H + j, mask=mk) + tl.load(LHB + H + j, mask=mk)
        v_n = d_n * rstd * tl.load(LHW + 2 * H + j, mask=mk) + tl.load(LHB + 2 * H + j, mask=mk)
    if HAS_BH:
        v_r += tl.load(BH + j, mask=mk)
        v_z += tl.load(BH + H + j, mask=mk)
        v_n += tl.load(BH + 2 * H + j, mask=mk)
    hp = tl.load(h + r, mask=mk)
    rg, zg, ng, hn = gru_gates(tl.load(U + g, mask=mk), tl.load(U + g + H, mask=mk),
                                 tl.load(U + g + 2 * H, mask=mk), v_r, v_z, v_n, hp)
    hn = _zoned(hn, hp, ZH, r, mk, ZONE_H)
    tl.store(A + g, rg, mask=mk)
    tl.store(A + g + H, zg, mask=mk)
    tl.store(A + g + 2 * H, ng, mask=mk)
    tl.store(HP + r, hp, mask=mk)
    tl.store(VN + r, v_n, mask=mk)
    tl.store(Y + r, hn, mask=mk)
    tl.store(h + r, hn, mask=mk)
    if MASK:
        tl.store(HIN + r, hn * tl.load(M + r, mask=mk), mask=mk)


@triton.jit
def _step_after_back(A, HP, VN, XH, RS, DY, dh, BACK, M, DU, DV, DZ, LHW, ZH, H,
                     MASK: tl.constexpr, LN: tl.constexpr, ZONE_H: tl.constexpr,
                     BLOCK: tl.constexpr):
    """The derivatives of ``_step_after``: dh + m ⊙ BACK in = dL/dh' (BACK: the row's pending
    dz R, as the LSTM's ``_step_back``), dh out = its part that skips the product; DU = dL/du,
    DV = dL/dv (v after LN and b_hh), DZ = dL/dz (LN_h backward of DV)::

        δh = dh + m ⊙ BACK + dY;  δĥ = (1 − d) δh;  δa_z = δĥ (h − n) z(1 − z);  δa_n = δĥ (1 − z)(1 − n²)
        δa_r = δa_n v_n r(1 − r);  δv = (δa_r, δa_z, r δa_n);  δh_{t−1} ⊇ d δh + z δĥ
    """
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK)
    mk = j < H
    g = b * 3 * H + j
    r = b * H + j
    rg = tl.load(A + g, mask=mk, other=0.0)
    zg = tl.load(A + g + H, mask=mk, other=0.0)
    ng = tl.load(A + g + 2 * H, mask=mk, other=0.0)
    hp = tl.load(HP + r, mask=mk, other=0.0)
    back = tl.load(BACK + r, mask=mk, other=0.0)
    if MASK:
        back = back * tl.load(M + r, mask=mk, other=0.0)
    gh = tl.load(dh + r, mask=mk, other=0.0) + tl.load(DY + r, mask=mk, other=0.0) + back
    e = gh
    kept = gh * 0.0
    if ZONE_H:
        d = tl.load(ZH + r, mask=mk, other=0.0)
        kept = d * gh
        e = (1.0 - d) * gh
    dar, daz, dan, dvn, dhz = gru_gates_back(e, rg, zg, ng, hp, tl.load(VN + r, mask=mk, other=0.0))
    tl.store(DU + g, dar, mask=mk)
    tl.store(DU + g + H, daz, mask=mk)
    tl.store(DU + g + 2 * H, dan, mask=mk)
    tl.store(DV + g, dar, mask=mk)
    tl.store(DV + g + H, daz, mask=mk)
    tl.store(DV + g + 2 * H, dvn, mask=mk)
    tl.store(dh + r, kept + dhz, mask=mk)
    if LN:
        x_r = tl.load(XH + g, mask=mk, other=0.0)
        x_z = tl.load(XH + g + H, mask=mk, other=0.0)
        x_n = tl.load(XH + g + 2 * H, mask=mk, other=0.0)
        w_r = dar * tl.load(LHW + j, mask=mk, other=0.0)
        w_z = daz * tl.load(LHW + H + j, mask=mk, other=0.0)
        w_n = dvn * tl.load(LHW + 2 * H + j, mask=mk, other=0.0)
        mv = (tl.sum(w_r, 0) + tl.sum(w_z, 0) + tl.sum(w_n, 0)) / (3 * H)
        mvx = (tl.sum(w_r * x_r, 0) + tl.sum(w_z * x_z, 0) + tl.sum(w_n * x_n, 0)) / (3 * H)
        rstd = tl.load(RS + b)
        tl.store(DZ + g, rstd * (w_r - mv - x_r * mvx), mask=mk)
        tl.store(DZ + g + H, rstd * (w_z - mv - x_z * mvx), mask=mk)
        tl.store(DZ + g + 2 * H, rstd * (w_n - mv - x_n * mvx), mask=mk)


@triton.jit
def _step_rz(U, Z, HM, A, RH, H, BLOCK: tl.constexpr):
    """Cho's first half for row b: r = σ(u_r + z_r), z = σ(u_z + z_z) from Z (B, 2H) = R_rz (m ⊙ h);
    writes them to A (B, 3H) and r ⊙ (m ⊙ h) to RH (B, H), the candidate product's input."""
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK)
    mk = j < H
    g = b * 3 * H + j
    rg = sigmoid(tl.load(U + g, mask=mk) + tl.load(Z + b * 2 * H + j, mask=mk))
    zg = sigmoid(tl.load(U + g + H, mask=mk) + tl.load(Z + b * 2 * H + H + j, mask=mk))
    tl.store(A + g, rg, mask=mk)
    tl.store(A + g + H, zg, mask=mk)
    tl.store(RH + b * H + j, rg * tl.load(HM + b * H + j, mask=mk), mask=mk)


@triton.jit
def _step_n(U, Z, h, Y, A, HP, ZH, H, ZONE_H: tl.constexpr, BLOCK: tl.constexpr):
    """Cho's second half for row b: n = tanh(u_n + z) from Z (B, H) = R_n (r ⊙ m ⊙ h), then
    h' = (1 − z) n + z h and zoneout; h (B, H) updated in place, HP keeps h before the step."""
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK)
    mk = j < H
    g = b * 3 * H + j
    r = b * H + j
    ng = tanh(tl.load(U + g + 2 * H, mask=mk) + tl.load(Z + r, mask=mk))
    zg = tl.load(A + g + H, mask=mk)
    hp = tl.load(h + r, mask=mk)
    hn = _zoned((1.0 - zg) * ng + zg * hp, hp, ZH, r, mk, ZONE_H)
    tl.store(A + g + 2 * H, ng, mask=mk)
    tl.store(HP + r, hp, mask=mk)
    tl.store(Y + r, hn, mask=mk)
    tl.store(h + r, hn, mask=mk)


@triton.jit
def _step_n_back(A, HP, DY, dh, DU, ZH, H, ZONE_H: tl.constexpr, BLOCK: tl.constexpr):
    """Backward of ``_step_n``: δa_z, δa_n into DU (B, 3H); dh out = d δh + z δĥ."""
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK)
    mk = j < H
    g = b * 3 * H + j
    r = b * H + j
    zg = tl.load(A + g + H, mask=mk, other=0.0)
    ng = tl.load(A + g + 2 * H, mask=mk, other=0.0)
    gh = tl.load(dh + r, mask=mk, other=0.0) + tl.load(DY + r, mask=mk, other=0.0)
    e = gh
    kept = gh * 0.0
    if ZONE_H:
        d = tl.load(ZH + r, mask=mk, other=0.0)
        kept = d * gh
        e = (1.0 - d) * gh
    tl.store(DU + g + H, e * (tl.load(HP + r, mask=mk, other=0.0) - ng) * zg * (1.0 - zg),
             mask=mk)
    tl.store(DU + g + 2 * H, e * (1.0 - zg) * (1.0 - ng * ng), mask=mk)
    tl.store(dh + r, kept + e * zg, mask=mk)


@triton.jit
def _step_rz_back(A, HM, DRH, DU, DHM, H, BLOCK: tl.constexpr):
    """Backward of ``_step_rz`` given DRH = dL/d(r ⊙ m ⊙ h) (B, H): δa_r into DU, and the part of
    dL/d(m ⊙ h) that comes through the candidate, r ⊙ DRH, into DHM."""
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK)
    mk = j < H
    rg = tl.load(A + b * 3 * H + j, mask=mk, other=0.0)
    drh = tl.load(DRH + b * H + j, mask=mk, other=0.0)
    hm = tl.load(HM + b * H + j, mask=mk, other=0.0)
    tl.store(DU + b * 3 * H + j, drh * hm * rg * (1.0 - rg), mask=mk)
    tl.store(DHM + b * H + j, drh * rg, mask=mk)


class _Loop(cm.Loop):
    """inputs (U, w_hh, h0, b_hh, ln_h_w, ln_h_b); outs (y, h_n). b_hh and LN only with
    reset_after (Cho's biases are in U)."""

    def __init__(self, sizes: list[int], reverse: bool, m: Tensor | None, zh: Tensor | None,
                 eps: float, ln: bool, after: bool) -> None:
        self.sizes, self.reverse, self.m, self.zh = sizes, reverse, m, zh
        self.eps, self.ln, self.after = eps, ln, after
        self.gates: Tensor | None = None

    def _masked(self, h: Tensor, out: Tensor, n: int) -> Tensor:
        torch.mul(h[:n], self.m[:n], out=out) if self.m is not None else out.copy_(h[:n])
        return out

    def forward(self, U, w_hh, h0, b_hh, lhw, lhb):
        T, B, GH = U.shape
        H = GH // 3
        h = h0.detach().clone().contiguous()
        Y, HP, HM, RH = (cm.zeros(T, B, H, like=U) for _ in range(4))
        A = cm.zeros(T, B, GH, like=U)
        VN = cm.zeros(T, B, H, like=U) if self.after else U
        XH, RS = (cm.zeros(T, B, GH, like=U), cm.zeros(T, B, like=U)) if self.ln else (U, U)
        zh = self.zh
        w_rz, w_n = cm.cells.gate_rows(w_hh, 0, 2), cm.cells.gate_rows(w_hh, 2, 3)
        m = self.m
        hin = h if m is None else h * m  # (B, H) the products' input, kept by _step_after
        for t in cm.order(T, self.reverse):
            n = self.sizes[t]
            if n == 0:
                continue
            Zh = U if zh is None else zh[t]
            if self.after:
                z = cm.rec_product(hin[:n], w_hh).contiguous()  # (n, 3H)
                _step_after[(n,)](U[t], z, U if b_hh is None else b_hh, h, hin,
                                  U if m is None else m, HM[t], Y[t], A[t], HP[t], VN[t], XH[t],
                                  RS[t], U if lhw is None else lhw, U if lhb is None else lhb, Zh,
                                  H, self.eps, MASK=m is not None, HAS_BH=b_hh is not None,
                                  LN=self.ln, ZONE_H=zh is not None, **cm.row_launch(H))
            else:
                hm = self._masked(h, HM[t, :n], n)
                z = cm.rec_product(hm, w_rz).contiguous()  # (n, 2H)
                _step_rz[(n,)](U[t], z, hm, A[t], RH[t], H, **cm.row_launch(H))
                z = cm.rec_product(RH[t, :n], w_n).contiguous()  # (n, H)
                _step_n[(n,)](U[t], z, h, Y[t], A[t], HP[t], Zh, H, ZONE_H=zh is not None,
                              **cm.row_launch(H))
        self.gates = A
        return (Y, h), (w_hh, lhw, A, HP, HM, RH, VN, XH, RS)

    def backward(self, saved, grads):
        w_hh, lhw, A, HP, HM, RH, VN, XH, RS = saved
        dY, dhn = grads
        T, B, H = HP.shape
        dY = torch.zeros_like(HP) if dY is None else dY.contiguous()
        dh = torch.zeros_like(HP[0]) if dhn is None else dhn.contiguous().clone()
        DU = torch.zeros_like(A)
        DV = torch.zeros_like(A) if self.after else DU
        DZ = torch.zeros_like(A) if self.ln else DV
        zh = self.zh
        w_rz, w_n = cm.cells.gate_rows(w_hh, 0, 2), cm.cells.gate_rows(w_hh, 2, 3)
        m = self.m
        back = torch.zeros_like(dh)  # per row: dz R of its last step done, not yet in dh
        for t in cm.order(T, not self.reverse):
            n = self.sizes[t]
            if n == 0:
                continue
            Zh = A if zh is None else zh[t]
            if self.after:
                _step_after_back[(n,)](A[t], HP[t], VN[t], XH[t], RS[t], dY[t], dh, back,
                                       A if m is None else m, DU[t], DV[t], DZ[t],
                                       A if lhw is None else lhw, Zh, H, MASK=m is not None,
                                       LN=self.ln, ZONE_H=zh is not None, **cm.row_launch(H))
                cm.product_t(DZ[t, :n], w_hh, back[:n])  # (n, H)
                continue
            _step_n_back[(n,)](A[t], HP[t], dY[t], dh, DU[t], Zh, H, ZONE_H=zh is not None,
                               **cm.row_launch(H))
            drh = cm.rec_product_t(DU[t, :n, 2 * H:], w_n).contiguous()  # (n, H)
            dhm = torch.empty_like(drh)
            _step_rz_back[(n,)](A[t], HM[t], drh, DU[t], dhm, H, **cm.row_launch(H))
            dhm += cm.rec_product_t(DU[t, :n, :2 * H], w_rz)
            dh[:n] += dhm if m is None else dhm * m[:n]
        if self.after:
            dh += back if m is None else back * m
            dw_hh = cm.rec_weight_grad(DZ, HM, w_hh)
        else:
            dw_hh = torch.cat([cm.rec_weight_grad(DU[..., :2 * H], HM, w_rz),
                               cm.rec_weight_grad(DU[..., 2 * H:], RH, w_n)], dim=-2)
        db_hh = DV.sum((0, 1)) if self.after else None
        ln = ((DV * XH).sum((0, 1)), DV.sum((0, 1))) if self.ln else (None, None)
        return DU, dw_hh, dh, db_hh, *ln


def _run(x: Tensor, state: tuple[Tensor, ...], w: Mapping[str, Tensor | None],
         batch_sizes: Tensor | None, reverse: bool, opts: Any,
         masks: Mapping[str, Tensor | None], record: bool):
    """One direction of one GRU layer on the Triton engine (contract: ``gatedrnn.equations.reference.run``).

    Shapes: x (T, B, I); state (h0 (B, H),); w_hh (3H, H) or (nh, 3d, d); returns y (T, B, H),
    (h_n,), and gates reset/update/candidate each (T, B, H) when ``record``.
    """
    (h0,) = state
    T, B = x.shape[0], x.shape[1]
    H, dt = h0.shape[-1], x.dtype
    w_ih, b_ih, b_hh = w["w_ih"], w.get("b_ih"), w.get("b_hh")
    assert w_ih is not None
    after, ln = bool(opts.reset_after), bool(opts.layer_norm)
    if ln and not after:
        raise ValueError("layer_norm needs reset_after=True (as gatedrnn.equations.cells.gru_cell)")
    bias = b_ih
    if not after and b_hh is not None:  # Cho: every bias adds straight to a pre-activation
        bias = b_hh if bias is None else bias + b_hh
    if ln:
        shift = w.get("ln_x_b")
        shift = bias if shift is None else (shift if bias is None else shift + bias)
        U = F.layer_norm(x @ w_ih.t(), (3 * H,), w.get("ln_x_w"), shift, opts.ln_eps)
    else:
        U = x @ w_ih.t() if bias is None else torch.addmm(bias, x.reshape(T * B, -1), w_ih.t())
    U = U.reshape(T, B, 3 * H).contiguous()  # (T, B, 3H)
    m = masks.get("recurrent")
    w_hh = w["w_hh"]
    assert w_hh is not None
    args = (cm.step_sizes(batch_sizes, T, B), bool(reverse), None if m is None else m.to(dt),
            cm.keep_weights(masks.get("zoneout_h"), T, B, H, dt))
    loop: _Loop | gru_heads.HeadsLoop = (gru_heads.HeadsLoop(*args)
                                         if gru_heads.usable(w_hh, ln, after)
                                         else _Loop(*args, float(opts.ln_eps), ln, after))
    loop.inputs = (U, w_hh, h0, b_hh if after else None,
                   w.get("ln_h_w") if ln else None, w.get("ln_h_b") if ln else None)
    originals, keys = cm.originals_of(x, state, w)

    def recompute(*o: Tensor) -> tuple[Tensor, ...]:
        xr, sr, wr = cm.rebuild(o, keys, 1, w)
        y, final, _ = cm.reference.run(xr, sr, wr, batch_sizes, reverse, opts, masks, False)
        return (y, *final)

    loop.recompute = recompute  # type: ignore[method-assign]
    y, hn = cm.launch(loop, x, originals)
    gates = None
    if record:
        assert loop.gates is not None
        A = loop.gates.detach()
        gates = {k: A[..., i * H:(i + 1) * H].clone()
                 for i, k in enumerate(("reset", "update", "candidate"))}
    return y, (hn,), gates


run = cm.dense_run(_run)
