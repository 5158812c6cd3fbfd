"""The LSTM on Triton: one direction of one layer, forward and hand-derived backward.

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, (h_n, c_n), gates)

The contract is ``gatedrnn.equations.reference.run``; the equations are
``gatedrnn.equations.cells.lstm_cell``:

- before the loop, one GEMM for all steps: G = x W_ih^T + b_ih + b_hh, or with layer norm
  G = LN_x(x W_ih^T) + b_ih + b_hh (torch ops under autograd: they give dx and dW_ih as one GEMM
  each over the saved gate gradients);
- per step: z = R (m ⊙ h) as a torch GEMM (batched over heads with ``num_heads``), then one
  Triton program per active row (``_step``) for LN_h, the peepholes, the gates, LN_c, zoneout,
  writing h, c in place and saving what the backward reads;
- backward, per step in reverse: one Triton program per row (``_step_back``), then
  dh += m ⊙ (dz R) as one GEMM; after the loop dR = Σ dz^T (m ⊙ h) as one GEMM, and the
  gradients of the peepholes and layer norm gains as reductions over saved values.

proj_size (w_hr) is not in this engine: such calls run the reference engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

from . import lstm_heads
from .common import (
    Loop,
    dense_run,
    keep_weights,
    launch,
    order,
    originals_of,
    product_t,
    rebuild,
    rec_product,
    rec_weight_grad,
    reference,
    row_launch,
    step_sizes,
    tanh,
    zeros,
)
from .pointwise import lstm_gates, lstm_gates_back


@triton.jit
def _peepholes(P, j, mk, H, PEEP: tl.constexpr):
    """P_i, P_f, P_o at units j of P (3, H); zeros (never read) without peepholes."""
    if PEEP:
        p_i = tl.load(P + j, mask=mk, other=0.0)
        p_f = tl.load(P + H + j, mask=mk, other=0.0)
        p_o = tl.load(P + 2 * H + j, mask=mk, other=0.0)
    else:
        p_i = tl.zeros_like(j).to(tl.float32)
        p_f = p_i
        p_o = p_i
    return p_i, p_f, p_o


@triton.jit
def _ln_fwd4(z_i, z_f, z_g, z_o, mk, n, eps):
    """Normalise the four gate blocks of one row as one vector of n = 4H: (x̂ per block, 1/std)."""
    mean = (tl.sum(z_i, 0) + tl.sum(z_f, 0) + tl.sum(z_g, 0) + tl.sum(z_o, 0)) / n
    d_i = tl.where(mk, z_i - mean, 0.0)
    d_f = tl.where(mk, z_f - mean, 0.0)
    d_g = tl.where(mk, z_g - mean, 0.0)
    d_o = tl.where(mk, z_o - mean, 0.0)
    var = (tl.sum(d_i * d_i, 0) + tl.sum(d_f * d_f, 0) + tl.sum(d_g * d_g, 0)
           + tl.sum(d_o * d_o, 0)) / n
    rstd = 1.0 / tl.sqrt(var + eps)
    return d_i * rstd, d_f * rstd, d_g * rstd, d_o * rstd, rstd


@triton.jit
def _step(G, Z, h, c, HIN, M, HM, Y, A, CP, CN, XH, XC, RS, P, LHW, LHB, LCW, LCB, ZH, ZC, H,
          eps, MASK: tl.constexpr, PEEP: tl.constexpr, LN: tl.constexpr, ZONE_H: tl.constexpr,
          ZONE_C: tl.constexpr, BLOCK: tl.constexpr):
    """One step of row b (``cells.lstm_cell``). G, Z (B, 4H): input part and R (m ⊙ h); h, c
    (B, H) the state, updated in place; HIN (B, H) the product's input m ⊙ h (h itself without a
    mask): saved to HM, then set to m ⊙ h' for the next step's product (no separate launch for
    the mask). Writes Y (B, H), the gates A (B, 4H), c before the step CP and c' before zoneout
    CN (B, H); with LN the normalised XH (B, 4H), XC (B, H) and 1/std RS (B, 2)."""
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK)
    mk = j < H
    g = b * 4 * H + j
    tl.store(HM + b * H + j, tl.load(HIN + b * H + j, mask=mk), mask=mk)
    z_i = tl.load(Z + g, mask=mk, other=0.0)
    z_f = tl.load(Z + g + H, mask=mk, other=0.0)
    z_g = tl.load(Z + g + 2 * H, mask=mk, other=0.0)
    z_o = tl.load(Z + g + 3 * H, mask=mk, other=0.0)
    if LN:  # a = G + LN_h(z): LN over the whole row of 4H
        x_i, x_f, x_g, x_o, rstd = _ln_fwd4(z_i, z_f, z_g, z_o, mk, 4 * H, eps)
        tl.store(XH + g, x_i, mask=mk)
        tl.store(XH + g + H, x_f, mask=mk)
        tl.store(XH + g + 2 * H, x_g, mask=mk)
        tl.store(XH + g + 3 * H, x_o, mask=mk)
        tl.store(RS + 2 * b, rstd)
        z_i = x_i * tl.load(LHW + j, mask=mk) + tl.load(LHB + j, mask=mk)
        z_f = x_f * tl.load(LHW + H + j, mask=mk) + tl.load(LHB + H + j, mask=mk)
        z_g = x_g * tl.load(LHW + 2 * H + j, mask=mk) + tl.load(LHB + 2 * H + j, mask=mk)
        z_o = x_o * tl.load(LHW + 3 * H + j, mask=mk) + tl.load(LHB + 3 * H + j, mask=mk)
    a_i = tl.load(G + g, mask=mk) + z_i
    a_f = tl.load(G + g + H, mask=mk) + z_f
    a_g = tl.load(G + g + 2 * H, mask=mk) + z_g
    a_o = tl.load(G + g + 3 * H, mask=mk) + z_o
    r = b * H + j
    cp = tl.load(c + r, mask=mk)
    p_i, p_f, p_o = _peepholes(P, j, mk, H, PEEP)
    ig, fg, gg, og, cn = lstm_gates(a_i, a_f, a_g, a_o, cp, p_i, p_f, p_o, PEEP)
    s = cn
    if LN:  # h' = o ⊙ tanh(LN_c(c'))
        mean = tl.sum(tl.where(mk, cn, 0.0), 0) / H
        dc = tl.where(mk, cn - mean, 0.0)
        rstd_c = 1.0 / tl.sqrt(tl.sum(dc * dc, 0) / H + eps)
        xc = dc * rstd_c
        tl.store(XC + r, xc, mask=mk)
        tl.store(RS + 2 * b + 1, rstd_c)
        s = xc * tl.load(LCW + j, mask=mk) + tl.load(LCB + j, mask=mk)
    hn = og * tanh(s)
    if ZONE_H:  # h = d h + (1 − d) h'
        d = tl.load(ZH + r, mask=mk)
        hn = d * tl.load(h + r, mask=mk) + (1.0 - d) * hn
    cc = cn
    if ZONE_C:
        d = tl.load(ZC + r, mask=mk)
        cc = d * cp + (1.0 - d) * cn
    tl.store(A + g, ig, mask=mk)
    tl.store(A + g + H, fg, mask=mk)
    tl.store(A + g + 2 * H, gg, mask=mk)
    tl.store(A + g + 3 * H, og, mask=mk)
    tl.store(CP + r, cp, mask=mk)
    tl.store(CN + r, cn, mask=mk)
    tl.store(Y + r, hn, mask=mk)
    tl.store(h + r, hn, mask=mk)
    tl.store(c + r, cc, mask=mk)
    if MASK:
        tl.store(HIN + r, hn * tl.load(M + r, mask=mk), mask=mk)


@triton.jit
def _step_back(A, CP, CN, XH, XC, RS, DY, dh, BACK, M, dc, DA, DZ, DS, P, LHW, LCW, LCB, ZH, ZC,
               H, MASK: tl.constexpr, PEEP: tl.constexpr, LN: tl.constexpr, ZONE_H: tl.constexpr,
               ZONE_C: tl.constexpr, BLOCK: tl.constexpr):
    """The derivatives of ``_step`` for row b (δv = dL/dv). In: dh + m ⊙ BACK, dc (B, H) =
    dL/d(state after the step), BACK the row's pending dz R of the later step (zero if none);
    out: dc = dL/dc_{t−1} and dh = its part that skips the product (d_h δh); DA (B, 4H) = dL/da
    (= dL/dG), DZ = dL/dz (LN_h backward of DA), DS (B, H) = dL/d LN_c(c')::

        δh = dh + m ⊙ BACK + dY;  δĥ = (1 − d_h) δh;  δo = δĥ tanh(s);  δs = δĥ o (1 − tanh² s)
        δc' = δs (or LN_c backward) + (1 − d_c) δc + P_o δa_o
        δa_i = δc' g i(1 − i),  δa_f = δc' c f(1 − f),  δa_g = δc' i (1 − g²),  δa_o = δo o(1 − o)
        δc_{t−1} = δc' f + d_c δc + P_i δa_i + P_f δa_f
    """
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK)
    mk = j < H
    g = b * 4 * H + j
    r = b * H + j
    ig = tl.load(A + g, mask=mk, other=0.0)
    fg = tl.load(A + g + H, mask=mk, other=0.0)
    gg = tl.load(A + g + 2 * H, mask=mk, other=0.0)
    og = tl.load(A + g + 3 * H, mask=mk, other=0.0)
    cp = tl.load(CP + r, mask=mk, other=0.0)
    cn = tl.load(CN + r, mask=mk, other=0.0)
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
    s = cn
    if LN:
        xc = tl.load(XC + r, mask=mk, other=0.0)
        lw = tl.load(LCW + j, mask=mk, other=0.0)
        s = xc * lw + tl.load(LCB + j, mask=mk, other=0.0)
    th = tanh(s)
    dao = e * th * og * (1.0 - og)
    ds = e * og * (1.0 - th * th)
    dcn = ds
    if LN:  # LN_c backward over H
        tl.store(DS + r, ds, mask=mk)
        dx = ds * lw
        rstd_c = tl.load(RS + 2 * b + 1)
        dcn = rstd_c * (dx - tl.sum(dx, 0) / H - xc * (tl.sum(dx * xc, 0) / H))
    dct = tl.load(dc + r, mask=mk, other=0.0)
    if ZONE_C:
        d = tl.load(ZC + r, mask=mk, other=0.0)
        dcn += (1.0 - d) * dct
        dct = d * dct  # the part that skips the step
    else:
        dcn += dct
        dct = dct * 0.0
    p_i, p_f, p_o = _peepholes(P, j, mk, H, PEEP)
    dai, daf, dag, dcprev = lstm_gates_back(dcn, dct, dao, ig, fg, gg, cp, p_i, p_f, p_o, PEEP)
    tl.store(DA + g, dai, mask=mk)
    tl.store(DA + g + H, daf, mask=mk)
    tl.store(DA + g + 2 * H, dag, mask=mk)
    tl.store(DA + g + 3 * H, dao, mask=mk)
    tl.store(dc + r, dcprev, mask=mk)
    tl.store(dh + r, kept, mask=mk)
    if LN:  # LN_h backward over the row of 4H
        x_i = tl.load(XH + g, mask=mk, other=0.0)
        x_f = tl.load(XH + g + H, mask=mk, other=0.0)
        x_g = tl.load(XH + g + 2 * H, mask=mk, other=0.0)
        x_o = tl.load(XH + g + 3 * H, mask=mk, other=0.0)
        v_i = dai * tl.load(LHW + j, mask=mk, other=0.0)
        v_f = daf * tl.load(LHW + H + j, mask=mk, other=0.0)
        v_g = dag * tl.load(LHW + 2 * H + j, mask=mk, other=0.0)
        v_o = dao * tl.load(LHW + 3 * H + j, mask=mk, other=0.0)
        n = 4 * H
        mv = (tl.sum(v_i, 0) + tl.sum(v_f, 0) + tl.sum(v_g, 0) + tl.sum(v_o, 0)) / n
        mvx = (tl.sum(v_i * x_i, 0) + tl.sum(v_f * x_f, 0) + tl.sum(v_g * x_g, 0)
               + tl.sum(v_o * x_o, 0)) / n
        rstd = tl.load(RS + 2 * b)
        tl.store(DZ + g, rstd * (v_i - mv - x_i * mvx), mask=mk)
        tl.store(DZ + g + H, rstd * (v_f - mv - x_f * mvx), mask=mk)
        tl.store(DZ + g + 2 * H, rstd * (v_g - mv - x_g * mvx), mask=mk)
        tl.store(DZ + g + 3 * H, rstd * (v_o - mv - x_o * mvx), mask=mk)


class _Loop(Loop):
    """inputs (G, w_hh, h0, c0, P, ln_h_w, ln_h_b, ln_c_w, ln_c_b); outs (y, h_n, c_n)."""

    def __init__(self, sizes: list[int], reverse: bool, m: Tensor | None, zh: Tensor | None,
                 zc: Tensor | None, eps: float, ln: bool) -> None:
        self.sizes, self.reverse, self.m, self.zh, self.zc = sizes, reverse, m, zh, zc
        self.eps, self.ln = eps, ln
        self.bufs: tuple = ()

    def forward(self, G, w_hh, h0, c0, P, lhw, lhb, lcw, lcb):
        T, B, GH = G.shape
        H = GH // 4
        h, c = h0.detach().clone().contiguous(), c0.detach().clone().contiguous()
        Y, CP, CN, HM = (zeros(T, B, H, like=G) for _ in range(4))
        A = zeros(T, B, GH, like=G)
        XH, XC, RS = ((zeros(T, B, GH, like=G), zeros(T, B, H, like=G), zeros(T, B, 2, like=G))
                      if self.ln else (G, G, G))  # (G: a placeholder pointer, never read)
        flags = dict(MASK=self.m is not None, PEEP=P is not None, LN=self.ln,
                     ZONE_H=self.zh is not None, ZONE_C=self.zc is not None, **row_launch(H))
        hin = h if self.m is None else h * self.m  # (B, H) the products' input, kept by _step
        for t in order(T, self.reverse):
            n = self.sizes[t]
            if n == 0:
                continue
            z = rec_product(hin[:n], w_hh).contiguous()  # (n, 4H)
            _step[(n,)](G[t], z, h, c, hin, _or(self.m, G), HM[t], Y[t], A[t], CP[t], CN[t], XH[t],
                        XC[t], RS[t],
                        _or(P, G), _or(lhw, G), _or(lhb, G), _or(lcw, G), _or(lcb, G),
                        _at(self.zh, t, G), _at(self.zc, t, G), H, self.eps, **flags)
        self.bufs = (A, CP, CN)
        return (Y, h, c), (w_hh, P, lhw, lcw, lcb, A, CP, CN, HM, XH, XC, RS)

    def backward(self, saved, grads):
        w_hh, P, lhw, lcw, lcb, A, CP, CN, HM, XH, XC, RS = saved
        dY, dhn, dcn = grads
        T, B, H = CP.shape
        dY = torch.zeros_like(CP) if dY is None else dY.contiguous()
        dh = torch.zeros_like(CP[0]) if dhn is None else dhn.contiguous().clone()
        dc = torch.zeros_like(CP[0]) if dcn is None else dcn.contiguous().clone()
        DA = torch.zeros_like(A)
        DZ, DS = (torch.zeros_like(A), torch.zeros_like(CP)) if self.ln else (DA, CP)
        flags = dict(MASK=self.m is not None, PEEP=P is not None, LN=self.ln,
                     ZONE_H=self.zh is not None, ZONE_C=self.zc is not None, **row_launch(H))
        back = torch.zeros_like(dh)  # per row: dz R of its last step done, not yet in dh
        for t in order(T, not self.reverse):
            n = self.sizes[t]
            if n == 0:
                continue
            _step_back[(n,)](A[t], CP[t], CN[t], XH[t], XC[t], RS[t], dY[t], dh, back,
                             _or(self.m, A), dc, DA[t], DZ[t], DS[t], _or(P, A), _or(lhw, A),
                             _or(lcw, A), _or(lcb, A), _at(self.zh, t, A), _at(self.zc, t, A), H,
                             **flags)
            product_t(DZ[t, :n], w_hh, back[:n])  # (n, H)
        dh += back if self.m is None else back * self.m
        dP = peephole_grad(DA, CP, CN, P)
        ln = [None] * 4
        if self.ln:
            ln = [(DA * XH).sum((0, 1)), DA.sum((0, 1)), (DS * XC).sum((0, 1)), DS.sum((0, 1))]
        return (DA, rec_weight_grad(DZ, HM, w_hh), dh, dc, dP, *ln)


def peephole_grad(DA: Tensor, CP: Tensor, CN: Tensor, P: Tensor | None) -> Tensor | None:
    """dL/dP = Σ over steps and rows of (δa_i c, δa_f c, δa_o c'): reductions over saved values
    (no atomics, so the sum is deterministic). DA (T, B, 4H), CP, CN (T, B, H)."""
    if P is None:
        return None
    H = CP.shape[-1]
    return torch.stack([(DA[..., :H] * CP).sum((0, 1)), (DA[..., H:2 * H] * CP).sum((0, 1)),
                        (DA[..., 3 * H:] * CN).sum((0, 1))])


def _or(v: Tensor | None, placeholder: Tensor) -> Tensor:
    """A pointer for a kernel argument its flags switch off."""
    return placeholder if v is None else v


def _at(z: Tensor | None, t: int, placeholder: Tensor) -> Tensor:
    return placeholder if z is None else z[t]


def _run(x: Tensor, state: tuple[Tensor, ...], w: Mapping[str, Tensor | None],
         batch_sizes: Tensor | None, reverse: bool, opts: Any,
         masks: Mapping[str, Tensor | None], record: bool):
    """One direction of one LSTM layer on the Triton engine (contract: ``gatedrnn.equations.reference.run``).

    Shapes: x (T, B, I); state (h0, c0) each (B, H); w_hh (4H, H) or (nh, 4d, d); returns
    y (T, B, H), (h_n, c_n), and gates input/forget/candidate/output/cell each (T, B, H) when
    ``record``.
    """
    if w.get("w_hr") is not None:  # proj_size: not in this engine
        return reference.run(x, state, w, batch_sizes, reverse, opts, masks, record)
    h0, c0 = state
    T, B = x.shape[0], x.shape[1]
    H, dt = c0.shape[-1], x.dtype
    w_ih = w["w_ih"]
    assert w_ih is not None
    bias = None
    for b in (w.get("b_ih"), w.get("b_hh")):
        bias = b if bias is None else (bias if b is None else bias + b)
    ln = bool(opts.layer_norm)
    if ln:  # LN_x is not recurrent: torch ops under autograd, biases joined to its shift
        shift = w.get("ln_x_b")
        shift = bias if shift is None else (shift if bias is None else shift + bias)
        G = F.layer_norm(x @ w_ih.t(), (4 * H,), w.get("ln_x_w"), shift, opts.ln_eps)
    else:
        G = x @ w_ih.t() if bias is None else torch.addmm(bias, x.reshape(T * B, -1), w_ih.t())
    G = G.reshape(T, B, 4 * H).contiguous()  # (T, B, 4H)
    m = masks.get("recurrent")
    sizes, w_hh = step_sizes(batch_sizes, T, B), w["w_hh"]
    assert w_hh is not None
    args = (sizes, bool(reverse), None if m is None else m.to(dt),
            keep_weights(masks.get("zoneout_h"), T, B, H, dt),
            keep_weights(masks.get("zoneout_c"), T, B, H, dt))
    loop: _Loop | lstm_heads.HeadsLoop = (lstm_heads.HeadsLoop(*args)
                                          if lstm_heads.usable(w_hh, ln, w.get("peephole"))
                                          else _Loop(*args, float(opts.ln_eps), ln))
    lnw = [w.get(k) if ln else None for k in ("ln_h_w", "ln_h_b", "ln_c_w", "ln_c_b")]
    loop.inputs = (G, w_hh, h0, c0, w.get("peephole"), *lnw)
    originals, keys = originals_of(x, state, w)

    def recompute(*o: Tensor) -> tuple[Tensor, ...]:
        xr, sr, wr = rebuild(o, keys, 2, w)
        y, final, _ = reference.run(xr, sr, wr, batch_sizes, reverse, opts, masks, False)
        return (y, *final)

    loop.recompute = recompute  # type: ignore[method-assign]
    y, hn, cn = launch(loop, x, originals)
    gates = None
    if record:
        A, CP, CN = (v.detach() for v in loop.bufs)
        cell = CN if loop.zc is None else loop.zc * CP + (1 - loop.zc) * CN
        gates = {k: A[..., i * H:(i + 1) * H].clone()
                 for i, k in enumerate(("input", "forget", "candidate", "output"))}
        gates["cell"] = cell.clone()
    return y, (hn, cn), gates


run = dense_run(_run)
