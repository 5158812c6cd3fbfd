"""The reference engine: one direction of one layer, a Python loop over ``cells.py`` under autograd.

It is slow and obviously right, works on any device and dtype, and is the oracle that every fused
kernel is tested against. Its signature is the engine interface shared with ``gatedrnn.engines.kernels``:

    run(x, state, w, batch_sizes, reverse, opts, masks, record) -> (y, state_n, gates)

``opts.mode`` names the cell kind, whose declaration (``kinds.CELLS``) gives the step; the cells
with variants also get ``opts`` and the masks. x (T, B, I) is time-major and padded, with the
batch sorted by length (longest first), so that at time t exactly the rows [0, batch_sizes[t])
are active. Rows that are not active carry their state unchanged and output zeros. With
``reverse`` the loop runs from t = T − 1 down to 0, which starts every row at its own last step
because a row is active exactly at t < its length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import Tensor

from .cells import CellOptions, Weights
from .kinds import CELLS


def _rows(v: Tensor | None, n: int) -> Tensor | None:
    """The first n rows of a (B, ...) tensor; 0-dim tensors (evaluation-mode zoneout) pass through."""
    if v is None or v.dim() == 0:
        return v
    return v[:n]


def _pad_rows(v: Tensor, total: int) -> Tensor:
    if v.shape[0] == total:
        return v
    return torch.cat([v, v.new_zeros((total - v.shape[0],) + tuple(v.shape[1:]))])


def run(
    x: Tensor,
    state: tuple[Tensor, ...],
    w: Weights,
    batch_sizes: Tensor | None,
    reverse: bool,
    opts: CellOptions,
    masks: Mapping[str, Tensor | None],
    record: bool,
) -> tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor] | None]:
    """Run one direction of one layer; see the module docstring for the contract.

    Shapes: x (T, B, I); state (h0 (B, H_out),) or (h0, c0 (B, H)); returns y (T, B, H_out), the
    final state in the same layout, and, when ``record``, a dict of gates each (T, B, H).
    """
    cell = CELLS[opts.mode]
    step = cell.step
    T, B = x.shape[0], x.shape[1]
    sizes = [B] * T if batch_sizes is None else [int(b) for b in batch_sizes]
    zone_h, zone_c = masks.get("zoneout_h"), masks.get("zoneout_c")
    recurrent = masks.get("recurrent")
    ys: list[Tensor | None] = [None] * T
    gate_steps: list[dict[str, Tensor] | None] = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        n = sizes[t]
        active = tuple(s[:n] for s in state)
        if cell.variants:
            new, gates = step(
                x[t, :n], active, w, opts,
                recurrent_mask=_rows(recurrent, n),
                zoneout_h=None if zone_h is None else _rows(zone_h if zone_h.dim() == 0 else zone_h[t], n),
                zoneout_c=None if zone_c is None else _rows(zone_c if zone_c.dim() == 0 else zone_c[t], n),
            )
        else:  # a cell without variants takes no options (``kinds.CellKind.step``)
            new, gates = step(x[t, :n], active, w)
        # Rows past n have finished (forward) or not started (reverse): they keep their state.
        state = tuple(new_s if n == B else torch.cat([new_s, s[n:]]) for new_s, s in zip(new, state))
        ys[t] = _pad_rows(new[0], B)
        if record:
            gate_steps[t] = {k: _pad_rows(v, B) for k, v in gates.items()}
    # (the loop has filled every step: no None is left in ys or gate_steps)
    y = torch.stack(cast("list[Tensor]", ys))  # (T, B, H_out)
    if not record:
        return y, state, None
    names = cell.gate_names
    if not names:
        return y, state, {}
    steps = cast("list[dict[str, Tensor]]", gate_steps)
    return y, state, {k: torch.stack([g[k] for g in steps]) for k in names}
