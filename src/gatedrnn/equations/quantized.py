"""The int8 scheme, and its reference engine: the oracle of every int8 engine.

Weights are symmetric signed int8 with one scale per output row (one per gate unit). For a weight
W (R, C) in float32::

    s_W[r] = max_c |W[r, c]| / 127            (a row of zeros gets s_W[r] = 1)
    W_q[r, c] = clamp(round(W[r, c] / s_W[r]), −127, 127)        int8, round half to even
    W[r, c] ≈ s_W[r] · W_q[r, c]

Activations are quantized the same way, dynamically, with one scale per row of the vector that
meets the weight:

    the input x of a layer: per (t, b) row, once per call (the same numbers per step or per call);
    the recurrent h: per batch row, at every step (at B = 1: one scale per step);
    with proj_size: h' = W_hr (o ⊙ tanh c'), with o ⊙ tanh c' quantized per row;
    the Cho GRU (reset_after=False): W_hn (r ⊙ h), with r ⊙ h quantized per row.

Every product of a quantized vector v (s_v, v_q) with a quantized weight is an exact integer sum,
then float32::

    acc[b, r] = Σ_c v_q[b, c] · W_q[r, c]                   exact (int32)
    (W v)[b, r] ≈ acc[b, r] · s_v[b] · s_W[r]                float32, in this order

and the rest of the cell (bias, gates, state, layer norm, peepholes) is the float32 math of
``cells.py``, unchanged. A head-wise W_hh (num_heads, G·d, d) has a scale per row of each head,
(num_heads, G·d); h is still quantized per batch row over all its H units.

The reference engine ``run`` keeps the engine interface of ``reference.run``. Its weights dict
holds the quantized tensors of one layer and direction (``quantize_weights`` builds it):
``w_ih_q`` int8 (G·H, I) and ``w_ih_s`` float32 (G·H,); ``w_hh_q`` (G·H, H_out) or head-wise
(num_heads, G·d, d) and ``w_hh_s`` (G·H,) or (num_heads, G·d); ``w_hr_q`` (H_out, H) and
``w_hr_s`` (H_out,) or None; ``b_ih``, ``b_hh`` float32 (G·H,) or None; the variants' float32
entries (``peephole``, ``ln_*``) as in the float engines. It hands ``cells.py``'s step functions
an ``Int8Rows`` in place of each weight: the steps write every product as ``v @ W.T``, and
``Int8Rows`` computes that product by the scheme above (the integer sums in float64, exact while
C · 127² < 2⁵³), so the equations stay written once. It is slow (a Python loop over time, as
``reference.run``), runs every cell kind, and is declared as engine "int8-reference" of every cell
(``kinds``); the fast engine is "int8".

Example:
    >>> import torch
    >>> from gatedrnn.equations.quantized import quantize_rows
    >>> q, s = quantize_rows(torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]]))
    >>> q.tolist(), s.tolist()
    ([[64, -127, 32], [0, 0, 0]], [0.007874015718698502, 1.0])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor

from . import reference
from .cells import CellOptions, Weights, headwise_product

QMAX = 127  # symmetric: −127 … 127, so −W quantizes to −W_q
QUANTIZED = ("w_ih", "w_hh", "w_hr")  # the weights the scheme quantizes; the rest stay float32


def quantize_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 per row (over the last dimension): returns (q int8 like t, scale float32 t.shape[:-1]).

    s = max |row| / 127 (1 for a row of zeros), q = clamp(round_half_even(t / s), −127, 127).
    """
    t = t.detach().float()
    scale = t.abs().amax(dim=-1) / QMAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(t / scale.unsqueeze(-1)), -QMAX, QMAX).to(torch.int8)
    return q, scale


def dequantize_rows(q: Tensor, scale: Tensor) -> Tensor:
    """The float32 weight the int8 rows stand for: q · s per row."""
    return q.float() * scale.unsqueeze(-1)


