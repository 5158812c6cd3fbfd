"""The fused LSTM as two ``torch.library`` custom ops, for ``torch.compile``.

Eager calls go through ``lstm.run``'s autograd.Function (less overhead). Under torch.compile the
same ``_forward``/``_backward`` run as opaque ops with shape functions, so the compiled graph has
no graph break around the numba loop (a graph break left dynamo wrapping the non-leaf outputs in
a resumed frame, which warns) and AOTAutograd sees the backward as one op too.

Ops cannot return None: absent tensors travel as 0-element tensors (``_none`` / ``_some``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cells import CellOptions
from . import lstm
from .fused import Call


def _none(t: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty(0) if t is None else t


def _some(t: Tensor) -> Tensor | None:
    return None if t.numel() == 0 and t.dim() == 1 else t


def _call(sizes: Tensor | None, B: int, T: int, reverse: bool, eps: float, m, zh, zc) -> Call:
    masks = {"recurrent": m, "zoneout_h": zh, "zoneout_c": zc}
    return Call(sizes, T, B, reverse, CellOptions("lstm", ln_eps=eps), masks)


@torch.library.custom_op("gatedrnn::lstm_forward", mutates_args=())
def lstm_forward(xin: Tensor, w_ih: Tensor | None, b_ih: Tensor | None, b_hh: Tensor | None,
                 h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Tensor | None, P: Tensor | None,
                 lnh: Tensor | None, lnc: Tensor | None, sizes: Tensor | None, m: Tensor | None,
                 zh: Tensor | None, zc: Tensor | None, reverse: bool, eps: float,
                 keep: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
                                      Tensor, Tensor]:
    """y, h_n, c_n and the buffers G, C, CH, XH, XC, RS (see ``lstm._forward``)."""
    call = _call(sizes, xin.shape[1], xin.shape[0], reverse, eps, m, zh, zc)
    y, hn, cn, bufs = lstm._forward(call, xin, w_ih, b_ih, b_hh, h0, c0, w_hh, w_hr, P, lnh, lnc,
                                    keep)
    G, *rest = bufs
    if w_ih is None and G.data_ptr() == xin.data_ptr():
        G = G.clone()  # an op's output must not alias its input
    return (y, hn, cn, G, *(_none(b, y) for b in rest))


@lstm_forward.register_fake
def _(xin, w_ih, b_ih, b_hh, h0, c0, w_hh, w_hr, P, lnh, lnc, sizes, m, zh, zc, reverse, eps, keep):
    T, B = xin.shape[0], xin.shape[1]
    H, Ho = c0.shape[-1], h0.shape[-1]
    e = xin.new_empty
    return (e(T, B, Ho), e(B, Ho), e(B, H), e(T, B, 4 * H),
            e(T, B, H) if keep else e(0),
            e(T, B, H) if keep and zc is not None else e(0),
            e(T, B, 4 * H) if keep and lnh is not None else e(0),
            e(T, B, H) if keep and lnh is not None else e(0),
            e(T if keep else 1, B, 2) if lnh is not None else e(0))


@torch.library.custom_op("gatedrnn::lstm_backward", mutates_args=())
def lstm_backward(dy: Tensor, dhn: Tensor, dcn: Tensor, xin: Tensor, w_ih: Tensor | None,
                  h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Tensor | None, P: Tensor | None,
                  lnh: Tensor | None, lnc: Tensor | None, y: Tensor, G: Tensor, C: Tensor,
                  CH: Tensor, XH: Tensor, XC: Tensor, RS: Tensor, sizes: Tensor | None,
                  m: Tensor | None, zh: Tensor | None, zc: Tensor | None, reverse: bool,
                  eps: float) -> list[Tensor]:
    """dx (or dG), dW_ih, db, dh0, dc0, dW_hh, dW_hr, dP, dlnh, dlnc; 0-element when absent."""
    call = _call(sizes, G.shape[1], G.shape[0], reverse, eps, m, zh, zc)
    saved = (xin, w_ih, h0, c0, w_hh, w_hr, P, lnh, lnc, y, G, _some(C), _some(CH), _some(XH),
             _some(XC), _some(RS))
    needs = (True,) * 10
    out = lstm._backward(call, saved, dy, dhn, dcn, needs)
    return [_none(g, G) for g in out]


@lstm_backward.register_fake
def _(dy, dhn, dcn, xin, w_ih, h0, c0, w_hh, w_hr, P, lnh, lnc, y, G, C, CH, XH, XC, RS, sizes,
      m, zh, zc, reverse, eps):
    e = G.new_empty
    like = [xin if w_ih is not None else G, w_ih, None if w_ih is None else w_hh.new_empty(G.shape[2]),
            h0, c0, w_hh, w_hr, P, lnh, lnc]
    return [e(0) if t is None else e(t.shape) for t in like]


def _setup(ctx, inputs, output) -> None:
    (xin, w_ih, b_ih, b_hh, h0, c0, w_hh, w_hr, P, lnh, lnc, sizes, m, zh, zc, reverse, eps,
     keep) = inputs
    ctx.save_for_backward(xin, w_ih, h0, c0, w_hh, w_hr, P, lnh, lnc, sizes, m, zh, zc, *output[:1],
                          *output[3:])
    ctx.reverse, ctx.eps = reverse, eps
    ctx.has_b = (b_ih is not None, b_hh is not None)


def _grad(ctx, dy, dhn, dcn, *_):
    (xin, w_ih, h0, c0, w_hh, w_hr, P, lnh, lnc, sizes, m, zh, zc, y, G, C, CH, XH, XC,
     RS) = ctx.saved_tensors
    dy = torch.zeros_like(y) if dy is None else dy
    dhn = torch.zeros_like(h0) if dhn is None else dhn
    dcn = torch.zeros_like(c0) if dcn is None else dcn
    g = lstm_backward(dy, dhn, dcn, xin, w_ih, h0, c0, w_hh, w_hr, P, lnh, lnc, y, G, C, CH, XH,
                      XC, RS, sizes, m, zh, zc, ctx.reverse, ctx.eps)
    dx, dw_ih, db, dh, dc, dw_hh, dw_hr, dP, dlnh, dlnc = g
    db_ih = db if ctx.has_b[0] else None
    db_hh = (db.clone() if ctx.has_b[0] else db) if ctx.has_b[1] else None
    return (dx, dw_ih if w_ih is not None else None, db_ih, db_hh, dh, dc, dw_hh,
            dw_hr if w_hr is not None else None, dP if P is not None else None,
            dlnh if lnh is not None else None, dlnc if lnc is not None else None,
            None, None, None, None, None, None, None)


lstm_forward.register_autograd(_grad, setup_context=_setup)
