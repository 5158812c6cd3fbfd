"""Head-wise GRU (torch.nn's form, without layer norm) as one persistent kernel per direction.

As ``lstm_heads``: one program per (head, block of BB rows) keeps its R_j (3d × d) in registers
and loops over all T steps, three ``tl.dot`` per step; zoneout and the recurrent dropout mask come
along. Layer norm (across all heads of a row), Cho's form (its candidate's product needs r first,
which is fine per head, but is left to the alternating form for now) and heads of other sizes
than 16, 32 or 64 units run the alternating form of ``gru.py``.

The backward kernel walks the steps in reverse with ``pointwise.gru_gates_back``;
dR = Σ_t δvᵀ (m ⊙ h_{t−1}) and db_hh = Σ_t δv after it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import common as cm
from .pointwise import gru_gates, gru_gates_back

BB = cm.HEAD_ROWS


def usable(w_hh: Tensor, layer_norm: bool, reset_after: bool) -> bool:
    """Whether the persistent kernels take this call: head-wise, d ∈ {16, 32, 64}, reset_after,
    no layer norm."""
    return (w_hh.dim() == 3 and w_hh.shape[-1] in (16, 32, 64) and not layer_norm
            and reset_after)


@triton.jit
def _loop(U, R, BH, h, Y, A, HP, VN, HM, M, ZH, SIZES, T, B, H, HAS_BH: tl.constexpr,
          MASK: tl.constexpr, ZONE_H: tl.constexpr, REVERSE: tl.constexpr, PREC: tl.constexpr,
          D: tl.constexpr, BB: tl.constexpr):
    """All steps of head j for rows [BB·p, BB·(p + 1)): U (T, B, 3H) = x W_ih^T + b_ih,
    R (nh, 3d, d), BH (3H,) b_hh; h (B, H) read once and written once; saves the gates
    A (T, B, 3H), h before the step HP, v_n VN and the product's input HM (T, B, H)."""
    j = tl.program_id(0)
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    e = tl.arange(0, D)
    mk = (rows < B)[:, None] & (e < D)[None, :]  # (BB, D)
    rt = j * 3 * D * D + e[None, :] * D + e[:, None]  # R_{j,g}ᵀ[f, e] = R[j, g·d + e, f]
    rt_r = tl.load(R + rt)
    rt_z = tl.load(R + rt + D * D)
    rt_n = tl.load(R + rt + 2 * D * D)
    st = rows[:, None] * H + j * D + e[None, :]
    hh = tl.load(h + st, mask=mk, other=0.0)
    mm = hh * 0.0 + 1.0
    if MASK:
        mm = tl.load(M + st, mask=mk, other=0.0)
    b_r = hh * 0.0
    b_z = b_r
    b_n = b_r
    if HAS_BH:
        u = j * D + e[None, :] + rows[:, None] * 0  # (BB, d): the head's units in every row
        b_r = tl.load(BH + u)
        b_z = tl.load(BH + H + u)
        b_n = tl.load(BH + 2 * H + u)
    for k in range(T):
        if REVERSE:
            t = T - 1 - k
        else:
            t = k
        act = (rows < tl.load(SIZES + t))[:, None] & mk
        g3 = (t * B + rows)[:, None] * (3 * H) + j * D + e[None, :]
        s3 = (t * B + rows)[:, None] * H + j * D + e[None, :]
        hin = hh * mm
        v_r = tl.dot(hin, rt_r, input_precision=PREC) + b_r
        v_z = tl.dot(hin, rt_z, input_precision=PREC) + b_z
        v_n = tl.dot(hin, rt_n, input_precision=PREC) + b_n
        rg, zg, ng, hn = gru_gates(tl.load(U + g3, mask=act, other=0.0),
                                     tl.load(U + g3 + H, mask=act, other=0.0),
                                     tl.load(U + g3 + 2 * H, mask=act, other=0.0), v_r, v_z, v_n, hh)
        if ZONE_H:  # h = d h + (1 − d) h'
            d = tl.load(ZH + s3, mask=act, other=0.0)
            hn = d * hh + (1.0 - d) * hn
        tl.store(A + g3, rg, mask=act)
        tl.store(A + g3 + H, zg, mask=act)
        tl.store(A + g3 + 2 * H, ng, mask=act)
        tl.store(HP + s3, hh, mask=act)
        tl.store(VN + s3, v_n, mask=act)
        tl.store(HM + s3, hin, mask=act)
        tl.store(Y + s3, hn, mask=act)
        hh = tl.where(act, hn, hh)  # rows not active keep their state
    tl.store(h + st, hh, mask=mk)


