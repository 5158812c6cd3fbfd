"""Everything about time that is not a cell: directions, the layer stack, dropout, engines, masks.

    stacked(x, states, weights, spec) runs, for each layer l and direction d,
        y_ld, state_ld = engine.run(x_l, state_ld, weights_ld, batch_sizes, reverse=(d == 1), ...)
    and feeds concat_d(y_ld), with inter-layer dropout in training, to layer l + 1.

No nn.Module lives here: ``gatedrnn.modules.base`` validates, converts PackedSequence and
batch_first, and calls ``stacked`` with time-major, length-sorted tensors, for every cell kind.
The engines share one interface (see ``reference.run``) and each cell declares its own
(``gatedrnn.equations.kinds``), so choosing one is a dictionary lookup.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..equations.cells import CellOptions, Weights
from ..equations.kinds import CELLS


@dataclass(frozen=True)
class StackSpec:
    """The shape of the network around the cells."""

    num_layers: int
    num_directions: int
    dropout: float = 0.0  # between layers, training only (as torch.nn)
    recurrent_dropout: float = 0.0  # Gal & Ghahramani 2016, one mask per sequence and layer
    training: bool = False


_RUNS: dict[str, Callable] = {}  # "module:function" -> the imported run


def engine_run(mode: str, engine: str) -> Callable:
    """The ``run`` function of ``engine`` for the cell kind ``mode``, as its declaration names it
    (``kinds.CELLS[mode].engines``), imported on first use: numba, for one, is imported only
    when a fused kernel first runs, so the reference engine works where numba is missing or broken
    (ImportError then). Raises ValueError for an engine the cell does not have."""
    engines = CELLS[mode].engines
    if engine not in engines:
        raise ValueError(f"cell kind {mode!r} has no engine {engine!r}; it has {sorted(engines)}")
    path = engines[engine]
    run = _RUNS.get(path)
    if run is None:
        module, _, name = path.partition(":")
        run = _RUNS[path] = getattr(importlib.import_module(module), name)
    return run


def has_engine(mode: str, engine: str) -> bool:
    """True when the cell kind declares ``engine`` and its code imports here."""
    try:
        engine_run(mode, engine)
    except (ImportError, ValueError):
        return False
    return True


_NO_TRITON: set[str] = set()  # cell kinds whose Triton kernels did not import (asked once)


def triton_ready(mode: str, x: Tensor) -> bool:
    """True when the Triton engine can run this call: x on CUDA and the cell's Triton kernels
    import (triton installed). Never on the CPU, where auto has faster engines than Triton's
    interpreter; there ``engine="triton"`` must be asked for by name."""
    if not x.is_cuda or mode in _NO_TRITON:
        return False
    if has_engine(mode, "triton"):
        return True
    _NO_TRITON.add(mode)  # a failed import is not cached by Python: don't retry it every call
    return False


def fused_available() -> bool:
    """True when the fused CPU kernels of LSTM, GRU and RNN import (numba present and working)."""
    return all(has_engine(mode, "fused") for mode in ("lstm", "gru", "rnn_tanh"))


def fusable(x: Tensor) -> bool:
    """The fused kernels' inputs: CPU float32/float64 tensors (they are numba CPU code)."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def choose_engine(engine: str, mode: str, x: Tensor) -> Callable:
    """The ``run`` function of the requested engine.

    "auto" takes the fused kernels for CPU float32/float64 tensors and the reference engine
    elsewhere (other devices, half precision); the modules resolve "auto" before they get here
    (``gatedrnn.engines.dispatch``), so this rule is for direct callers.
    """
    if engine == "auto":
        engine = "fused" if fusable(x) and has_engine(mode, "fused") else "reference"
    if engine == "fused" and not fusable(x):
        raise RuntimeError(
            f"engine='fused' runs on CPU float32/float64 tensors only, got {x.dtype} on "
            f"{x.device}; use engine='auto' or engine='reference'"
        )
    return engine_run(mode, engine)


def draw_masks(
    opts: CellOptions, spec: StackSpec, T: int, B: int, h_size: int, c_size: int, like: Tensor
) -> dict[str, Tensor | None]:
    """The random masks of one layer and direction, drawn before the engine runs.

    Drawing them here, not inside an engine, is what lets the reference and fused engines be
    compared exactly under the same masks.
    - recurrent: (B, H_out) Bernoulli(1 − p) / (1 − p), the same at every step (variational).
    - zoneout_h, zoneout_c: keep-weights d, (T, B, ·) Bernoulli(p) with a fresh mask every step in
      training, and the 0-dim expectation p in evaluation.
    """
    masks: dict[str, Tensor | None] = {}
    p = spec.recurrent_dropout
    if p > 0 and spec.training:
        keep = like.new_empty((B, h_size)).bernoulli_(1 - p)
        masks["recurrent"] = keep / (1 - p)
    for key, q, size in (("zoneout_h", opts.zoneout, h_size), ("zoneout_c", opts.zoneout_cell, c_size)):
        if q <= 0:
            continue
        if opts.training:
            masks[key] = like.new_empty((T, B, size)).bernoulli_(q)
        else:
            masks[key] = like.new_tensor(q)
    return masks


def stacked(
    x: Tensor,
    states: Sequence[tuple[Tensor, ...]],
    weights: Sequence[Weights],
    batch_sizes: Tensor | None,
    opts: CellOptions,
    spec: StackSpec,
    engine: str = "auto",
    record: bool = False,
) -> tuple[Tensor, list[tuple[Tensor, ...]], dict[str, Tensor] | None]:
    """Run the layer stack over a time-major, length-sorted batch.

    Shapes: x (T, B, I); states[l·D + d] the state tuple of that layer and direction, each part
    (B, ·) (``kinds.CellKind.state``: (h0 (B, H_out),), (h0, c0 (B, H)), ...); weights[l·D + d]
    its parameter dict. ``opts.mode`` names the cell kind and ``engine`` one of its engines.
    Returns y (T, B, D·H_out), the final states in the same order, and, when ``record``, gates
    stacked to (L·D, T, B, H).
    """
    run = choose_engine(engine, opts.mode, x)
    T, B = x.shape[0], x.shape[1]
    finals: list[tuple[Tensor, ...]] = []
    recorded: list[dict[str, Tensor]] = []
    layer_in = x
    for layer in range(spec.num_layers):
        outs = []
        for d in range(spec.num_directions):
            k = layer * spec.num_directions + d
            state = states[k]
            h_size = state[0].shape[-1]
            c_size = state[1].shape[-1] if len(state) > 1 else h_size
            masks = draw_masks(opts, spec, T, B, h_size, c_size, x)
            y, final, gates = run(layer_in, state, weights[k], batch_sizes, d == 1, opts, masks, record)
            outs.append(y)
            finals.append(final)
            if record and gates is not None:
                recorded.append(gates)
        layer_in = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)  # (T, B, D·H_out)
        if spec.dropout > 0 and spec.training and layer < spec.num_layers - 1:
            layer_in = F.dropout(layer_in, spec.dropout, training=True)
    if not record:
        return layer_in, finals, None
    names = recorded[0].keys() if recorded else ()
    return layer_in, finals, {k: torch.stack([g[k] for g in recorded]) for k in names}
