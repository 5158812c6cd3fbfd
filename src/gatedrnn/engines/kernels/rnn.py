"""The fused CPU Elman RNN engine: one direction of one layer, forward and hand-derived backward.

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, (h_n,), gates)

is the engine interface of ``gatedrnn.equations.reference.run`` (contract and shapes there) for the modes
"rnn_tanh" and "rnn_relu"; the equations are ``gatedrnn.equations.cells.rnn_cell``:

    h' = φ(W_ih x + b_ih + W_hh (m ⊙ h) + b_hh),  φ = tanh or relu;  zoneout h' = d h + (1 − d) h'

The work is split so that almost every flop is a large GEMM:

- forward: G = x W_ih^T + b_ih + b_hh for all steps in one ``addmm``; then the numba loop in
  ``rnn_steps.forward`` (per step one recurrent GEMM into G[t] plus one fused activation pass;
  in inference on a W_hh packed once per call, ``kernels.packed``, same bits).
  G becomes the output y in place, so the forward pass allocates one (T, B, H) buffer; only
  zoneout keeps φ(a) apart from y (a second buffer, which backward reads).
- backward (BPTT, equations in ``rnn_steps.backward``): δa_t = δh_t ⊙ φ'(a_t) with
  φ'(a) = 1 − h'² (tanh) or 1[a > 0] (relu), δh_{t−1} = (δa_t W_hh) ⊙ m (+ d ⊙ δh_t with
  zoneout); the loop leaves dA = δa for all steps, then dx = dA W_ih, dW_ih = dA^T x,
  dW_hh = Σ_t δa_t^T (m ⊙ h_{t−1}) and db = Σ dA are one GEMM (or sum) each.

Backward needs only y (and φ(a) with zoneout), so training stores nothing beyond the output;
inference stores nothing per step. From B = 4 rows the loops run the rows in two halves on the two
threads of torch's own OpenMP team (``threads.split_rows``; the per-step product of an Elman RNN is too
small for a two-thread GEMM to pay, see the measurements there). Eager calls use an
``fused.FusedFunction``; under torch.compile the same code runs as custom ops (``compiled``). ``record``
returns ``{}``: the Elman RNN has no gates.

Example:
    >>> import torch
    >>> from gatedrnn.equations.cells import CellOptions
    >>> from gatedrnn.engines.kernels import rnn
    >>> T, B, I, H = 5, 2, 3, 4
    >>> w = {"w_ih": torch.randn(H, I), "w_hh": torch.randn(H, H)}
    >>> y, (h,), _ = rnn.run(torch.randn(T, B, I), (torch.zeros(B, H),), w, None, False,
    ...                      CellOptions("rnn_tanh"), {}, False)
    >>> y.shape, h.shape
    (torch.Size([5, 2, 4]), torch.Size([2, 4]))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import compiled
from . import rnn_steps as steps
from .common import gemm_scratch, off, recurrent_weight_grad
from .fused import Call, Kernel, apply, needs_autograd, numpy_dtype, register
from .linear import linear, matmul
from .packed import pack_weight
from .threads import split_rows

TEAM_MIN_ROWS = 2  # in torch's OpenMP team, two threads from B = 2 * 2 rows (threads.split_rows)
POOL_MIN_ROWS = 64  # the same without torch's libgomp (threads.split_rows' measurements)
MODES = ("rnn_tanh", "rnn_relu")


def _masks_np(call: Call, B: int, H: int, nd: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(m (B, H), zh (T, B, H) or (1, 1, H)) as the kernels read them; size 0 when absent."""
    td = torch.float32 if nd == np.float32 else torch.float64
    m = off(nd, 2) if call.m is None else call.m.detach().to(td).expand(B, H).contiguous().numpy()
    zh = call.zh
    if zh is None:
        z = off(nd, 3)
    elif zh.dim() == 0:
        z = np.full((1, 1, H), float(zh), nd)
    else:
        z = zh.detach().to(td).expand(len(call.sizes), B, H).contiguous().numpy()
    return m, z


