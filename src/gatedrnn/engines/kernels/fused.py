"""The plumbing every fused cell plugs into: per-call settings and the autograd Function.

A fused cell is three things: the equations (``gatedrnn.equations.cells``), a time-loop file of numba kernels
(``<cell>_steps.py``), and a file (``<cell>.py``) that registers a ``Kernel`` of three plain
functions on tensors, for its modes (``register``):

    forward(call, *inputs, keep)                     -> (outs, bufs)
    backward(call, inputs, outs, bufs, grads, needs) -> one gradient (or None) per input
    fake(inputs, opts, masks)                        -> the shapes of outs and bufs (keep=True)

outs = (y, h_n[, c_n]); bufs are the fresh tensors (or None) that backward reads besides the
inputs and outs, kept only when ``keep``. Its ``run`` (the engine interface of
``gatedrnn.equations.reference.run``) builds a ``Call`` and calls ``apply``, or, under torch.compile,
``kernels.compiled.run`` (the same kernel as custom ops). Everything else lives here, once:

- ``Call``: the settings of one ``run`` that are not tensors to differentiate (lengths, direction,
  masks, options), also what the reference engine needs to recompute the call;
- ``FusedFunction``: forward runs the kernel without autograd; backward runs the hand-derived
  BPTT, or, when the backward itself is being differentiated (``create_graph=True``: gradient
  penalties, Hessian-vector products, MAML), recomputes the call with the reference engine under
  autograd on the original tensors and differentiates that, so second derivatives are torch's
  own (the hand-derived backward is not itself differentiable).

"inputs" are the kernel's own tensors, sometimes derived from the originals (the LSTM and GRU
run layer norm's input part, and fold biases, as torch ops before the loop). The originals
(x, the state, every weight) ride along as extra Function inputs that the ordinary backward gives
no gradient; the differentiable backward gives its gradients to them instead and none to the
derived inputs, so each original gets the whole gradient exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...equations import reference
from .common import step_sizes


class Call:
    """Settings of one ``run`` (one object per call, never shared).

    sizes: (T,) int64 active rows per step, as the kernels read them; packed: whether any row ends
    early; m, zh, zc: the recurrent dropout mask (B, H_out) and the zoneout keep-weights of h and c
    ((T, B, ·), or 0-dim p in evaluation) or None; eps: layer norm's epsilon; record: return the
    gates; sink: where forward leaves them. batch_sizes, opts and masks are kept as given, for the
    reference engine's recompute.
    """

    __slots__ = ("sizes", "packed", "reverse", "eps", "reset_after", "relu", "record", "m", "zh",
                 "zc", "sink", "batch_sizes", "opts", "masks", "absent")

    def __init__(self, batch_sizes: Tensor | None, T: int, B: int, reverse: bool, opts: Any,
                 masks: Mapping[str, Tensor | None], record: bool = False) -> None:
        self.sizes, self.packed = step_sizes(batch_sizes, T, B)
        self.reverse, self.record = bool(reverse), bool(record)
        self.eps = float(opts.ln_eps)
        self.reset_after = bool(opts.reset_after)
        self.relu = opts.mode == "rnn_relu"
        self.m, self.zh, self.zc = masks.get("recurrent"), masks.get("zoneout_h"), masks.get("zoneout_c")
        self.sink: dict[str, Tensor] | None = None
        self.batch_sizes, self.opts, self.masks = batch_sizes, opts, masks
        self.absent: tuple[str, ...] = ()  # weight keys given as None (``apply``)


@dataclass(frozen=True)
class Kernel:
    """A fused cell's plug-in (module docstring): forward, backward, fake, n_out = len(outs), and
    optionally ``unread(inputs)``, the input positions backward never reads (not kept alive)."""

    forward: Callable
    backward: Callable
    fake: Callable
    n_out: int
    unread: Callable[[tuple], tuple[int, ...]] | None = None


KERNELS: dict[str, Kernel] = {}


def register(modes: tuple[str, ...], kernel: Kernel) -> Kernel:
    """Make ``kernel`` the fused kernel of these cell modes (``CellOptions.mode``)."""
    for mode in modes:
        KERNELS[mode] = kernel
    return kernel


def needs_autograd(tensors: tuple) -> bool:
    """Whether autograd must see a call on these tensors."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def apply(kernel: Kernel, call: Call, inputs: tuple, x: Tensor, state: tuple[Tensor, ...],
          w: Mapping[str, Tensor | None]) -> tuple:
    """The outputs (y, h_n[, c_n]) of ``kernel`` on ``inputs`` under autograd; ``x``, ``state``
    and ``w`` are ``run``'s originals (see the module docstring)."""
    keys = tuple(k for k, v in w.items() if v is not None)
    call.absent = tuple(k for k, v in w.items() if v is None)  # the reference reads some as None
    originals = (x, *state, *(w[k] for k in keys))
    return FusedFunction.apply((kernel, call, keys, len(state), len(inputs)), *inputs, *originals)