@triton.jit
def _loop_back(R, A, HP, VN, DY, dh, DU, DV, M, ZH, SIZES, T, B, H, MASK: tl.constexpr,
               ZONE_H: tl.constexpr, REVERSE: tl.constexpr, PREC: tl.constexpr, D: tl.constexpr,
               BB: tl.constexpr):
    """BPTT of ``_loop`` for head j and its rows: dh (B, H) enters as dL/dh_n and leaves as
    dL/dh_0; DU (T, B, 3H) gets dL/du, DV dL/dv (= dL/d(R (m ⊙ h)) = dL/db_hh per step)."""
    j = tl.program_id(0)
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    e = tl.arange(0, D)
    mk = (rows < B)[:, None] & (e < D)[None, :]
    rr = j * 3 * D * D + e[:, None] * D + e[None, :]  # R_{j,g}[e, f]
    r_r = tl.load(R + rr)
    r_z = tl.load(R + rr + D * D)
    r_n = tl.load(R + rr + 2 * D * D)
    st = rows[:, None] * H + j * D + e[None, :]
    gh = tl.load(dh + st, mask=mk, other=0.0)
    mm = gh * 0.0 + 1.0
    if MASK:
        mm = tl.load(M + st, mask=mk, other=0.0)
    for k in range(T):
        if REVERSE:
            t = k
        else:
            t = T - 1 - k
        act = (rows < tl.load(SIZES + t))[:, None] & mk
        g3 = (t * B + rows)[:, None] * (3 * H) + j * D + e[None, :]
        s3 = (t * B + rows)[:, None] * H + j * D + e[None, :]
        dht = gh + tl.load(DY + s3, mask=act, other=0.0)
        kept = dht * 0.0
        if ZONE_H:
            d = tl.load(ZH + s3, mask=act, other=0.0)
            kept = d * dht
            dht = (1.0 - d) * dht
        dar, daz, dan, dvn, dhz = gru_gates_back(
            dht, tl.load(A + g3, mask=act, other=0.0), tl.load(A + g3 + H, mask=act, other=0.0),
            tl.load(A + g3 + 2 * H, mask=act, other=0.0), tl.load(HP + s3, mask=act, other=0.0),
            tl.load(VN + s3, mask=act, other=0.0))
        dar = tl.where(act, dar, 0.0)
        daz = tl.where(act, daz, 0.0)
        dan = tl.where(act, dan, 0.0)
        dvn = tl.where(act, dvn, 0.0)
        tl.store(DU + g3, dar, mask=act)
        tl.store(DU + g3 + H, daz, mask=act)
        tl.store(DU + g3 + 2 * H, dan, mask=act)
        tl.store(DV + g3, dar, mask=act)
        tl.store(DV + g3 + H, daz, mask=act)
        tl.store(DV + g3 + 2 * H, dvn, mask=act)
        back = (tl.dot(dar, r_r, input_precision=PREC) + tl.dot(daz, r_z, input_precision=PREC)
                + tl.dot(dvn, r_n, input_precision=PREC))
        gh = tl.where(act, kept + dhz + back * mm, gh)
    tl.store(dh + st, gh, mask=mk)


class HeadsLoop(cm.Loop):
    """``gru._Loop`` as two launches, for ``usable`` calls: inputs (U, w_hh, h0, b_hh, None,
    None); outs (y, h_n); the gates in ``gates`` for recording."""

    def __init__(self, sizes: list[int], reverse: bool, m: Tensor | None,
                 zh: Tensor | None) -> None:
        self.sizes, self.reverse, self.m, self.zh = sizes, reverse, m, zh
        self.gates: Tensor | None = None

    def _flags(self, d: int) -> dict:
        return dict(MASK=self.m is not None, ZONE_H=self.zh is not None, REVERSE=self.reverse,
                    PREC=cm.dot_precision(), D=d, BB=BB, **cm.head_launch(d))

    def _extras(self, like: Tensor) -> tuple:
        sizes = torch.tensor(self.sizes, dtype=torch.int32, device=like.device)
        return tuple(like if v is None else v for v in (self.m, self.zh)) + (sizes,)

    def forward(self, U, w_hh, h0, b_hh, *no_layer_norm):
        T, B, GH = U.shape
        H = GH // 3
        h = h0.detach().clone().contiguous()
        Y, HP, VN, HM = (cm.zeros(T, B, H, like=U) for _ in range(4))
        A = cm.zeros(T, B, GH, like=U)
        R = w_hh.detach().contiguous()
        nh, _, d = R.shape
        _loop[(nh, triton.cdiv(B, BB))](U, R, U if b_hh is None else b_hh, h, Y, A, HP, VN, HM,
                                       *self._extras(U), T, B, H, HAS_BH=b_hh is not None,
                                       **self._flags(d))
        self.gates = A
        return (Y, h), (w_hh, A, HP, VN, HM)

    def backward(self, saved, grads):
        w_hh, A, HP, VN, HM = saved
        dY, dhn = grads
        T, B, H = HP.shape
        dY = torch.zeros_like(HP) if dY is None else dY.contiguous()
        dh = torch.zeros_like(HP[0]) if dhn is None else dhn.contiguous().clone()
        DU, DV = torch.zeros_like(A), torch.zeros_like(A)
        R = w_hh.detach().contiguous()
        nh, _, d = R.shape
        _loop_back[(nh, triton.cdiv(B, BB))](R, A, HP, VN, dY, dh, DU, DV, *self._extras(A), T, B,
                                            H, **self._flags(d))
        return DU, cm.rec_weight_grad(DV, HM, w_hh), dh, DV.sum((0, 1)), None, None
