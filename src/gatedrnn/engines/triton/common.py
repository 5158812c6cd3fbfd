"""What every Triton cell shares: activations, the autograd Function, recurrent products, dtypes.

A cell plugs in a *loop*: the time loop over precomputed input projections, forward and
hand-derived backward, on plain tensors (no autograd inside). ``LoopFunction`` wraps it once for
all cells. The input projection (and layer norm's input part) stays a torch op under autograd
outside the loop, so dx and dW_ih come out of autograd as one GEMM each over the saved gate
gradients. The recurrent product of each step is a torch GEMM (cuBLAS on a GPU); everything
pointwise in a step is one Triton kernel per cell.

Legend of shapes: T steps, B batch, H hidden, G gates, nh heads of d = H / nh units.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

# The equations and the reference engine, imported in this one place (the oracle for double
# backward and for the tests).
from gatedrnn.equations import cells, reference  # noqa: F401

from . import check

LAUNCH = {"enable_fp_fusion": True}
"""Options of every launch: fused multiply-adds on, as triton has always defaulted to (saying so
keeps triton 3.9 from warning that its default will change)."""

TF32 = False
"""Let the float32 GEMMs of the loops use TF32 on a GPU (faster, about 1e-3 relative error).
Off by default: the engine then matches the reference engine to float32 rounding."""


@triton.jit
def sigmoid(x):
    """σ(x) = 1 / (1 + exp(−x)); exp overflows to inf for x ≪ 0, giving exactly 0."""
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    """tanh(x) = 2 σ(2x) − 1: libdevice's tanh does not run in the interpreter, so the tested
    kernel and the GPU kernel share this form (absolute error a few ulps near 0)."""
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


def block(n: int) -> int:
    """The power-of-two block that holds n lanes (one program per row covers a whole row)."""
    return max(16, triton.next_power_of_2(n))


def row_launch(n: int) -> dict:
    """BLOCK and the launch options of a row kernel over n units: more warps for wider rows, so that a row of
    H = 1024 (four gate blocks of it, with layer norm) stays in registers. Chosen from ptxas's
    register counts for sm_90 (``tests/triton_compile_check.py`` checks there are no spills):
    4 warps up to 256 units, 8 up to 1024, 16 beyond."""
    b = block(n)
    return {**LAUNCH, "num_warps": 4 if b <= 256 else 8 if b <= 1024 else 16, "BLOCK": b}


HEAD_ROWS = 16  # rows per program of the persistent head-wise kernels: tl.dot's smallest M on a GPU


def head_launch(d: int) -> dict:
    """Launch options of a persistent head-wise kernel by head size d: the warps that keep R_j
    and a step's blocks in registers (ptxas for sm_90: no spills at d = 16 with 4 warps, d = 32
    with 8, d = 64 with 16)."""
    return {**LAUNCH, "num_warps": 4 if d <= 16 else 8 if d <= 32 else 16}


def dot_precision() -> str:
    """``tl.dot``'s input_precision: "ieee" unless ``TF32`` is set."""
    return "tf32" if TF32 else "ieee"


@contextlib.contextmanager
def precision() -> Iterator[None]:
    """The GEMM precision of a loop: IEEE float32 unless ``TF32`` is set."""
    if not TF32:
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def step_sizes(batch_sizes: Tensor | None, T: int, B: int) -> list[int]:
    """Active rows per step as Python ints (launch grids are sized by them)."""
    return [B] * T if batch_sizes is None else [int(b) for b in batch_sizes]


def order(T: int, reverse: bool) -> range:
    """The steps in the order the recurrence visits them."""
    return range(T - 1, -1, -1) if reverse else range(T)


def compute_dtype(x: Tensor) -> torch.dtype:
    """Half-precision storage computes in float32; float32 and float64 compute as they are."""
    return torch.float32 if x.dtype in (torch.bfloat16, torch.float16) else x.dtype


def upcast(x: Tensor, state: Sequence[Tensor], w: Mapping[str, Tensor | None]):
    """(x, state, w) in the compute dtype; differentiable casts, so gradients flow back to the
    half-precision originals."""
    dt = compute_dtype(x)
    if dt == x.dtype:
        return x, tuple(state), w
    return (x.to(dt), tuple(s.to(dt) for s in state),
            {k: None if v is None else v.to(dt) for k, v in w.items()})


