"""Engines and the layer stack for minGRU, minLSTM and sLSTM (the modules are in ``newcells``).

Every engine runs one direction of one layer with the contract of ``gatedrnn.equations.reference.run``
(time-major, rows sorted by length, inactive rows output zeros and keep their state):

    run(x, state, w, batch_sizes, reverse, kind, record) -> (y, state_n, gates)

- "reference": ``cells.NEW_STEPS`` in a Python loop under autograd; any device and dtype.
- "fused": numba on the CPU, float32/float64 (``kernels.minrnn``, ``kernels.slstm``).
- "scan": the log-space parallel scan (``gatedrnn.equations.scan``), minGRU and minLSTM only.
- "auto": fused for CPU float32/float64; on other devices the scan for minGRU/minLSTM and the
  reference loop for sLSTM; the reference loop for other dtypes on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ..equations.cells import NEW_GATE_NAMES, NEW_STEPS, Weights

KINDS = ("mingru", "minlstm", "slstm")
ENGINES = ("auto", "reference", "fused", "scan")


def reference_run(x: Tensor, state: tuple[Tensor, ...], w: Weights, batch_sizes: Tensor | None,
                  reverse: bool, kind: str, record: bool):
    """The reference engine: one cell step per time step, rows past batch_sizes[t] untouched."""
    step = NEW_STEPS[kind]
    T, B = x.shape[0], x.shape[1]
    sizes = [B] * T if batch_sizes is None else [int(b) for b in batch_sizes]
    ys: list[Tensor | None] = [None] * T
    recorded: list[dict[str, Tensor]] = [{} for _ in range(T)]
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        n = sizes[t]
        new, gates = step(x[t, :n], tuple(s[:n] for s in state), w)
        # Rows past n have finished (forward) or not started (reverse): they keep their state.
        state = tuple(a if n == B else torch.cat([a, s[n:]]) for a, s in zip(new, state))
        ys[t] = F.pad(new[0], (0, 0, 0, B - n))  # (B, H), zeros on inactive rows
        if record:
            recorded[t] = {k: F.pad(v, (0, 0, 0, B - n)) for k, v in gates.items()}
    y = torch.stack(cast("list[Tensor]", ys))  # (T, B, H); the loop has filled every step
    if not record:
        return y, state, None
    return y, state, {k: torch.stack([g[k] for g in recorded]) for k in NEW_GATE_NAMES[kind]}


def _fused(kind: str) -> Callable:
    # Imported lazily so that the reference engine works where numba is missing or broken.
    if kind == "slstm":
        from .kernels import slstm

        return lambda x, s, w, bs, rev, _, rec: slstm.run(x, s, w, bs, rev, rec)
    from .kernels import minrnn

    return minrnn.run


def resolve(engine: str, kind: str, x: Tensor) -> str:
    """The engine that runs this input: the one requested, or auto's pick (see the module
    docstring). Raises for a request the input cannot take."""
    if engine == "scan" and kind == "slstm":
        raise ValueError("engine='scan' is for MinGRU and MinLSTM: sLSTM's gates see h, so it has "
                         "no parallel scan; use 'auto', 'fused' or 'reference'")
    fusable = x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
    if engine == "fused" and not fusable:
        raise RuntimeError(f"engine='fused' runs on CPU float32/float64 tensors only, got "
                           f"{x.dtype} on {x.device}; use engine='auto' or engine='reference'")
    if engine != "auto":
        return engine
    if fusable:
        try:
            _fused(kind)
            return "fused"
        except ImportError:
            return "reference"
    # the scan's parallel depth pays off on many-core devices, not in a CPU's bfloat16
    return "reference" if kind == "slstm" or x.device.type == "cpu" else "scan"


def choose(engine: str, kind: str, x: Tensor) -> Callable:
    """The ``run`` function of the requested engine for this input (``resolve``)."""
    name = resolve(engine, kind, x)
    if name == "fused":
        return _fused(kind)
    if name == "scan":
        from ..equations import scan

        return scan.run
    return reference_run


def stacked(x: Tensor, states: Sequence[tuple[Tensor, ...]], weights: Sequence[Weights],
            batch_sizes: Tensor | None, kind: str, num_layers: int, num_directions: int,
            dropout: float, training: bool, engine: str, record: bool):
    """The layer stack over a time-major, length-sorted batch, as ``functional.stacked``:
    states[l·D + d] and weights[l·D + d] per layer and direction; returns y (T, B, D·H), the final
    states in the same order, and, when ``record``, gates stacked to (L·D, T, B, H)."""
    run = choose(engine, kind, x)
    finals: list[tuple[Tensor, ...]] = []
    recorded: list[dict[str, Tensor]] = []
    layer_in = x
    for layer in range(num_layers):
        outs = []
        for d in range(num_directions):
            k = layer * num_directions + d
            y, final, gates = run(layer_in, states[k], weights[k], batch_sizes, d == 1, kind,
                                  record)
            outs.append(y)
            finals.append(final)
            if record:
                recorded.append(gates)
        layer_in = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)  # (T, B, D·H)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_in = F.dropout(layer_in, dropout, training=True)
    if not record:
        return layer_in, finals, None
    return layer_in, finals, {k: torch.stack([g[k] for g in recorded]) for k in NEW_GATE_NAMES[kind]}