class FusedFunction(torch.autograd.Function):
    """apply(spec, *inputs, *originals), spec = (kernel, call, w keys, state arity, len(inputs));
    returns the kernel's outs."""

    @staticmethod
    def forward(ctx, spec, *tensors):
        kernel, call, _, _, n = spec
        outs, bufs = kernel.forward(call, *tensors[:n], keep=True)
        ctx.spec, ctx.sizes = spec, (len(outs), len(bufs))
        ins = list(tensors[:n])
        for i in kernel.unread(ins) if kernel.unread else ():
            ins[i] = None
        ctx.save_for_backward(*ins, *outs, *bufs, *tensors[n:])
        return outs

    @staticmethod
    def backward(ctx, *grads):
        kernel, call, keys, n_state, n = ctx.spec
        n_out, n_buf = ctx.sizes
        saved = ctx.saved_tensors
        inputs, outs = saved[:n], saved[n:n + n_out]
        bufs, originals = saved[n + n_out:n + n_out + n_buf], saved[n + n_out + n_buf:]
        needs = ctx.needs_input_grad[1:]
        if torch.is_grad_enabled():  # create_graph=True: differentiable, through the reference
            return (None, *((None,) * n), *_reference_grads(call, keys, n_state, originals, grads,
                                                             needs[n:]))
        g = kernel.backward(call, inputs, outs, bufs, grads, needs[:n])
        return (None, *(gi if need else None for gi, need in zip(g, needs)),
                *((None,) * len(originals)))


def _reference_grads(call: Call, keys: tuple[str, ...], n_state: int, originals: tuple,
                     grads: tuple, needs: tuple[bool, ...]) -> list[Tensor | None]:
    """Gradients of the originals, with a graph: the call recomputed by ``reference.run``."""
    x, state, ws = originals[0], originals[1:1 + n_state], originals[1 + n_state:]
    w = {**dict.fromkeys(call.absent), **dict(zip(keys, ws))}
    y, final, _ = reference.run(x, tuple(state), w, call.batch_sizes, call.reverse, call.opts,
                                call.masks, False)
    outs, gouts = [], []
    for o, g in zip((y, *final), grads):
        if g is not None and o.requires_grad:
            outs.append(o)
            gouts.append(g)
    wanted = [i for i, (t, need) in enumerate(zip(originals, needs)) if need and t.requires_grad]
    result: list[Tensor | None] = [None] * len(originals)
    if not outs or not wanted:
        return result
    got = torch.autograd.grad(outs, [originals[i] for i in wanted], gouts, create_graph=True,
                              allow_unused=True)
    for i, gi in zip(wanted, got):
        result[i] = gi
    return result


def numpy_dtype(t: Tensor) -> np.dtype:
    """The numpy dtype of a float32 or float64 tensor."""
    return np.dtype(np.float32 if t.dtype == torch.float32 else np.float64)
