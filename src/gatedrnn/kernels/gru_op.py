"""The fused GRU as two ``torch.library`` custom ops, for ``torch.compile``.

Eager calls go through ``gru.run``'s autograd.Function (less overhead). Under torch.compile the
same ``_forward``/``_backward`` run as opaque ops with shape functions, so the compiled graph has
no graph break around the numba loop and AOTAutograd sees the backward as one op too (the same
design as ``lstm_op``).

Ops cannot return None: absent tensors travel as 0-element tensors (``_none`` / ``_some``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells import CellOptions
from . import gru
from .fused import Call


def _none(t: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty(0) if t is None else t


def _some(t: Tensor) -> Tensor | None:
    return None if t.numel() == 0 and t.dim() == 1 else t


def _call(sizes: Tensor | None, B: int, T: int, reverse: bool, reset_after: bool, eps: float, m,
          zh) -> Call:
    opts = CellOptions("gru", reset_after=reset_after, ln_eps=eps)
    return Call(sizes, T, B, reverse, opts, {"recurrent": m, "zoneout_h": zh})


@torch.library.custom_op("gatedrnn::gru_forward", mutates_args=())
def gru_forward(xin: Tensor, w_ih: Tensor | None, b_ih: Tensor | None, b_hh: Tensor | None,
                h0: Tensor, w_hh: Tensor, lnh: Tensor | None, sizes: Tensor | None,
                m: Tensor | None, zh: Tensor | None, reverse: bool, reset_after: bool, eps: float,
                keep: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """y, h_n and the buffers G, VN, Q, XH, RS (see ``gru._forward``)."""
    call = _call(sizes, xin.shape[1], xin.shape[0], reverse, reset_after, eps, m, zh)
    y, hn, (G, *rest) = gru._forward(call, xin, w_ih, b_ih, b_hh, h0, w_hh, lnh, keep)
    if w_ih is None and G.data_ptr() == xin.data_ptr():
        G = G.clone()  # an op's output must not alias its input
    return (y, hn, G, *(_none(b, y) for b in rest))


@gru_forward.register_fake
def _(xin, w_ih, b_ih, b_hh, h0, w_hh, lnh, sizes, m, zh, reverse, reset_after, eps, keep):
    T, B = xin.shape[0], xin.shape[1]
    H = h0.shape[-1]
    e = xin.new_empty
    ln = reset_after and lnh is not None
    return (e(T, B, H), e(B, H), e(T, B, 3 * H),
            e(T, B, H) if keep and reset_after else e(0),
            e(T, B, H) if keep and not reset_after else e(0),
            e(T, B, 3 * H) if keep and ln else e(0),
            e(T if keep else 1, B) if ln else e(0))


@torch.library.custom_op("gatedrnn::gru_backward", mutates_args=())
def gru_backward(dy: Tensor, dhn: Tensor, xin: Tensor, w_ih: Tensor | None, h0: Tensor,
                 w_hh: Tensor, lnh: Tensor | None, y: Tensor, G: Tensor, VN: Tensor, Q: Tensor,
                 XH: Tensor, RS: Tensor, sizes: Tensor | None, m: Tensor | None,
                 zh: Tensor | None, reverse: bool, reset_after: bool, eps: float) -> list[Tensor]:
    """dx (or dU), dW_ih, db_ih, db_hh, dh0, dW_hh, dlnh; 0-element when absent."""
    call = _call(sizes, G.shape[1], G.shape[0], reverse, reset_after, eps, m, zh)
    saved = (xin, w_ih, h0, w_hh, lnh, y, G, _some(VN), _some(Q), _some(XH), _some(RS))
    dx, dw_ih, db_ih, db_hh, dh, dw_hh, dlnh = gru._backward(call, saved, dy, dhn, (True,) * 7)
    if w_ih is None:  # layer norm: the biases live in the precomputed input and in lnh
        db_ih = db_hh = None
    return [_none(g, G) for g in (dx, dw_ih, db_ih, db_hh, dh, dw_hh, dlnh)]


@gru_backward.register_fake
def _(dy, dhn, xin, w_ih, h0, w_hh, lnh, y, G, VN, Q, XH, RS, sizes, m, zh, reverse,
      reset_after, eps):
    e = G.new_empty
    b = None if w_ih is None else w_hh.new_empty(G.shape[2])
    like = [xin if w_ih is not None else G, w_ih, b, b, h0, w_hh, lnh]
    return [e(0) if t is None else e(t.shape) for t in like]


def _setup(ctx, inputs, output) -> None:
    (xin, w_ih, b_ih, b_hh, h0, w_hh, lnh, sizes, m, zh, reverse, reset_after, eps,
     keep) = inputs
    ctx.save_for_backward(xin, w_ih, h0, w_hh, lnh, sizes, m, zh, output[0], *output[2:])
    ctx.reverse, ctx.reset_after, ctx.eps = reverse, reset_after, eps
    ctx.has_b = (b_ih is not None, b_hh is not None)


def _grad(ctx, dy, dhn, *_):
    xin, w_ih, h0, w_hh, lnh, sizes, m, zh, y, G, VN, Q, XH, RS = ctx.saved_tensors
    dy = torch.zeros_like(y) if dy is None else dy
    dhn = torch.zeros_like(h0) if dhn is None else dhn
    dx, dw_ih, db_ih, db_hh, dh, dw_hh, dlnh = gru_backward(
        dy, dhn, xin, w_ih, h0, w_hh, lnh, y, G, VN, Q, XH, RS, sizes, m, zh, ctx.reverse,
        ctx.reset_after, ctx.eps)
    return (dx, dw_ih if w_ih is not None else None, db_ih if ctx.has_b[0] else None,
            db_hh if ctx.has_b[1] else None, dh, dw_hh,
            dlnh if lnh is not None else None,
            None, None, None, None, None, None, None)


gru_forward.register_autograd(_grad, setup_context=_setup)
