"""Every fused cell as two ``torch.library`` custom ops, for torch.compile and torch.export.

Eager calls go through ``fused.FusedFunction`` (less overhead). Under torch.compile a cell's
``run`` calls ``run`` here instead: the same ``fused.Kernel`` (looked up by mode) runs inside
opaque ops with shape functions, so the compiled graph has no graph break around the numba loop
(a graph break left dynamo wrapping the non-leaf outputs in a resumed frame, which warns), and
AOTAutograd sees the backward as one op too. Two ops serve every cell: the kernel's inputs
travel as one list, its settings as scalars.

Ops cannot return None, and autograd does not reach into an optional-tensor list: absent
tensors travel as 0-element tensors (``_none`` / ``_some``).
Double backward through these ops raises (torch.compile refuses it before that); eagerly, the
fused engine supports it (``fused``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ...equations.cells import CellOptions
from .fused import KERNELS, Call

MASKS = ("recurrent", "zoneout_h", "zoneout_c")


def _none(t: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty(0) if t is None else t


def _some(t: Tensor) -> Tensor | None:
    return None if t.numel() == 0 and t.dim() == 1 else t


def _unaliased(result: list[Tensor], inputs: Sequence[Tensor | None]) -> list[Tensor]:
    """An op's outputs must not share memory with its inputs or with each other (e.g. the two
    halves of one layer-norm gradient): clone those that do."""
    seen = {t.untyped_storage().data_ptr() for t in inputs if t is not None and t.numel()}
    for i, t in enumerate(result):
        if t.numel():
            if t.untyped_storage().data_ptr() in seen:
                result[i] = t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
    return result


def _call(mode: str, reset_after: bool, eps: float, reverse: bool, x: Tensor, sizes: Tensor | None,
          masks: Sequence[Tensor | None]) -> Call:
    opts = CellOptions(mode, reset_after=reset_after, ln_eps=eps)
    return Call(sizes, x.shape[0], x.shape[1], reverse, opts, dict(zip(MASKS, masks)))


@torch.library.custom_op("gatedrnn::fused_forward", mutates_args=())
def fused_forward(mode: str, reset_after: bool, eps: float, reverse: bool, keep: bool,
                  inputs: list[Tensor], sizes: Tensor | None, m: Tensor | None,
                  zh: Tensor | None, zc: Tensor | None) -> list[Tensor]:
    """The kernel's outs, then (when ``keep``) its bufs, 0-element where absent."""
    ins = [_some(t) for t in inputs]  # None where absent; x = inputs[0] never is
    call = _call(mode, reset_after, eps, reverse, inputs[0], sizes, (m, zh, zc))
    outs, bufs = KERNELS[mode].forward(call, *ins, keep=keep)
    result = [*outs, *(_none(b, outs[0]) for b in bufs)] if keep else list(outs)
    return _unaliased(result, ins)


@fused_forward.register_fake
def _(mode, reset_after, eps, reverse, keep, inputs, sizes, m, zh, zc):
    inputs = [_some(t) for t in inputs]
    kernel = KERNELS[mode]
    opts = CellOptions(mode, reset_after=reset_after, ln_eps=eps)
    shapes = kernel.fake(inputs, opts, dict(zip(MASKS, (m, zh, zc))))
    e = inputs[0].new_empty
    return [e(0) if s is None else e(s) for s in (shapes if keep else shapes[:kernel.n_out])]


@torch.library.custom_op("gatedrnn::fused_backward", mutates_args=())
def fused_backward(mode: str, reset_after: bool, eps: float, reverse: bool, grads: list[Tensor],
                   inputs: list[Tensor], outputs: list[Tensor], sizes: Tensor | None,
                   m: Tensor | None, zh: Tensor | None, zc: Tensor | None) -> list[Tensor]:
    """One gradient per input, 0-element for an absent one."""
    ins = [_some(t) for t in inputs]  # None where absent; x = inputs[0] never is
    kernel = KERNELS[mode]
    call = _call(mode, reset_after, eps, reverse, inputs[0], sizes, (m, zh, zc))
    outs, bufs = outputs[:kernel.n_out], [_some(b) for b in outputs[kernel.n_out:]]
    needs = tuple(t is not None for t in ins)
    g = kernel.backward(call, tuple(ins), tuple(outs), tuple(bufs), tuple(grads), needs)
    like = outputs[0]
    return _unaliased([like.new_empty(0) if t is None else (torch.zeros_like(t) if gi is None else gi)
                       for t, gi in zip(ins, g)], [*ins, *outputs, *grads])


@fused_backward.register_fake
def _(mode, reset_after, eps, reverse, grads, inputs, outputs, sizes, m, zh, zc):
    e = outputs[0].new_empty
    return [e(t.shape) for t in inputs]


def _setup(ctx, inputs, output) -> None:
    mode, reset_after, eps, reverse, keep, ins, sizes, *masks = inputs
    ctx.settings = (mode, reset_after, eps, reverse)
    ctx.counts = (len(ins), len(output))
    ctx.present = [_some(t) is not None for t in ins]
    ctx.save_for_backward(*ins, *output, sizes, *masks)


def _grad(ctx, grads):
    n_in, n_output = ctx.counts
    saved = ctx.saved_tensors
    ins, output = saved[:n_in], saved[n_in:n_in + n_output]
    sizes, masks = saved[n_in + n_output], saved[n_in + n_output + 1:]
    n_out = KERNELS[ctx.settings[0]].n_out
    grads = [torch.zeros_like(o) if g is None else g for g, o in zip(grads[:n_out], output)]
    g = fused_backward(*ctx.settings, grads, list(ins), list(output), sizes, *masks)
    return (None, None, None, None, None, [gi if p else None for gi, p in zip(g, ctx.present)],
            None, None, None, None)


def _no_double_backward(ctx, grads):
    raise RuntimeError("gatedrnn: double backward through the fused engine's custom ops "
                       "(torch.compile / torch.export) is not supported; run eagerly (the fused "
                       "engine supports it there) or use engine='reference'")


fused_forward.register_autograd(_grad, setup_context=_setup)
fused_backward.register_autograd(_no_double_backward, setup_context=lambda ctx, inputs, output: None)


def run(inputs: tuple, opts: Any, batch_sizes: Tensor | None, reverse: bool,
        masks: Mapping[str, Tensor | None], keep: bool) -> tuple[list[Tensor], list[Tensor | None]]:
    """The kernel of ``opts.mode`` as the custom op: (outs, bufs); bufs empty unless ``keep``."""
    kernel = KERNELS[opts.mode]
    like = inputs[0]
    out = fused_forward(opts.mode, bool(opts.reset_after), float(opts.ln_eps), bool(reverse),
                        bool(keep), [_none(t, like) for t in inputs], batch_sizes,
                        *(masks.get(k) for k in MASKS))
    return out[:kernel.n_out], [_some(b) for b in out[kernel.n_out:]]
