"""One inference step of a cell, for streaming: the GEMVs plus one fused pass, no autograd.

A streaming caller (one step at B = 1, state carried between calls) pays per call for Python, not
for arithmetic: torch.nn.LSTMCell spends ~25 µs on a step whose GEMV takes ~3 µs. So the Python
side here does as little as it can: the kernels take the tensors' addresses (``data_ptr``, 0.1 µs
each) rather than numpy views of them (0.7 µs each), and the caller, which has checked shapes,
dtype, device and contiguity, hands the parameters over as they are, with no cache to keep in step.
One numba call then does both products (``common.prod``) and the gate math into a fresh output.

The equations are those of ``gatedrnn.equations.cells`` (LSTM and GRU in both forms, Elman RNN) without the
training-only variants; the modules use this path only when no gradient is needed.

Legend: x input (B, I); h, c state (B, H); wi = W_ih (G·H, I); wh = W_hh (G·H, H); bi, bh biases
(G·H,) (zeros when the cell has none); a gate pre-activations (B, G·H). ``like`` is an empty array
of the dtype: it tells the kernel what the addresses point to.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import torch
from numba.core import types
from numba.extending import intrinsic
from torch import Tensor

# sigmoid and tanh are inlined from common (saturating exactly where torch's do);
# numba's cache is keyed on this file, so an edit to them must touch this file too.
from .common import JIT, prod, sigmoid, tanh

LIKE = {torch.float32: np.zeros(0, np.float32), torch.float64: np.zeros(0, np.float64)}


@intrinsic
def _pointer(typingctx, addr, like):
    """The integer ``addr`` as a pointer to elements of ``like``'s dtype."""
    if not isinstance(addr, types.Integer) or not isinstance(like, types.Array):
        return None
    sig = types.CPointer(like.dtype)(addr, like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@numba.njit(inline="always", **JIT)
def _view(addr, shape, like):
    """The C-contiguous array of ``shape`` at ``addr`` (memory owned by a live torch tensor)."""
    return numba.carray(_pointer(addr, like), shape)


@numba.njit(inline="always", **JIT)
def _biases(pbi, pbh, n, like):
    """b_ih and b_hh, or zeros for a cell without biases (address 0)."""
    if pbi == 0:
        zero = np.zeros(n, like.dtype)
        return zero, zero
    return _view(pbi, (n,), like), _view(pbh, (n,), like)


@numba.njit(inline="always", **JIT)
def _scratch(like):
    """``common.gemm``'s argument scratch, used only from three rows on (``common.prod``)."""
    return np.zeros(8, np.int32), np.zeros(2, like.dtype)


@numba.njit(inline="always", **JIT)
def _outputs(py, ldy, phn, B, H, like):
    """Where h' goes: y is (B, ldy) from ``py`` (already at this direction's column, so that the
    directions of a layer fill one (B, D·H) output), whose rows' first H entries take h'; hn
    (B, H) takes a copy when phn is not 0 (else it is empty)."""
    y = _view(py, (B, ldy), like)
    return y, (_view(phn, (B, H), like) if phn != 0 else np.empty((0, H), like.dtype))


@numba.njit(inline="always", **JIT)
def _keep(y, hn, b, H):
    """Copy row b's h' from y into hn, when hn is wanted. The gate loops write one dense row
    only: writing two arrays there, one of them strided, stopped LLVM vectorising (1.3 µs)."""
    if hn.shape[0] > 0:
        hn[b] = y[b, :H]


@numba.njit(**JIT)
def lstm_step(like, px, ph, pc, pwi, pwh, pbi, pbh, B, I, H, py, ldy, phn, pcn, flag):
    """c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c'); writes h' to y (and hn), c' to cn (B, H)."""
    x, h, c = _view(px, (B, I), like), _view(ph, (B, H), like), _view(pc, (B, H), like)
    wi, wh = _view(pwi, (4 * H, I), like), _view(pwh, (4 * H, H), like)
    bi, bh = _biases(pbi, pbh, 4 * H, like)
    y, hn = _outputs(py, ldy, phn, B, H, like)
    cn = _view(pcn, (B, H), like)
    scratch = _scratch(like)
    a = np.empty((B, 4 * H), like.dtype)
    prod(x, wi, a, True, 0.0, scratch)
    prod(h, wh, a, True, 1.0, scratch)
    for b in range(B):
        ab, yb, cb, cp = a[b], y[b, :H], cn[b], c[b]
        for j in range(H):
            i = sigmoid(ab[j] + bi[j] + bh[j])
            f = sigmoid(ab[H + j] + bi[H + j] + bh[H + j])
            g = tanh(ab[2 * H + j] + bi[2 * H + j] + bh[2 * H + j])
            o = sigmoid(ab[3 * H + j] + bi[3 * H + j] + bh[3 * H + j])
            cn_ = f * cp[j] + i * g
            cb[j] = cn_
            yb[j] = o * tanh(cn_)
        _keep(y, hn, b, H)


@numba.njit(**JIT)
def gru_step(like, px, ph, pc, pwi, pwh, pbi, pbh, B, I, H, py, ldy, phn, pcn, reset_after):
    """h' = (1 − z) ⊙ n + z ⊙ h, with n in either form (see ``cells.gru_cell``); writes h'."""
    x, h = _view(px, (B, I), like), _view(ph, (B, H), like)
    wi, wh = _view(pwi, (3 * H, I), like), _view(pwh, (3 * H, H), like)
    bi, bh = _biases(pbi, pbh, 3 * H, like)
    y, hn = _outputs(py, ldy, phn, B, H, like)
    scratch = _scratch(like)
    u = np.empty((B, 3 * H), like.dtype)
    prod(x, wi, u, True, 0.0, scratch)
    one = like.dtype.type(1.0)
    if reset_after:
        v = np.empty((B, 3 * H), like.dtype)
        prod(h, wh, v, True, 0.0, scratch)
        for b in range(B):
            for j in range(H):
                r = sigmoid(u[b, j] + bi[j] + v[b, j] + bh[j])
                z = sigmoid(u[b, H + j] + bi[H + j] + v[b, H + j] + bh[H + j])
                n = tanh(u[b, 2 * H + j] + bi[2 * H + j] + r * (v[b, 2 * H + j] + bh[2 * H + j]))
                y[b, j] = (one - z) * n + z * h[b, j]
            _keep(y, hn, b, H)
        return
    v = np.empty((B, 2 * H), like.dtype)  # a column slice of the (B, 3H) buffer would not be dense
    prod(h, wh[: 2 * H], v, True, 0.0, scratch)
    rh = np.empty((B, H), like.dtype)
    z = np.empty((B, H), like.dtype)
    for b in range(B):
        for j in range(H):
            r = sigmoid(u[b, j] + bi[j] + v[b, j] + bh[j])
            z[b, j] = sigmoid(u[b, H + j] + bi[H + j] + v[b, H + j] + bh[H + j])
            rh[b, j] = r * h[b, j]
    n_in = np.empty((B, H), like.dtype)
    prod(rh, wh[2 * H:], n_in, True, 0.0, scratch)
    for b in range(B):
        for j in range(H):
            n = tanh(u[b, 2 * H + j] + bi[2 * H + j] + n_in[b, j] + bh[2 * H + j])
            y[b, j] = (one - z[b, j]) * n + z[b, j] * h[b, j]
        _keep(y, hn, b, H)


@numba.njit(**JIT)
def rnn_step(like, px, ph, pc, pwi, pwh, pbi, pbh, B, I, H, py, ldy, phn, pcn, relu):
    """h' = φ(W_ih x + b_ih + W_hh h + b_hh); writes h'."""
    x, h = _view(px, (B, I), like), _view(ph, (B, H), like)
    wi, wh = _view(pwi, (H, I), like), _view(pwh, (H, H), like)
    bi, bh = _biases(pbi, pbh, H, like)
    y, hn = _outputs(py, ldy, phn, B, H, like)
    scratch = _scratch(like)
    a = np.empty((B, H), like.dtype)
    prod(x, wi, a, True, 0.0, scratch)
    prod(h, wh, a, True, 1.0, scratch)
    for b in range(B):
        for j in range(H):
            s = a[b, j] + bi[j] + bh[j]
            y[b, j] = max(s, 0.0) if relu else tanh(s)
        _keep(y, hn, b, H)


def kernel(mode: str, reset_after: bool) -> tuple[Any, bool]:
    """The step kernel of a cell and its last argument (reset_after for the GRU, relu for the
    Elman RNN; unused by the LSTM). All three take the same flat arguments, on addresses
    (``Tensor.data_ptr()``) of C-contiguous CPU memory:

        (like, x, h, c, W_ih, W_hh, b_ih, b_hh, B, I, H, y, ldy, hn, cn, flag)

    x (B, I); h and, for the LSTM, c (B, H) (else 0); both biases 0 when absent; ``like`` =
    ``LIKE[dtype]``. h' goes into the (B, ldy) rows at ``y`` (their first H columns), and also
    into hn (B, H) unless hn is 0; the LSTM's c' into cn (B, H). Flat integers and no wrapper:
    this is the hot path of a ~12 µs call. The caller checks shapes, dtype, device and contiguity
    (``plain``): the kernels cannot.
    """
    if mode == "lstm":
        return lstm_step, False
    if mode == "gru":
        return gru_step, reset_after
    return rnn_step, mode == "rnn_relu"


def plain(t: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> bool:
    """Whether the kernels may read ``t`` by address: a CPU tensor of exactly this shape and
    dtype, C-contiguous. None (an absent bias) passes."""
    return t is None or (t.dtype is dtype and t.is_cpu and t.shape == shape and t.is_contiguous())