def _forward(call: Call, x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
             h0: Tensor, w_hh: Tensor, keep: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """The forward pass on plain tensors (no autograd): y (T, B, H), h_n (B, H) and, when
    ``keep`` and zoneout is on, φ(a) (T, B, H) for the backward pass (else None: y is enough)."""
    T, B, I = x.shape
    H = h0.shape[-1]
    nd = numpy_dtype(x)
    x, w_ih, h0, w_hh = x.detach(), w_ih.detach(), h0.detach(), w_hh.detach()
    bias = b_ih if b_hh is None else (b_hh if b_ih is None else b_ih + b_hh)
    x2 = x.reshape(T * B, I)
    G = linear(x2, w_ih, bias)
    G = G.view(T, B, H)  # (T, B, H), becomes φ(a) and, unless kept apart, y
    sep = call.zh is not None  # zoneout: y = d h + (1 − d) φ(a) needs its own buffer
    Y = torch.empty((T, B, H), dtype=x.dtype) if sep else G
    hw = h0.contiguous().clone()  # becomes h_n
    m, zh = _masks_np(call, B, H, nd)
    whh = w_hh.contiguous().numpy()
    args = (G.numpy(), Y.numpy(), hw.numpy(), call.sizes, call.reverse, call.relu,
            whh, m, zh, np.empty((B, H), nd) if m.size else off(nd, 2))
    wp = pack_weight(whh, T, B, keep)

    def work(part: int, lo: int, hi: int) -> None:  # rows [lo, hi); scratch of its own
        steps.forward(*args, lo, hi, gemm_scratch(nd), wp)

    split_rows(B, work, POOL_MIN_ROWS, TEAM_MIN_ROWS, size=T * B * H * H)
    return Y, hw, (G if sep and keep else None)


def _backward(call: Call, saved: tuple, dy: Tensor | None, dhn: Tensor | None,
              needs: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
    """Gradients (dx, dW_ih, db, dh0, dW_hh) from dL/dy and dL/dh_n; ``needs`` flags x, w_ih,
    the biases, h0, w_hh (None where not needed, except dh0, which the loop produces anyway)."""
    x, w_ih, h0, w_hh, y, act = saved
    T, B, H = y.shape
    nd = numpy_dtype(y)
    A = y if act is None else act
    dY = torch.zeros_like(y) if dy is None else dy.contiguous()
    dh = torch.zeros_like(h0) if dhn is None else dhn.contiguous().clone()  # becomes dL/dh0
    dA = torch.empty_like(y)
    m, zh = _masks_np(call, B, H, nd)
    tmp = np.empty((B, H), nd) if (m.size or zh.size) else off(nd, 2)
    kept = np.empty((B, H), nd) if zh.size else off(nd, 2)
    args = (A.numpy(), dY.numpy(), dh.numpy(), dA.numpy(), call.sizes, call.reverse, call.relu,
            w_hh.detach().contiguous().numpy(), m, zh, tmp, kept)

    def work(part: int, lo: int, hi: int) -> None:
        steps.backward(*args, lo, hi, gemm_scratch(nd))

    split_rows(B, work, POOL_MIN_ROWS, TEAM_MIN_ROWS, size=T * B * H * H)
    dA2 = dA.view(T * B, H)
    x2 = x.detach().reshape(T * B, x.shape[2])
    dx = matmul(dA2, w_ih.detach()).view(x.shape) if needs[0] else None
    dw_ih = torch.mm(dA2.t(), x2) if needs[1] else None  # one GEMM over all steps
    db = dA2.sum(0) if needs[2] or needs[3] else None
    dw_hh = recurrent_weight_grad((dA,), y, h0.detach(), call.m, call.sizes,
                                  call.reverse) if needs[5] else None
    return dx, dw_ih, db, dh, dw_hh


def _kernel_forward(call: Call, x, w_ih, b_ih, b_hh, h0, w_hh, keep: bool):
    """``fused.Kernel.forward``: outs (y, h_n), bufs (φ(a) when kept apart from y, else None)."""
    y, hn, act = _forward(call, x, w_ih, b_ih, b_hh, h0, w_hh, keep)
    return (y, hn), (act,)


def _kernel_backward(call: Call, inputs, outs, bufs, grads, needs):
    """``fused.Kernel.backward``: a gradient per input (x, w_ih, b_ih, b_hh, h0, w_hh)."""
    x, w_ih, b_ih, b_hh, h0, w_hh = inputs
    dy, dhn = grads
    dx, dw_ih, db, dh, dw_hh = _backward(call, (x, w_ih, h0, w_hh, outs[0], bufs[0]), dy, dhn, needs)
    db_ih = db if needs[2] else None
    db_hh = (db_ih.clone() if db_ih is not None else db) if needs[3] else None  # never alias
    return dx, dw_ih, db_ih, db_hh, dh, dw_hh


def _kernel_fake(inputs, opts, masks) -> list:
    """``fused.Kernel.fake``: the shapes of outs and bufs (keep=True), None where absent."""
    x, h0 = inputs[0], inputs[4]
    T, B, H = x.shape[0], x.shape[1], h0.shape[-1]
    return [(T, B, H), (B, H), (T, B, H) if masks.get("zoneout_h") is not None else None]


KERNEL = register(MODES, Kernel(_kernel_forward, _kernel_backward, _kernel_fake, 2))


def run(
    x: Tensor,
    state: tuple[Tensor, ...],
    w: Mapping[str, Tensor | None],
    batch_sizes: Tensor | None,
    reverse: bool,
    opts: Any,
    masks: Mapping[str, Tensor | None],
    record: bool,
) -> tuple[Tensor, tuple[Tensor], dict[str, Tensor] | None]:
    """One direction of one Elman RNN layer on the fused engine (contract: ``reference.run``).

    Shapes: x (T, B, I); state (h0 (B, H),); returns y (T, B, H), (h_n,), and ``{}`` when
    ``record`` (no gates), else None. Masks: "recurrent" (B, H), "zoneout_h" (T, B, H) or 0-dim.
    Under torch.compile the loop runs as custom ops (``kernels.compiled``), without a graph break.
    """
    if opts.mode not in MODES:
        raise ValueError(f"kernels.rnn runs modes {MODES}, got {opts.mode!r}")
    (h0,) = state
    full = (x, w["w_ih"], w.get("b_ih"), w.get("b_hh"), h0, w["w_hh"])
    gates: dict[str, Tensor] | None = {} if record else None
    if torch.compiler.is_compiling():
        (y, hn), _ = compiled.run(full, opts, batch_sizes, reverse, masks, torch.is_grad_enabled())
        return y, (hn,), gates
    call = Call(batch_sizes, x.shape[0], x.shape[1], reverse, opts, masks)
    if needs_autograd(full):
        y, hn = apply(KERNEL, call, full, x, state, w)
    else:
        (y, hn), _ = _kernel_forward(call, *full, keep=False)
    return y, (hn,), gates
