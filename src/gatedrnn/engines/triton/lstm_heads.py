"""Head-wise LSTM without layer norm as one persistent kernel per direction.

As ``slstm_heads``: with num_heads the recurrence is block-diagonal, so one program per (head,
block of BB rows) keeps its R_j (4d × d) in registers and loops over all T steps, four
``tl.dot`` per step, with no other program to wait for. Every variant that acts unit by unit
comes along but the peepholes: zoneout of h and c and the recurrent dropout mask. Layer norm does
not: it normalises across all heads of a row, which one program per head cannot see. Peepholes
could, but their backward crashed LLVM's SLP vectoriser when compiled for sm_90 (triton 3.9;
``tests/triton_compile_check.py`` found it). Those calls, and heads of other sizes than 16, 32
or 64 units, run the alternating form of ``lstm.py``.

The backward kernel walks the steps in reverse with ``pointwise.lstm_gates_back`` and
dL/d(m ⊙ h_{t−1}) = Σ_gates δa_g R_{j,g}; dR = Σ_t δaᵀ (m ⊙ h_{t−1}) is one batched GEMM after it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import common as cm
from .common import tanh
from .pointwise import lstm_gates, lstm_gates_back

BB = cm.HEAD_ROWS


def usable(w_hh: Tensor, layer_norm: bool, peephole: Tensor | None) -> bool:
    """Whether the persistent kernels take this call: head-wise, d ∈ {16, 32, 64}, no layer norm,
    no peepholes."""
    return (w_hh.dim() == 3 and w_hh.shape[-1] in (16, 32, 64) and not layer_norm
            and peephole is None)


@triton.jit
def _loop(G, R, h, c, Y, A, CP, CN, HM, M, ZH, ZC, SIZES, T, B, H, MASK: tl.constexpr,
          ZONE_H: tl.constexpr, ZONE_C: tl.constexpr, REVERSE: tl.constexpr, PREC: tl.constexpr,
          D: tl.constexpr, BB: tl.constexpr):
    """All steps of head j for rows [BB·p, BB·(p + 1)) (``cells.lstm_cell`` without layer norm):
    G (T, B, 4H) the input part, R (nh, 4d, d); h, c (B, H) read once and written once; saves
    the gates A (T, B, 4H), c before the step CP and c' CN (T, B, H), the product's input HM."""
    j = tl.program_id(0)
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    e = tl.arange(0, D)
    mk = (rows < B)[:, None] & (e < D)[None, :]  # (BB, D)
    rt = j * 4 * D * D + e[None, :] * D + e[:, None]  # R_{j,g}ᵀ[f, e] = R[j, g·d + e, f]
    rt_i = tl.load(R + rt)
    rt_f = tl.load(R + rt + D * D)
    rt_g = tl.load(R + rt + 2 * D * D)
    rt_o = tl.load(R + rt + 3 * D * D)
    st = rows[:, None] * H + j * D + e[None, :]
    hh = tl.load(h + st, mask=mk, other=0.0)
    cc = tl.load(c + st, mask=mk, other=0.0)
    mm = hh * 0.0 + 1.0
    if MASK:
        mm = tl.load(M + st, mask=mk, other=0.0)
    for k in range(T):
        if REVERSE:
            t = T - 1 - k
        else:
            t = k
        act = (rows < tl.load(SIZES + t))[:, None] & mk
        g4 = (t * B + rows)[:, None] * (4 * H) + j * D + e[None, :]
        s3 = (t * B + rows)[:, None] * H + j * D + e[None, :]
        hin = hh * mm
        a_i = tl.load(G + g4, mask=act, other=0.0) + tl.dot(hin, rt_i, input_precision=PREC)
        a_f = tl.load(G + g4 + H, mask=act, other=0.0) + tl.dot(hin, rt_f, input_precision=PREC)
        a_g = tl.load(G + g4 + 2 * H, mask=act, other=0.0) + tl.dot(hin, rt_g, input_precision=PREC)
        a_o = tl.load(G + g4 + 3 * H, mask=act, other=0.0) + tl.dot(hin, rt_o, input_precision=PREC)
        ig, fg, gg, og, cn = lstm_gates(a_i, a_f, a_g, a_o, cc, 0.0, 0.0, 0.0, False)
        hn = og * tanh(cn)
        if ZONE_H:  # h = d h + (1 − d) h'
            d = tl.load(ZH + s3, mask=act, other=0.0)
            hn = d * hh + (1.0 - d) * hn
        cw = cn
        if ZONE_C:
            d = tl.load(ZC + s3, mask=act, other=0.0)
            cw = d * cc + (1.0 - d) * cn
        tl.store(A + g4, ig, mask=act)
        tl.store(A + g4 + H, fg, mask=act)
        tl.store(A + g4 + 2 * H, gg, mask=act)
        tl.store(A + g4 + 3 * H, og, mask=act)
        tl.store(CP + s3, cc, mask=act)
        tl.store(CN + s3, cn, mask=act)
        tl.store(HM + s3, hin, mask=act)
        tl.store(Y + s3, hn, mask=act)
        hh = tl.where(act, hn, hh)  # rows not active keep their state
        cc = tl.where(act, cw, cc)
    tl.store(h + st, hh, mask=mk)
    tl.store(c + st, cc, mask=mk)


@triton.jit
def _loop_back(R, A, CP, CN, DY, dh, dc, DA, M, ZH, ZC, SIZES, T, B, H, MASK: tl.constexpr,
               ZONE_H: tl.constexpr, ZONE_C: tl.constexpr, REVERSE: tl.constexpr,
               PREC: tl.constexpr, D: tl.constexpr, BB: tl.constexpr):
    """BPTT of ``_loop`` for head j and its rows: dh, dc (B, H) enter as dL/d(final state) and
    leave as dL/d(initial state); DA (T, B, 4H) gets dL/d(pre-activations). The derivatives are
    ``lstm._step_back``'s without layer norm."""
    j = tl.program_id(0)
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    e = tl.arange(0, D)
    mk = (rows < B)[:, None] & (e < D)[None, :]
    rr = j * 4 * D * D + e[:, None] * D + e[None, :]  # R_{j,g}[e, f]
    r_i = tl.load(R + rr)
    r_f = tl.load(R + rr + D * D)
    r_g = tl.load(R + rr + 2 * D * D)
    r_o = tl.load(R + rr + 3 * D * D)
    st = rows[:, None] * H + j * D + e[None, :]
    gh = tl.load(dh + st, mask=mk, other=0.0)
    gc = tl.load(dc + st, mask=mk, other=0.0)
    mm = gh * 0.0 + 1.0
    if MASK:
        mm = tl.load(M + st, mask=mk, other=0.0)
    for k in range(T):
        if REVERSE:
            t = k
        else:
            t = T - 1 - k
        act = (rows < tl.load(SIZES + t))[:, None] & mk
        g4 = (t * B + rows)[:, None] * (4 * H) + j * D + e[None, :]
        s3 = (t * B + rows)[:, None] * H + j * D + e[None, :]
        ig = tl.load(A + g4, mask=act, other=0.0)
        fg = tl.load(A + g4 + H, mask=act, other=0.0)
        gg = tl.load(A + g4 + 2 * H, mask=act, other=0.0)
        og = tl.load(A + g4 + 3 * H, mask=act, other=0.0)
        cp = tl.load(CP + s3, mask=act, other=0.0)
        cn = tl.load(CN + s3, mask=act, other=0.0)
        dht = gh + tl.load(DY + s3, mask=act, other=0.0)
        kept = dht * 0.0
        if ZONE_H:
            d = tl.load(ZH + s3, mask=act, other=0.0)
            kept = d * dht
            dht = (1.0 - d) * dht
        th = tanh(cn)
        dao = dht * th * og * (1.0 - og)
        dcn = dht * og * (1.0 - th * th)
        dct = gc
        if ZONE_C:
            d = tl.load(ZC + s3, mask=act, other=0.0)
            dcn += (1.0 - d) * dct
            dct = d * dct
        else:
            dcn += dct
            dct = dct * 0.0
        dai, daf, dag, dcprev = lstm_gates_back(dcn, dct, dao, ig, fg, gg, cp, 0.0, 0.0, 0.0, False)
        dai = tl.where(act, dai, 0.0)
        daf = tl.where(act, daf, 0.0)
        dag = tl.where(act, dag, 0.0)
        dao = tl.where(act, dao, 0.0)
        tl.store(DA + g4, dai, mask=act)
        tl.store(DA + g4 + H, daf, mask=act)
        tl.store(DA + g4 + 2 * H, dag, mask=act)
        tl.store(DA + g4 + 3 * H, dao, mask=act)
        back = (tl.dot(dai, r_i, input_precision=PREC) + tl.dot(daf, r_f, input_precision=PREC)
                + tl.dot(dag, r_g, input_precision=PREC) + tl.dot(dao, r_o, input_precision=PREC))
        gh = tl.where(act, kept + back * mm, gh)
        gc = tl.where(act, dcprev, gc)
    tl.store(dh + st, gh, mask=mk)
    tl.store(dc + st, gc, mask=mk)


