"""Head-wise sLSTM as one persistent kernel per direction: the time loop inside the kernel.

With num_heads, the recurrence is block-diagonal: head j's units j·d … (j+1)·d − 1 see only their
own block R_j (4d × d) of the recurrent weight. The heads never exchange anything within a step,
so one program per (head, block of BB rows) can keep R_j in registers, loop over all T steps,
and never meet another program: no grid-wide barrier, which is also why it can be tested in
Triton's interpreter (programs there run one after another). A whole direction is then one
launch forward and one backward, instead of two per step (``slstm._Loop``).

Per step the program computes ĩ, f̃, z̃, õ = G_t + h R_jᵀ with four ``tl.dot`` of (BB, d) × (d, d),
then ``pointwise.slstm_step``; the backward kernel walks the steps in reverse with
``pointwise.slstm_step_back`` and dL/dh_{t−1} = Σ_gates δa_g R_{j,g}. dR = Σ_t δaᵀ h_{t−1} is one
batched GEMM after it.

tl.dot needs d and BB of at least 16 on a GPU, so this runs for d ∈ {16, 32, 64} (``usable``);
other head sizes use the alternating form. d = 64 keeps 4·64·64 weights per program, the size
FlashRNN's fused Triton kernel stops at.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import common as cm
from .pointwise import slstm_step, slstm_step_back

BB = cm.HEAD_ROWS


def usable(w_hh: Tensor) -> bool:
    """Whether the persistent kernels take this recurrent weight: head-wise, d ∈ {16, 32, 64}."""
    return w_hh.dim() == 3 and w_hh.shape[-1] in (16, 32, 64)


@triton.jit
def _loop(G, R, h, c, nrm, m, Y, A, HP, CP, NP, C, N, LF, M, SIZES, T, B, H,
          REVERSE: tl.constexpr, PREC: tl.constexpr, D: tl.constexpr, BB: tl.constexpr):
    """All steps of head j for rows [BB·p, BB·(p + 1)): G (T, B, 4H) the input part, R (nh, 4d, d);
    the state h, c, nrm, m (B, H) is read once and written once; saves as ``slstm._step``."""
    j = tl.program_id(0)
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    e = tl.arange(0, D)
    mk = (rows < B)[:, None] & (e < D)[None, :]  # (BB, D)
    rt = j * 4 * D * D + e[None, :] * D + e[:, None]  # R_{j,g}ᵀ[f, e] = R[j, g·d + e, f]
    rt_i = tl.load(R + rt)
    rt_f = tl.load(R + rt + D * D)
    rt_z = tl.load(R + rt + 2 * D * D)
    rt_o = tl.load(R + rt + 3 * D * D)
    st = rows[:, None] * H + j * D + e[None, :]
    hh = tl.load(h + st, mask=mk, other=0.0)
    cc = tl.load(c + st, mask=mk, other=0.0)
    nn = tl.load(nrm + st, mask=mk, other=1.0)
    mm = tl.load(m + st, mask=mk, other=0.0)
    for k in range(T):
        if REVERSE:
            t = T - 1 - k
        else:
            t = k
        act = (rows < tl.load(SIZES + t))[:, None] & mk
        g4 = (t * B + rows)[:, None] * (4 * H) + j * D + e[None, :]
        s3 = (t * B + rows)[:, None] * H + j * D + e[None, :]
        a_i = tl.load(G + g4, mask=act, other=0.0) + tl.dot(hh, rt_i, input_precision=PREC)
        a_f = tl.load(G + g4 + H, mask=act, other=0.0) + tl.dot(hh, rt_f, input_precision=PREC)
        a_z = tl.load(G + g4 + 2 * H, mask=act, other=0.0) + tl.dot(hh, rt_z, input_precision=PREC)
        a_o = tl.load(G + g4 + 3 * H, mask=act, other=0.0) + tl.dot(hh, rt_o, input_precision=PREC)
        hn, cn, nw, mn, u = slstm_step(a_i, a_f, a_z, a_o, cc, nn, mm)
        tl.store(A + g4, a_i, mask=act)
        tl.store(A + g4 + H, a_f, mask=act)
        tl.store(A + g4 + 2 * H, a_z, mask=act)
        tl.store(A + g4 + 3 * H, a_o, mask=act)
        tl.store(HP + s3, hh, mask=act)
        tl.store(CP + s3, cc, mask=act)
        tl.store(NP + s3, nn, mask=act)
        tl.store(C + s3, cn, mask=act)
        tl.store(N + s3, nw, mask=act)
        tl.store(LF + s3, u, mask=act)
        tl.store(M + s3, mn, mask=act)
        tl.store(Y + s3, hn, mask=act)
        hh = tl.where(act, hn, hh)  # rows not active keep their state
        cc = tl.where(act, cn, cc)
        nn = tl.where(act, nw, nn)
        mm = tl.where(act, mn, mm)
    tl.store(h + st, hh, mask=mk)
    tl.store(c + st, cc, mask=mk)
    tl.store(nrm + st, nn, mask=mk)
    tl.store(m + st, mm, mask=mk)


@triton.jit
def _loop_back(R, A, CP, NP, C, N, LF, DY, dh, dc, dn, dm, DA, SIZES, T, B, H,
               REVERSE: tl.constexpr, PREC: tl.constexpr, D: tl.constexpr, BB: tl.constexpr):
    """BPTT of ``_loop`` for head j and its rows: dh, dc, dn, dm (B, H) enter as dL/d(final
    state) and leave as dL/d(initial state); DA (T, B, 4H) gets dL/d(pre-activations)."""
    j = tl.program_id(0)
    rows = tl.program_id(1) * BB + tl.arange(0, BB)
    e = tl.arange(0, D)
    mk = (rows < B)[:, None] & (e < D)[None, :]
    rr = j * 4 * D * D + e[:, None] * D + e[None, :]  # R_{j,g}[e, f]
    r_i = tl.load(R + rr)
    r_f = tl.load(R + rr + D * D)
    r_z = tl.load(R + rr + 2 * D * D)
    r_o = tl.load(R + rr + 3 * D * D)
    st = rows[:, None] * H + j * D + e[None, :]
    gh = tl.load(dh + st, mask=mk, other=0.0)
    gc = tl.load(dc + st, mask=mk, other=0.0)
    gn = tl.load(dn + st, mask=mk, other=0.0)
    gm = tl.load(dm + st, mask=mk, other=0.0)
    for k in range(T):
        if REVERSE:
            t = k
        else:
            t = T - 1 - k
        act = (rows < tl.load(SIZES + t))[:, None] & mk
        g4 = (t * B + rows)[:, None] * (4 * H) + j * D + e[None, :]
        s3 = (t * B + rows)[:, None] * H + j * D + e[None, :]
        dai, daf, daz, dao, dcp, dnp, dmp = slstm_step_back(
            tl.load(A + g4, mask=act, other=0.0), tl.load(A + g4 + H, mask=act, other=0.0),
            tl.load(A + g4 + 2 * H, mask=act, other=0.0),
            tl.load(A + g4 + 3 * H, mask=act, other=0.0), tl.load(LF + s3, mask=act, other=0.0),
            tl.load(CP + s3, mask=act, other=0.0), tl.load(NP + s3, mask=act, other=0.0),
            tl.load(C + s3, mask=act, other=0.0), tl.load(N + s3, mask=act, other=1.0),
            gh + tl.load(DY + s3, mask=act, other=0.0), gc, gn, gm)
        dai = tl.where(act, dai, 0.0)
        daf = tl.where(act, daf, 0.0)
        daz = tl.where(act, daz, 0.0)
        dao = tl.where(act, dao, 0.0)
        tl.store(DA + g4, dai, mask=act)
        tl.store(DA + g4 + H, daf, mask=act)
        tl.store(DA + g4 + 2 * H, daz, mask=act)
        tl.store(DA + g4 + 3 * H, dao, mask=act)
        back = (tl.dot(dai, r_i, input_precision=PREC) + tl.dot(daf, r_f, input_precision=PREC)
                + tl.dot(daz, r_z, input_precision=PREC) + tl.dot(dao, r_o, input_precision=PREC))
        gh = tl.where(act, back, gh)
        gc = tl.where(act, dcp, gc)
        gn = tl.where(act, dnp, gn)
        gm = tl.where(act, dmp, gm)
    tl.store(dh + st, gh, mask=mk)
    tl.store(dc + st, gc, mask=mk)
    tl.store(dn + st, gn, mask=mk)
    tl.store(dm + st, gm, mask=mk)


class HeadsLoop(cm.Loop):
    """``slstm._Loop`` as two launches: inputs (G, w_hh (nh, 4d, d), h0, c0, n0, m0); outs
    (y, h_n, c_n, n_n, m_n); the same saved buffers."""

    def __init__(self, sizes: list[int], reverse: bool) -> None:
        self.sizes, self.reverse = sizes, reverse
        self.bufs: tuple = ()

    def forward(self, G, w_hh, *state):
        T, B, GH = G.shape
        H = GH // 4
        h, c, nrm, m = (s.detach().clone().contiguous() for s in state)
        Y, HP, CP, NP, C, N, LF, M = (cm.zeros(T, B, H, like=G) for _ in range(8))
        A = cm.zeros(T, B, GH, like=G)
        R = w_hh.detach().contiguous()
        nh, _, d = R.shape
        sizes = torch.tensor(self.sizes, dtype=torch.int32, device=G.device)
        _loop[(nh, triton.cdiv(B, BB))](G, R, h, c, nrm, m, Y, A, HP, CP, NP, C, N, LF, M, sizes,
                                       T, B, H, REVERSE=self.reverse, PREC=cm.dot_precision(), D=d,
                                       BB=BB, **cm.head_launch(d))
        self.bufs = (A, C, N, LF, M)
        return (Y, h, c, nrm, m), (w_hh, A, HP, CP, NP, C, N, LF)

    def backward(self, saved, grads):
        w_hh, A, HP, CP, NP, C, N, LF = saved
        T, B, H = HP.shape
        dY = torch.zeros_like(HP) if grads[0] is None else grads[0].contiguous()
        dh, dc, dn, dm = (torch.zeros_like(HP[0]) if g is None else g.contiguous().clone()
                          for g in grads[1:])
        DA = torch.zeros_like(A)
        R = w_hh.detach().contiguous()
        nh, _, d = R.shape
        sizes = torch.tensor(self.sizes, dtype=torch.int32, device=A.device)
        _loop_back[(nh, triton.cdiv(B, BB))](R, A, CP, NP, C, N, LF, dY, dh, dc, dn, dm, DA, sizes,
                                            T, B, H, REVERSE=self.reverse, PREC=cm.dot_precision(),
                                            D=d, BB=BB, **cm.head_launch(d))
        return DA, cm.rec_weight_grad(DA, HP, w_hh), dh, dc, dn, dm
