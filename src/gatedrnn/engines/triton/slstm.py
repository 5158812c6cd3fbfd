"""sLSTM on Triton: one direction of one layer, forward and hand-derived backward.

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, (h, c, n, m), gates)

The contract is ``gatedrnn.equations.reference.run`` (opts.mode "slstm"; masks are ignored: the cell has no
dropout or zoneout variants); the equations are ``gatedrnn.equations.cells.slstm_cell``. The same
alternating form as ``lstm.py``: G = x W_ih^T + b_ih + b_hh for all steps in one GEMM; per step
the recurrent product as a torch GEMM (batched over heads for a head-wise w_hh (nh, 4d, d)) and
one Triton program per active row for the stabilised gates (``_step``); backward per step in
reverse (``_step_back``) and dR = Σ dz^T h as one GEMM after the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import common as cm
from . import slstm_heads
from .pointwise import slstm_step, slstm_step_back

GATE_NAMES = ("input", "forget", "candidate", "output", "cell", "normalizer", "stabilizer")


@triton.jit
def _step(G, Z, h, c, nrm, m, Y, A, HP, CP, NP, C, N, LF, M, H, BLOCK: tl.constexpr):
    """One step (``cell``) of row b. G, Z (B, 4H): input part and R h; h, c, nrm, m (B, H) the
    state, updated in place; saves the pre-activations A (B, 4H), h, c and n before (HP, CP, NP)
    and c, n after (C, N) the step, u (LF) and m' (M)."""
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK)
    mk = j < H
    g = b * 4 * H + j
    r = b * H + j
    a_i = tl.load(G + g, mask=mk, other=0.0) + tl.load(Z + g, mask=mk, other=0.0)
    a_f = tl.load(G + g + H, mask=mk, other=0.0) + tl.load(Z + g + H, mask=mk, other=0.0)
    a_z = tl.load(G + g + 2 * H, mask=mk, other=0.0) + tl.load(Z + g + 2 * H, mask=mk, other=0.0)
    a_o = tl.load(G + g + 3 * H, mask=mk, other=0.0) + tl.load(Z + g + 3 * H, mask=mk, other=0.0)
    cp = tl.load(c + r, mask=mk, other=0.0)
    np_ = tl.load(nrm + r, mask=mk, other=1.0)
    tl.store(HP + r, tl.load(h + r, mask=mk, other=0.0), mask=mk)
    hn, cn, nn, mn, u = slstm_step(a_i, a_f, a_z, a_o, cp, np_, tl.load(m + r, mask=mk, other=0.0))
    tl.store(A + g, a_i, mask=mk)
    tl.store(A + g + H, a_f, mask=mk)
    tl.store(A + g + 2 * H, a_z, mask=mk)
    tl.store(A + g + 3 * H, a_o, mask=mk)
    tl.store(CP + r, cp, mask=mk)
    tl.store(NP + r, np_, mask=mk)
    tl.store(C + r, cn, mask=mk)
    tl.store(N + r, nn, mask=mk)
    tl.store(LF + r, u, mask=mk)
    tl.store(M + r, mn, mask=mk)
    tl.store(Y + r, hn, mask=mk)
    tl.store(h + r, hn, mask=mk)
    tl.store(c + r, cn, mask=mk)
    tl.store(nrm + r, nn, mask=mk)
    tl.store(m + r, mn, mask=mk)


@triton.jit
def _step_back(A, CP, NP, C, N, LF, DY, dh, dc, dn, dm, DA, H, BLOCK: tl.constexpr):
    """The derivatives of ``_step`` for row b (``cell_back``). dh, dc, dn, dm (B, H) enter as
    dL/d(state after the step); dc, dn, dm leave as dL/d(state before it), dh is left to the
    product (dz R); DA (B, 4H) gets dL/d(pre-activations)."""
    b = tl.program_id(0)
    j = tl.arange(0, BLOCK)
    mk = j < H
    g = b * 4 * H + j
    r = b * H + j
    dai, daf, daz, dao, gc, gn, gm = slstm_step_back(
        tl.load(A + g, mask=mk, other=0.0), tl.load(A + g + H, mask=mk, other=0.0),
        tl.load(A + g + 2 * H, mask=mk, other=0.0), tl.load(A + g + 3 * H, mask=mk, other=0.0),
        tl.load(LF + r, mask=mk, other=0.0), tl.load(CP + r, mask=mk, other=0.0),
        tl.load(NP + r, mask=mk, other=0.0), tl.load(C + r, mask=mk, other=0.0),
        tl.load(N + r, mask=mk, other=1.0),
        tl.load(dh + r, mask=mk, other=0.0) + tl.load(DY + r, mask=mk, other=0.0),
        tl.load(dc + r, mask=mk, other=0.0), tl.load(dn + r, mask=mk, other=0.0),
        tl.load(dm + r, mask=mk, other=0.0))
    tl.store(DA + g, dai, mask=mk)
    tl.store(DA + g + H, daf, mask=mk)
    tl.store(DA + g + 2 * H, daz, mask=mk)
    tl.store(DA + g + 3 * H, dao, mask=mk)
    tl.store(dc + r, gc, mask=mk)
    tl.store(dn + r, gn, mask=mk)
    tl.store(dm + r, gm, mask=mk)