class Int8Rows:
    """A weight W quantized per row, standing where ``cells.py`` expects a float weight.

    The steps of ``cells.py`` use a weight only as ``v @ W.T`` (through ``headwise_product``), as
    ``W.dim()`` and as ``gate_rows(W, lo, hi)``; this class answers exactly those, so that the
    float32 equations run unchanged on int8 products. ``.T`` is the object itself: it has no
    transpose, ``v @ W.T`` is its one product, (B, C) → (B, R) by the module docstring's scheme.

    q: int8 (R, C), or head-wise (num_heads, G·d, d); scale: float32 (R,) or (num_heads, G·d).
    """

    def __init__(self, q: Tensor, scale: Tensor) -> None:
        self.q, self.scale = q, scale

    @property
    def T(self) -> Int8Rows:  # noqa: N802 (torch's name for the transpose)
        return self

    @property
    def shape(self) -> torch.Size:
        """The dense shape (R, C) the weight stands for, head-wise included (G·H, H)."""
        if self.q.dim() == 2:
            return self.q.shape
        nh, Gd, d = self.q.shape
        return torch.Size((nh * Gd, nh * d))

    def dim(self) -> int:
        # Head-wise too answers 2: headwise_product then calls ``h @ W.T``, and the block-diagonal
        # product happens in __rmatmul__.
        return 2

    def __getitem__(self, key: tuple[object, ...]) -> Int8Rows:
        """``gate_rows(W, lo, hi)``: W[..., lo·n:hi·n, :] with n = W.shape[-1], the only slicing the
        steps do; for a head-wise weight the rows lo·d … hi·d − 1 of every head."""
        rows = cast(slice, key[-2])
        if self.q.dim() == 2:
            return Int8Rows(self.q[rows], self.scale[rows])
        nh, _, d = self.q.shape
        lo, hi = rows.start // (nh * d) * d, rows.stop // (nh * d) * d
        return Int8Rows(self.q[:, lo:hi], self.scale[:, lo:hi])

    def __rmatmul__(self, v: Tensor) -> Tensor:
        """v @ W.T for v float32 (B, C): v quantized per row, the integer sums exact, then float32."""
        v_q, v_s = quantize_rows(v)
        # float64 holds every integer sum exactly here (|acc| ≤ C · 127² ≪ 2⁵³).
        acc = headwise_product(v_q.double(), self.q.double()).float()  # (B, R)
        return acc * v_s.unsqueeze(-1) * self._dense_scale()

    def _dense_scale(self) -> Tensor:
        if self.scale.dim() == 1:
            return self.scale
        nh, Gd, d = self.q.shape  # (num_heads, G·d) → gate-major (G·H,), as headwise_product's rows
        return self.scale.unflatten(-1, (Gd // d, d)).transpose(0, 1).flatten()

    def dequantize(self) -> Tensor:
        return dequantize_rows(self.q, self.scale)


def quantize_weights(w: Weights) -> dict[str, Tensor | None]:
    """The int8 engines' weights dict from a float engine's (``reference.run``'s ``w``): each of
    w_ih, w_hh, w_hr becomes ``<name>_q`` (int8) and ``<name>_s`` (float32 scales), None stays None;
    every other entry (biases, peepholes, layer norm) is passed on as float32."""
    out: dict[str, Tensor | None] = {}
    for name, value in w.items():
        if name in QUANTIZED:
            q, s = (None, None) if value is None else quantize_rows(value)
            out[f"{name}_q"], out[f"{name}_s"] = q, s
        else:
            out[name] = None if value is None else value.detach().float().contiguous()
    return out


def step_weights(w: Mapping[str, Tensor | None]) -> dict[str, object]:
    """The weights dict ``cells.py``'s steps take, from an int8 engine's: ``Int8Rows`` for each
    quantized weight, the float entries as they are."""
    out: dict[str, object] = {}
    for name, value in w.items():
        if name.endswith("_q"):
            base = name[:-2]
            scale = w.get(f"{base}_s")
            out[base] = None if value is None or scale is None else Int8Rows(value, scale)
        elif not name.endswith("_s"):
            out[name] = value
    return out


def run(
    x: Tensor,
    state: tuple[Tensor, ...],
    w: Mapping[str, Tensor | None],
    batch_sizes: Tensor | None,
    reverse: bool,
    opts: CellOptions,
    masks: Mapping[str, Tensor | None],
    record: bool,
) -> tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor] | None]:
    """The int8 reference engine: ``reference.run``'s loop over ``cells.py`` on int8 products.

    Shapes as ``reference.run``: x (T, B, I) float32, state parts (B, ·) float32; ``w`` as the
    module docstring says. Returns y (T, B, H_out), the final state, and the gates when ``record``.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"the int8 engines take float32 input, got {x.dtype}")
    return reference.run(x, state, cast(Weights, step_weights(w)), batch_sizes, reverse, opts,
                         masks, record)