def keep_weights(z: Tensor | None, T: int, B: int, H: int, dtype: torch.dtype) -> Tensor | None:
    """Zoneout keep-weights as the kernels read them, (T, B, H): the training mask, or the
    evaluation-mode p broadcast (one layout, one kernel specialisation)."""
    if z is None:
        return None
    return z.to(dtype).expand(T, B, H).contiguous()


def rec_product(h: Tensor, w_hh: Tensor) -> Tensor:
    """R h for dense w_hh (G·H, H) or head-wise (nh, G·d, d): (n, H) -> (n, G·H) in the dense
    gate-major layout, as ``cells.headwise_product`` (one GEMM, or one batched GEMM over heads)."""
    if w_hh.dim() == 2:
        return h @ w_hh.t()
    nh, Gd, d = w_hh.shape
    per_head = torch.bmm(h.reshape(-1, nh, d).transpose(0, 1), w_hh.transpose(1, 2))  # (nh, n, G·d)
    return per_head.view(nh, -1, Gd // d, d).permute(1, 2, 0, 3).reshape(-1, nh * Gd)


def rec_product_t(dz: Tensor, w_hh: Tensor) -> Tensor:
    """The transpose of ``rec_product``: dL/dh from dL/d(R h), (n, G·H) -> (n, H)."""
    if w_hh.dim() == 2:
        return dz @ w_hh
    nh, Gd, d = w_hh.shape
    heads = dz.reshape(-1, Gd // d, nh, d).permute(2, 0, 1, 3).reshape(nh, -1, Gd)  # (nh, n, G·d)
    return torch.bmm(heads, w_hh).transpose(0, 1).reshape(-1, nh * d)


def product_t(dz: Tensor, w_hh: Tensor, out: Tensor) -> None:
    """``rec_product_t`` written into ``out`` (n, H): one GEMM with no copy for dense w_hh."""
    if w_hh.dim() == 2:
        torch.mm(dz, w_hh, out=out)
    else:
        out.copy_(rec_product_t(dz, w_hh))


def rec_weight_grad(dz: Tensor, h: Tensor, w_hh: Tensor) -> Tensor:
    """dL/dR = Σ_t dz_t^T h_t over all steps in one GEMM (per head: one batched GEMM).
    dz (T, B, G·H) with zeros on inactive rows, h (T, B, H) the product's inputs."""
    H = h.shape[-1]
    dz2, h2 = dz.reshape(-1, dz.shape[-1]), h.reshape(-1, H)
    if w_hh.dim() == 2:
        return dz2.t() @ h2
    nh, Gd, d = w_hh.shape
    heads = dz2.reshape(-1, Gd // d, nh, d).permute(2, 0, 1, 3).reshape(nh, -1, Gd)  # (nh, N, G·d)
    return torch.bmm(heads.transpose(1, 2), h2.view(-1, nh, d).transpose(0, 1))  # (nh, G·d, d)


def zeros(*shape: int, like: Tensor) -> Tensor:
    """A zero buffer: inactive rows must read as zeros (outputs, recorded gates, and the saved
    values that parameter gradients are summed over)."""
    return torch.zeros(shape, dtype=like.dtype, device=like.device)


class Loop:
    """A cell's time loop (module docstring). ``forward(*inputs)`` -> (outs, saved) on plain
    tensors; ``backward(saved, grads)`` -> one gradient (or None) per input. ``recompute()`` runs
    the reference engine on the originals under autograd (for double backward). ``sink`` receives
    the recorded gates."""

    inputs: tuple
    originals: tuple

    def forward(self, *inputs: Any) -> tuple[tuple[Tensor, ...], tuple]:
        raise NotImplementedError

    def backward(self, saved: tuple, grads: tuple) -> Sequence[Tensor | None]:
        raise NotImplementedError

    def recompute(self, *originals: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError


class LoopFunction(torch.autograd.Function):
    """apply(loop, n_inputs, *inputs, *originals) -> the loop's outs.

    inputs are the loop's own tensors (some derived from the originals by torch ops); originals
    are run's x, state and weights, riding along so that under create_graph=True the backward
    can recompute the call with the reference engine and give *them* its (differentiable)
    gradients, and none to the inputs: each original gets the whole gradient exactly once.
    """

    @staticmethod
    def forward(ctx, loop, n, *tensors):
        outs, saved = loop.forward(*tensors[:n])
        ctx.loop, ctx.n, ctx.n_saved = loop, n, len(saved)
        ctx.save_for_backward(*saved, *tensors[n:])
        return outs

    @staticmethod
    def backward(ctx, *grads):
        loop, n = ctx.loop, ctx.n
        stored = ctx.saved_tensors
        saved, originals = stored[:ctx.n_saved], stored[ctx.n_saved:]
        needs = ctx.needs_input_grad[2:]
        if torch.is_grad_enabled():  # create_graph=True: differentiate the reference instead
            return (None, None, *((None,) * n), *_reference_grads(loop, originals, grads,
                                                                   needs[n:]))
        got = loop.backward(saved, grads)
        return (None, None, *(g if need else None for g, need in zip(got, needs[:n])),
                *((None,) * len(originals)))


def _reference_grads(loop: Loop, originals: tuple, grads: tuple,
                     needs: Sequence[bool]) -> list[Tensor | None]:
    outs = loop.recompute(*originals)
    pairs = [(o, g) for o, g in zip(outs, grads) if g is not None and o.requires_grad]
    wanted = [i for i, t in enumerate(originals) if needs[i] and t.requires_grad]
    result: list[Tensor | None] = [None] * len(originals)
    if not pairs or not wanted:
        return result
    got = torch.autograd.grad([o for o, _ in pairs], [originals[i] for i in wanted],
                              [g for _, g in pairs], create_graph=True, allow_unused=True)
    for i, g in zip(wanted, got):
        result[i] = g
    return result


def launch(loop: Loop, x: Tensor, originals: tuple) -> tuple[Tensor, ...]:
    """Run ``loop`` on its inputs, under autograd when any tensor needs a gradient."""
    tensors = (*loop.inputs, *originals)
    if torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad
                                       for t in tensors):
        return LoopFunction.apply(loop, len(loop.inputs), *loop.inputs, *originals)
    with torch.no_grad():
        outs, _ = loop.forward(*loop.inputs)
    return outs


def originals_of(x: Tensor, state: Sequence[Tensor],
                 w: Mapping[str, Tensor | None]) -> tuple[tuple[Tensor, ...], tuple[str, ...]]:
    """(x, *state, *present weights) and the weight keys, for ``LoopFunction``."""
    present = {k: v for k, v in w.items() if v is not None}
    return (x, *state, *present.values()), tuple(present)


def rebuild(originals: Sequence[Tensor], keys: Sequence[str], n_state: int,
            w: Mapping[str, Tensor | None]) -> tuple[Tensor, tuple[Tensor, ...], dict]:
    """Inverse of ``originals_of``; absent weights are kept as None."""
    x, state = originals[0], tuple(originals[1:1 + n_state])
    return x, state, {**dict.fromkeys(w), **dict(zip(keys, originals[1 + n_state:]))}


def dense_run(fn: Callable) -> Callable:
    """Wrap a cell's run: the device check, half-precision upcast and downcast, GEMM precision."""

    def run(x, state, w, batch_sizes, reverse, opts, masks, record):
        check(x)
        xs, st, ws = upcast(x, state, w)
        with precision():
            y, final, gates = fn(xs, st, ws, batch_sizes, reverse, opts, masks, record)
        if xs.dtype != x.dtype:
            y = y.to(x.dtype)
            final = tuple(f.to(s.dtype) for f, s in zip(final, state))
            gates = None if gates is None else {k: v.to(x.dtype) for k, v in gates.items()}
        return y, final, gates

    run.__doc__, run.__name__, run.__wrapped__ = fn.__doc__, fn.__name__, fn  # type: ignore[attr-defined]
    return run
