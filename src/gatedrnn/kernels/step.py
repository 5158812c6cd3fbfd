"""One inference step of a cell, for streaming: the GEMVs plus one fused pass, no autograd.

A streaming caller (one step at B = 1, state carried between calls) pays per call for Python, not
for arithmetic: torch.nn.LSTMCell spends ~25 µs on a step whose GEMV takes ~3 µs. Here one numba
call does both products (through torch's own BLAS, see ``common.gemm``) and the gate math, into
freshly allocated outputs. The equations are those of ``gatedrnn.cells`` (LSTM and GRU in both
forms, Elman RNN) without the training-only variants; the cell modules use this path only when no
gradient is needed.

Legend: x input (B, I); h, c state (B, H); wi = W_ih (G·H, I); wh = W_hh (G·H, H); bi, bh biases
(G·H,) (zeros when the cell has none); a gate pre-activations (B, G·H).
"""

from __future__ import annotations

import numba
import numpy as np

from .common import JIT, gemm_scratch, prod, sigmoid, tanh


class WeightViews:
    """numpy views of (W_ih, W_hh, b_ih, b_hh), rebuilt only when a parameter changed or was
    replaced; absent biases read as zeros. One per layer and direction (or per cell).

    Holding the parameters themselves (not their ids) makes a replaced parameter a miss, and the
    key and the arrays live in one tuple so a concurrent reader never sees half of an update.
    """

    __slots__ = ("_entry",)

    def __init__(self) -> None:
        self._entry: tuple = ((), ())

    def get(self, params: tuple) -> tuple:
        key, arrays = self._entry
        if len(key) == 4 and all(p is q and (p is None or p._version == v)
                                 for p, (q, v) in zip(params, key)):
            return arrays
        wi, wh = (p.detach().contiguous().numpy() for p in params[:2])
        if params[2] is None:
            bi = bh = np.zeros(wi.shape[0], wi.dtype)
        else:
            bi, bh = (p.detach().contiguous().numpy() for p in params[2:])
        arrays = (wi, wh, bi, bh)
        self._entry = (tuple((p, None if p is None else p._version) for p in params), arrays)
        return arrays


def step(mode: str, reset_after: bool, x: np.ndarray, state: list[np.ndarray],
         weights: tuple) -> tuple[np.ndarray, ...]:
    """One step of one cell on numpy arrays: x (B, I), state [h] or [h, c] (B, H); returns the new
    state as a tuple. ``weights`` comes from ``WeightViews.get``."""
    wi, wh, bi, bh = weights
    scratch = gemm_scratch(x.dtype)
    if mode == "lstm":
        return lstm_step(x, state[0], state[1], wi, wh, bi, bh, scratch)
    if mode == "gru":
        return (gru_step(x, state[0], wi, wh, bi, bh, reset_after, scratch),)
    return (rnn_step(x, state[0], wi, wh, bi, bh, mode == "rnn_relu", scratch),)


@numba.njit(**JIT)
def lstm_step(x, h, c, wi, wh, bi, bh, scratch):
    """c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c'); returns (h', c')."""
    B, H = c.shape
    a = np.empty((B, 4 * H), x.dtype)
    prod(x, wi, a, True, 0.0, scratch)
    prod(h, wh, a, True, 1.0, scratch)
    h2 = np.empty((B, H), x.dtype)
    c2 = np.empty((B, H), x.dtype)
    for b in range(B):
        for j in range(H):
            i = sigmoid(a[b, j] + bi[j] + bh[j])
            f = sigmoid(a[b, H + j] + bi[H + j] + bh[H + j])
            g = tanh(a[b, 2 * H + j] + bi[2 * H + j] + bh[2 * H + j])
            o = sigmoid(a[b, 3 * H + j] + bi[3 * H + j] + bh[3 * H + j])
            cn = f * c[b, j] + i * g
            c2[b, j] = cn
            h2[b, j] = o * tanh(cn)
    return h2, c2


@numba.njit(**JIT)
def gru_step(x, h, wi, wh, bi, bh, reset_after, scratch):
    """h' = (1 − z) ⊙ n + z ⊙ h, with n in either form (see ``cells.gru_cell``)."""
    B, H = h.shape
    u = np.empty((B, 3 * H), x.dtype)
    prod(x, wi, u, True, 0.0, scratch)
    h2 = np.empty((B, H), x.dtype)
    if reset_after:
        v = np.empty((B, 3 * H), x.dtype)
        prod(h, wh, v, True, 0.0, scratch)
        for b in range(B):
            for j in range(H):
                r = sigmoid(u[b, j] + bi[j] + v[b, j] + bh[j])
                z = sigmoid(u[b, H + j] + bi[H + j] + v[b, H + j] + bh[H + j])
                n = tanh(u[b, 2 * H + j] + bi[2 * H + j] + r * (v[b, 2 * H + j] + bh[2 * H + j]))
                h2[b, j] = (1 - z) * n + z * h[b, j]
        return h2
    v = np.empty((B, 2 * H), x.dtype)  # a column slice of the (B, 3H) buffer would not be dense
    prod(h, wh[: 2 * H], v, True, 0.0, scratch)
    rh = np.empty((B, H), x.dtype)
    z = np.empty((B, H), x.dtype)
    for b in range(B):
        for j in range(H):
            r = sigmoid(u[b, j] + bi[j] + v[b, j] + bh[j])
            z[b, j] = sigmoid(u[b, H + j] + bi[H + j] + v[b, H + j] + bh[H + j])
            rh[b, j] = r * h[b, j]
    n_in = np.empty((B, H), x.dtype)
    prod(rh, wh[2 * H:], n_in, True, 0.0, scratch)
    for b in range(B):
        for j in range(H):
            n = tanh(u[b, 2 * H + j] + bi[2 * H + j] + n_in[b, j] + bh[2 * H + j])
            h2[b, j] = (1 - z[b, j]) * n + z[b, j] * h[b, j]
    return h2


@numba.njit(**JIT)
def rnn_step(x, h, wi, wh, bi, bh, relu, scratch):
    """h' = φ(W_ih x + b_ih + W_hh h + b_hh)."""
    B, H = h.shape
    a = np.empty((B, H), x.dtype)
    prod(x, wi, a, True, 0.0, scratch)
    prod(h, wh, a, True, 1.0, scratch)
    for b in range(B):
        for j in range(H):
            s = a[b, j] + bi[j] + bh[j]
            a[b, j] = max(s, 0.0) if relu else tanh(s)
    return a