class _Loop(cm.Loop):
    """inputs (G, w_hh, h0, c0, n0, m0); outs (y, h_n, c_n, n_n, m_n)."""

    def __init__(self, sizes: list[int], reverse: bool) -> None:
        self.sizes, self.reverse = sizes, reverse
        self.bufs: tuple = ()

    def forward(self, G, w_hh, *state):
        T, B, GH = G.shape
        H = GH // 4
        h, c, nrm, m = (s.detach().clone().contiguous() for s in state)
        Y, HP, CP, NP, C, N, LF, M = (cm.zeros(T, B, H, like=G) for _ in range(8))
        A = cm.zeros(T, B, GH, like=G)
        for t in cm.order(T, self.reverse):
            n = self.sizes[t]
            if n == 0:
                continue
            z = cm.rec_product(h[:n], w_hh).contiguous()  # (n, 4H)
            _step[(n,)](G[t], z, h, c, nrm, m, Y[t], A[t], HP[t], CP[t], NP[t], C[t], N[t], LF[t], M[t],
                        H, **cm.row_launch(H))
        self.bufs = (A, C, N, LF, M)
        return (Y, h, c, nrm, m), (w_hh, A, HP, CP, NP, C, N, LF)

    def backward(self, saved, grads):
        w_hh, A, HP, CP, NP, C, N, LF = saved
        T, B, H = HP.shape
        dY = torch.zeros_like(HP) if grads[0] is None else grads[0].contiguous()
        dh, dc, dn, dm = (torch.zeros_like(HP[0]) if d is None else d.contiguous().clone()
                          for d in grads[1:])
        DA = torch.zeros_like(A)
        for t in cm.order(T, not self.reverse):
            n = self.sizes[t]
            if n == 0:
                continue
            _step_back[(n,)](A[t], CP[t], NP[t], C[t], N[t], LF[t], dY[t], dh, dc, dn, dm, DA[t],
                             H, **cm.row_launch(H))
            cm.product_t(DA[t, :n], w_hh, dh[:n])  # all of δh_{t−1} comes through R
        return DA, cm.rec_weight_grad(DA, HP, w_hh), dh, dc, dn, dm


def _run(x: Tensor, state: tuple[Tensor, ...], w: Mapping[str, Tensor | None],
         batch_sizes: Tensor | None, reverse: bool, opts: Any,
         masks: Mapping[str, Tensor | None], record: bool):
    """One direction of one sLSTM layer on the Triton engine (contract: ``gatedrnn.equations.reference.run``).

    Shapes: x (T, B, I); state (h, c, n, m) each (B, H); w_hh (4H, H) or (nh, 4d, d); returns
    y (T, B, H), the final (h, c, n, m), and the gates of ``GATE_NAMES`` each (T, B, H) when
    ``record``.
    """
    T, B = x.shape[0], x.shape[1]
    H = state[0].shape[-1]
    w_ih = w["w_ih"]
    assert w_ih is not None
    bias = None
    for b in (w.get("b_ih"), w.get("b_hh")):
        bias = b if bias is None else (bias if b is None else bias + b)
    G = x @ w_ih.t() if bias is None else torch.addmm(bias, x.reshape(T * B, -1), w_ih.t())
    G = G.reshape(T, B, 4 * H).contiguous()  # (T, B, 4H)
    sizes = cm.step_sizes(batch_sizes, T, B)
    w_hh = w["w_hh"]
    assert w_hh is not None
    loop = (slstm_heads.HeadsLoop if slstm_heads.usable(w_hh) else _Loop)(sizes, bool(reverse))
    loop.inputs = (G, w_hh, *state)
    originals, keys = cm.originals_of(x, state, w)

    def recompute(*o: Tensor) -> tuple[Tensor, ...]:
        xr, sr, wr = cm.rebuild(o, keys, 4, w)
        y, final, _ = cm.reference.run(xr, sr, wr, batch_sizes, reverse,
                                       cm.cells.CellOptions("slstm"), {}, False)
        return (y, *final)

    loop.recompute = recompute  # type: ignore[method-assign]
    y, *final = cm.launch(loop, x, originals)
    gates = None
    if record:
        A, C, N, LF, M = (v.detach() for v in loop.bufs)
        a_i, _, a_z, a_o = A.chunk(4, dim=-1)
        active = torch.tensor(sizes, device=x.device)
        live = (torch.arange(B, device=x.device)[None, :] < active[:, None])[..., None]  # (T, B, 1)
        values = (torch.exp(a_i - M), torch.exp(LF - M), torch.tanh(a_z), torch.sigmoid(a_o), C, N,
                  M)
        gates = {k: torch.where(live, v, 0.0) for k, v in zip(GATE_NAMES, values)}
    return y, tuple(final), gates


run = cm.dense_run(_run)