class HeadsLoop(cm.Loop):
    """``lstm._Loop`` as two launches, for ``usable`` calls: the same inputs (the layer norm ones
    None), outs and recorded buffers."""

    def __init__(self, sizes: list[int], reverse: bool, m: Tensor | None, zh: Tensor | None,
                 zc: Tensor | None) -> None:
        self.sizes, self.reverse, self.m, self.zh, self.zc = sizes, reverse, m, zh, zc
        self.bufs: tuple = ()

    def _flags(self, d: int) -> dict:
        return dict(MASK=self.m is not None, ZONE_H=self.zh is not None,
                    ZONE_C=self.zc is not None, REVERSE=self.reverse, PREC=cm.dot_precision(), D=d,
                    BB=BB, **cm.head_launch(d))

    def _extras(self, like: Tensor) -> tuple:
        sizes = torch.tensor(self.sizes, dtype=torch.int32, device=like.device)
        return tuple(like if v is None else v for v in (self.m, self.zh, self.zc)) + (sizes,)

    def forward(self, G, w_hh, h0, c0, *none):  # (peepholes and layer norm: None)
        T, B, GH = G.shape
        H = GH // 4
        h, c = h0.detach().clone().contiguous(), c0.detach().clone().contiguous()
        Y, CP, CN, HM = (cm.zeros(T, B, H, like=G) for _ in range(4))
        A = cm.zeros(T, B, GH, like=G)
        R = w_hh.detach().contiguous()
        nh, _, d = R.shape
        _loop[(nh, triton.cdiv(B, BB))](G, R, h, c, Y, A, CP, CN, HM, *self._extras(G), T, B, H,
                                       **self._flags(d))
        self.bufs = (A, CP, CN)
        return (Y, h, c), (w_hh, A, CP, CN, HM)

    def backward(self, saved, grads):
        w_hh, A, CP, CN, HM = saved
        dY, dhn, dcn = grads
        T, B, H = CP.shape
        dY = torch.zeros_like(CP) if dY is None else dY.contiguous()
        dh = torch.zeros_like(CP[0]) if dhn is None else dhn.contiguous().clone()
        dc = torch.zeros_like(CP[0]) if dcn is None else dcn.contiguous().clone()
        DA = torch.zeros_like(A)
        R = w_hh.detach().contiguous()
        nh, _, d = R.shape
        _loop_back[(nh, triton.cdiv(B, BB))](R, A, CP, CN, dY, dh, dc, DA, *self._extras(A), T,
                                            B, H, **self._flags(d))
        return (DA, cm.rec_weight_grad(DA, HM, w_hh), dh, dc, None, None, None, None, None)
