"""The fused Elman RNN as two ``torch.library`` custom ops, for ``torch.compile``.

Eager calls go through ``rnn.run``'s autograd.Function (less overhead). Under torch.compile the
same ``_forward``/``_backward`` run as opaque ops with shape functions, so the compiled graph has
no graph break around the numba loop and AOTAutograd sees the backward as one op too (the same
design as ``lstm_op``).

Ops cannot return None: absent tensors travel as 0-element tensors (``_none`` / ``_some``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells import CellOptions
from . import rnn
from .fused import Call


def _none(t: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty(0) if t is None else t


def _some(t: Tensor) -> Tensor | None:
    return None if t.numel() == 0 and t.dim() == 1 else t


def _call(sizes: Tensor | None, T: int, B: int, reverse: bool, relu: bool, m, zh) -> Call:
    opts = CellOptions("rnn_relu" if relu else "rnn_tanh")
    return Call(sizes, T, B, reverse, opts, {"recurrent": m, "zoneout_h": zh})


@torch.library.custom_op("gatedrnn::rnn_forward", mutates_args=())
def rnn_forward(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None, h0: Tensor,
                w_hh: Tensor, sizes: Tensor | None, m: Tensor | None, zh: Tensor | None,
                reverse: bool, relu: bool, keep: bool) -> tuple[Tensor, Tensor, Tensor]:
    """y, h_n and φ(a) (0-element unless ``keep`` with zoneout; see ``rnn._forward``)."""
    call = _call(sizes, x.shape[0], x.shape[1], reverse, relu, m, zh)
    y, hn, act = rnn._forward(call, x, w_ih, b_ih, b_hh, h0, w_hh, keep)
    return y, hn, _none(act, y)


@rnn_forward.register_fake
def _(x, w_ih, b_ih, b_hh, h0, w_hh, sizes, m, zh, reverse, relu, keep):
    T, B = x.shape[0], x.shape[1]
    H = h0.shape[-1]
    e = x.new_empty
    return e(T, B, H), e(B, H), e(T, B, H) if keep and zh is not None else e(0)


@torch.library.custom_op("gatedrnn::rnn_backward", mutates_args=())
def rnn_backward(dy: Tensor, dhn: Tensor, x: Tensor, w_ih: Tensor, h0: Tensor, w_hh: Tensor,
                 y: Tensor, act: Tensor, sizes: Tensor | None, m: Tensor | None,
                 zh: Tensor | None, reverse: bool, relu: bool) -> list[Tensor]:
    """dx, dW_ih, db, dh0, dW_hh."""
    call = _call(sizes, y.shape[0], y.shape[1], reverse, relu, m, zh)
    out = rnn._backward(call, (x, w_ih, h0, w_hh, y, _some(act)), dy, dhn, (True,) * 6)
    return list(out)


@rnn_backward.register_fake
def _(dy, dhn, x, w_ih, h0, w_hh, y, act, sizes, m, zh, reverse, relu):
    e = y.new_empty
    return [e(x.shape), e(w_ih.shape), e(w_ih.shape[0]), e(h0.shape), e(w_hh.shape)]


def _setup(ctx, inputs, output) -> None:
    x, w_ih, b_ih, b_hh, h0, w_hh, sizes, m, zh, reverse, relu, keep = inputs
    y, _, act = output
    ctx.save_for_backward(x, w_ih, h0, w_hh, y, act, sizes, m, zh)
    ctx.reverse, ctx.relu = reverse, relu
    ctx.has_b = (b_ih is not None, b_hh is not None)


def _grad(ctx, dy, dhn, _dact):
    x, w_ih, h0, w_hh, y, act, sizes, m, zh = ctx.saved_tensors
    dy = torch.zeros_like(y) if dy is None else dy
    dhn = torch.zeros_like(h0) if dhn is None else dhn
    dx, dw_ih, db, dh, dw_hh = rnn_backward(dy, dhn, x, w_ih, h0, w_hh, y, act, sizes, m, zh,
                                            ctx.reverse, ctx.relu)
    db_ih = db if ctx.has_b[0] else None
    db_hh = (db.clone() if ctx.has_b[0] else db) if ctx.has_b[1] else None
    return dx, dw_ih, db_ih, db_hh, dh, dw_hh, None, None, None, None, None, None


rnn_forward.register_autograd(_grad, setup_context=_setup)
