"""minGRU and minLSTM on Triton: gates and the linear recurrence in one kernel, as a scan.

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, (h_n,), gates)

The contract is ``gatedrnn.equations.reference.run`` with opts.mode "mingru" or "minlstm" (masks unused);
the equations are ``gatedrnn.equations.cells.mingru_cell`` and ``minlstm_cell``. Both are
h_t = a_t ⊙ h_{t−1} + b_t with coefficients from the projection p = x W_ih^T + b_ih alone (one torch
GEMM for all steps, under autograd). One program per (row, block of units) walks time in chunks
of CHUNK steps: it computes a, b of a chunk, runs ``tl.associative_scan`` over the pairs in
linear space, (a₁, b₁) ∘ (a₂, b₂) = (a₁ a₂, b₁ a₂ + b₂), and carries the last state into the next
chunk. Linear space avoids the log-space scan's cancellation (``gatedrnn.equations.scan``): its error
grows with T, this one's does not grow with the scan's depth.

Backward: with g_t = dL/dh_t, g_t = δy_t + a_{t+1} g_{t+1} is the same recurrence backwards
in time, so the backward kernel runs the same scan over reversed chunks, then
δa_t = g_t h_{t−1}, δb_t = g_t, and the gates' derivatives; dh0 = a_0 g_0.

Variable lengths: steps at and past a row's length get a = 1, b = 0, so the state stays and
h_n is the last step's; their outputs are zero. With ``reverse`` each row's first ``length``
steps are reversed in place before the scan and after it (a gather, as ``gatedrnn.equations.scan``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import common as cm
from .common import sigmoid

KINDS = {"mingru": 0, "minlstm": 1}


@triton.jit
def _combine(a1, b1, a2, b2):
    """Two steps of h ↦ a h + b, the earlier first."""
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _positive(v):
    """g(v) = v + 0.5 for v ≥ 0, σ(v) otherwise (``cells.positive``), and its derivative."""
    s = sigmoid(v)
    return tl.where(v >= 0, v + 0.5, s), tl.where(v >= 0, 1.0, s * (1.0 - s))


@triton.jit
def _coefficients(P, off, m, H, KIND: tl.constexpr):
    """(a, b) at the offsets ``off`` of the projection rows (…, G·H), where ``m``."""
    if KIND == 0:  # minGRU: a = 1 − z, b = z h̃
        z = sigmoid(tl.load(P + off, mask=m, other=0.0))
        ht, _ = _positive(tl.load(P + off + H, mask=m, other=0.0))
        a = 1.0 - z
        c = z * ht
    else:  # minLSTM: a = f', b = i' h̃
        f = sigmoid(tl.load(P + off, mask=m, other=0.0))
        i = sigmoid(tl.load(P + off + H, mask=m, other=0.0))
        ht, _ = _positive(tl.load(P + off + 2 * H, mask=m, other=0.0))
        a = f / (f + i)
        c = i / (f + i) * ht
    return a, c


@triton.jit
def _scan(P, H0, HS, Y, LEN, T, B, H, KIND: tl.constexpr, GATES: tl.constexpr,
          CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """All states of one row and block of units. P (T, B, G·H) projections, H0 (B, H); writes
    HS (T, B, H) the states (held past the row's length) and Y (T, B, H) the outputs."""
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mk = j < H
    length = tl.load(LEN + b)
    carry = tl.load(H0 + b * H + j, mask=mk, other=0.0)
    k = tl.arange(0, CHUNK)
    for t0 in range(0, T, CHUNK):
        t = t0 + k
        inb = (t < T)[:, None] & mk[None, :]  # (CHUNK, BLOCK)
        live = (t < length)[:, None] & mk[None, :]
        a, c = _coefficients(P, (t[:, None] * B + b) * (GATES * H) + j[None, :], inb, H, KIND)
        a = tl.where(live, a, 1.0)
        c = tl.where(live, c, 0.0)
        A, C = tl.associative_scan((a, c), 0, _combine)
        h = A * carry[None, :] + C
        out = (t[:, None] * B + b) * H + j[None, :]
        tl.store(HS + out, h, mask=inb)
        tl.store(Y + out, tl.where(live, h, 0.0), mask=inb)
        carry = tl.sum(tl.where(k[:, None] == CHUNK - 1, h, 0.0), 0)


@triton.jit
def _scan_back(P, H0, HS, DY, DHN, DP, DH0, LEN, T, B, H, n_chunks, KIND: tl.constexpr,
               GATES: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    """The gradients of ``_scan``: DP (T, B, G·H) of the projections and DH0 (B, H), from DY and
    DHN = dL/dh_n, by the reverse scan g_t = δy_t + a_{t+1} g_{t+1} (g_T = dL/dh_n, a_T = 1)."""
    b = tl.program_id(0)
    j = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mk = j < H
    length = tl.load(LEN + b)
    carry = tl.load(DHN + b * H + j, mask=mk, other=0.0)
    h0 = tl.load(H0 + b * H + j, mask=mk, other=0.0)
    dh0 = carry * 0.0
    k = tl.arange(0, CHUNK)
    GH = GATES * H
    for q in range(n_chunks):
        t = (n_chunks - q) * CHUNK - 1 - k  # descending within the chunk
        inb = (t < T)[:, None] & mk[None, :]
        live = (t < length)[:, None] & mk[None, :]
        dy = tl.load(DY + (t[:, None] * B + b) * H + j[None, :], mask=live, other=0.0)
        nxt = ((t + 1) < length)[:, None] & mk[None, :]
        a1, _ = _coefficients(P, ((t[:, None] + 1) * B + b) * GH + j[None, :], nxt, H, KIND)
        a1 = tl.where(nxt, a1, 1.0)
        A, C = tl.associative_scan((a1, dy), 0, _combine)
        g = A * carry[None, :] + C  # g_t
        carry = tl.sum(tl.where(k[:, None] == CHUNK - 1, g, 0.0), 0)
        first = (t == 0)[:, None]
        hp = tl.load(HS + ((t[:, None] - 1) * B + b) * H + j[None, :],
                     mask=inb & (t >= 1)[:, None], other=0.0)
        hp = tl.where(first, h0[None, :], hp)
        da = g * hp  # δa_t; δb_t = g_t
        off = (t[:, None] * B + b) * GH + j[None, :]
        if KIND == 0:
            z = sigmoid(tl.load(P + off, mask=live, other=0.0))
            ht, dht = _positive(tl.load(P + off + H, mask=live, other=0.0))
            tl.store(DP + off, tl.where(live, (g * ht - da) * z * (1.0 - z), 0.0), mask=inb)
            tl.store(DP + off + H, tl.where(live, g * z * dht, 0.0), mask=inb)
            a0 = 1.0 - z
        else:
            f = sigmoid(tl.load(P + off, mask=live, other=0.0))
            i = sigmoid(tl.load(P + off + H, mask=live, other=0.0))
            ht, dht = _positive(tl.load(P + off + 2 * H, mask=live, other=0.0))
            s = f + i
            di_n = g * ht  # dL/di', with dL/df' = δa
            tl.store(DP + off, tl.where(live, i * (da - di_n) / (s * s) * f * (1.0 - f), 0.0),
                     mask=inb)
            tl.store(DP + off + H, tl.where(live, f * (di_n - da) / (s * s) * i * (1.0 - i), 0.0),
                     mask=inb)
            tl.store(DP + off + 2 * H, tl.where(live, g * i / s * dht, 0.0), mask=inb)
            a0 = f / s
        dh0 += tl.sum(tl.where(first & live, a0 * g, 0.0), 0)
    tl.store(DH0 + b * H + j, dh0, mask=mk)


def _launch_shape(T: int, H: int) -> tuple[int, int]:
    """(CHUNK, BLOCK): steps per scan and units per program. 32 × 32 with 4 warps keeps the
    backward's scan in registers on sm_90 (64 × 64 spilled, by ptxas's count)."""
    return min(32, max(16, triton.next_power_of_2(T))), min(32, cm.block(H))


class _Loop(cm.Loop):
    """inputs (P, h0); outs (y, h_n)."""

    def __init__(self, kind: str, lengths: Tensor) -> None:
        self.kind, self.lengths = kind, lengths

    def forward(self, P, h0):
        T, B, GH = P.shape
        H = h0.shape[-1]
        HS, Y = cm.zeros(T, B, H, like=P), cm.zeros(T, B, H, like=P)
        h0 = h0.detach().contiguous()
        chunk, blk = _launch_shape(T, H)
        _scan[(B, triton.cdiv(H, blk))](P, h0, HS, Y, self.lengths, T, B, H, KIND=KINDS[self.kind],
                                        GATES=GH // H, CHUNK=chunk, BLOCK=blk, **cm.LAUNCH)
        return (Y, HS[T - 1].clone()), (P, h0, HS)

    def backward(self, saved, grads):
        P, h0, HS = saved
        T, B, GH = P.shape
        H = h0.shape[-1]
        dY = torch.zeros_like(HS) if grads[0] is None else grads[0].contiguous()
        dhn = torch.zeros_like(h0) if grads[1] is None else grads[1].contiguous()
        DP, DH0 = torch.zeros_like(P), torch.zeros_like(h0)
        chunk, blk = _launch_shape(T, H)
        _scan_back[(B, triton.cdiv(H, blk))](P, h0, HS, dY, dhn, DP, DH0, self.lengths, T, B, H,
                                             triton.cdiv(T, chunk), KIND=KINDS[self.kind],
                                             GATES=GH // H, CHUNK=chunk, BLOCK=blk, **cm.LAUNCH)
        return DP, DH0


def _row_order(lengths: Tensor, T: int) -> Tensor:
    """(T, B) time index reversing each row's first ``length`` steps (its own inverse)."""
    t = torch.arange(T, device=lengths.device)[:, None]
    return torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def _run(x: Tensor, state: tuple[Tensor, ...], w: Mapping[str, Tensor | None],
         batch_sizes: Tensor | None, reverse: bool, opts: Any,
         masks: Mapping[str, Tensor | None], record: bool):
    """One direction of one minGRU/minLSTM layer (opts.mode) on the Triton engine.

    Shapes: x (T, B, I); state (h0 (B, H),); w_ih (G·H, I), G = 2 (minGRU) or 3 (minLSTM);
    returns y (T, B, H), (h_n,), and the gates each (T, B, H) when ``record``.
    """
    kind = opts.mode
    (h0,) = state
    T, B = x.shape[0], x.shape[1]
    w_ih, b_ih = w["w_ih"], w.get("b_ih")
    assert w_ih is not None
    P = x @ w_ih.t() if b_ih is None else torch.addmm(b_ih, x.reshape(T * B, -1), w_ih.t())
    P = P.reshape(T, B, w_ih.shape[0])  # (T, B, G·H)
    lengths = torch.full((B,), T, dtype=torch.int32)
    if batch_sizes is not None:
        lengths = (batch_sizes[:, None] > torch.arange(B)[None, :]).sum(0).to(torch.int32)
    lengths = lengths.to(x.device)
    order = _row_order(lengths.long(), T) if reverse else None
    Pin = P if order is None else P.gather(0, order[..., None].expand_as(P))
    loop = _Loop(kind, lengths)
    loop.inputs = (Pin.contiguous(), h0)
    originals, keys = cm.originals_of(x, state, w)

    def recompute(*o: Tensor) -> tuple[Tensor, ...]:
        xr, sr, wr = cm.rebuild(o, keys, 1, w)
        y, final, _ = cm.reference.run(xr, sr, wr, batch_sizes, reverse,
                                       cm.cells.CellOptions(kind), {}, False)
        return (y, *final)

    loop.recompute = recompute  # type: ignore[method-assign]
    y, hn = cm.launch(loop, x, originals)
    if order is not None:
        y = y.gather(0, order[..., None].expand_as(y))
    gates = None
    if record:
        live = (torch.arange(T, device=x.device)[:, None] < lengths[None, :])[..., None]
        gates = {k: torch.where(live, v, 0.0).detach()
                 for k, v in cm.cells.MIN_GATES[kind](P.detach()).items()}
    return y, (hn,), gates


run = cm.dense_run(_run)
