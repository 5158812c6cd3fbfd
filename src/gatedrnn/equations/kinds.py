"""Every cell kind, declared once: its step, gates, state, parameters and engines.

A declaration is all the rest of the package needs to know about a cell. The layer stack
(``gatedrnn.engines.stack``) looks the engine's ``run`` up here, the reference engine
(``gatedrnn.equations.reference``) its ``step``, the modules (``gatedrnn.modules``) its parameter
layout and state, and the exporters (``gatedrnn.export``) its step again. So adding a cell is its
equations (``cells``), its kernels (``gatedrnn.engines.kernels``) and one ``register(CellKind(...))``;
adding an engine to a cell is one entry in its ``engines``.

Engines are named by the dotted path of their ``run`` ("package.module:function"), imported on
first use (``gatedrnn.engines.stack.engine_run``), so numba, Triton and the like stay unimported
until a call needs them. Every ``run`` keeps the contract of ``gatedrnn.equations.reference.run``.
The GPU engine is declared that way: ``triton="gatedrnn.engines.triton.lstm:run"`` in the LSTM's
``_engines(...)`` below is all it took for ``gatedrnn.LSTM(..., engine="triton")``.

Example:
    >>> from gatedrnn.equations import kinds
    >>> kinds.CELLS["slstm"].state, kinds.CELLS["slstm"].engines["fused"]
    (('h', 'c', 'n', 'm'), 'gatedrnn.engines.kernels.slstm:run')
    >>> sorted(kinds.CELLS["mingru"].engines)
    ['fused', 'int8', 'int8-reference', 'reference', 'scan', 'triton']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from . import cells

REFERENCE = "gatedrnn.equations.reference:run"


@dataclass(frozen=True)
class CellKind:
    """One cell kind.

    name: the key every layer uses (``CellOptions.mode``): "lstm", "mingru", ...
    step: one time step, ``step(x, state, w, opts, **masks) -> (new_state, gates)`` when
        ``variants`` (the torch.nn cells, which take layer norm, zoneout and recurrent dropout),
        else ``step(x, state, w)``. Shapes: x (B, I), each state (B, H), gates each (B, H).
    gates: G, the blocks of rows stacked in weight_ih (G·H, I), in the step's order.
    gate_names: what ``return_gates`` records, in order.
    state: the names of the state's parts; ``state[0]`` is the output h.
    weights: the parameters of one layer and direction, named as torch.nn names them
        (``weight_ih`` (G·H, in), ``weight_hh`` (G·H, H), ``bias_ih``, ``bias_hh`` (G·H,)).
    headwise: ``weight_hh`` may be head-wise, (num_heads, G·d, d) with d = H / num_heads
        (``cells.headwise_product``).
    variants: the step takes ``opts`` and the masks (see ``step``).
    engines: engine name -> "module:function" of its ``run``; "reference" runs ``step``.
    """

    name: str
    step: cells.Step
    gates: int
    gate_names: tuple[str, ...]
    state: tuple[str, ...] = ("h",)
    weights: tuple[str, ...] = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    headwise: bool = False
    variants: bool = False
    engines: Mapping[str, str] = field(default_factory=lambda: {"reference": REFERENCE})


CELLS: dict[str, CellKind] = {}


def register(kind: CellKind) -> CellKind:
    """Add ``kind`` to ``CELLS`` (replacing one of the same name) and return it."""
    if "reference" not in kind.engines:
        raise ValueError(f"cell kind {kind.name!r} declares no 'reference' engine: every cell "
                         "has one, the oracle its other engines are tested against")
    CELLS[kind.name] = kind
    return kind


def all_engines() -> tuple[str, ...]:
    """Every engine some registered cell kind declares, in the order they first appear."""
    return tuple(dict.fromkeys(e for kind in CELLS.values() for e in kind.engines))


def _engines(**more: str) -> dict[str, str]:
    return {"reference": REFERENCE, **more}


# int8 inference (``quantized``): only quantized modules run these engines, and only they run them
# (``gatedrnn.modules.quantized``); float modules neither accept nor pick them.
INT8_REFERENCE = "gatedrnn.equations.quantized:run"
# The fast int8 engine of every cell: the plain LSTM/GRU/RNN on ``kernels.int8``, the variants
# (heads, layer norm, peepholes, zoneout's evaluation form) and the newer cells on its own kernels.
INT8 = "gatedrnn.engines.kernels.int8_variants:run"
INT8_ENGINES = ("int8", "int8-reference")


def _int8(fast: str = INT8) -> dict[str, str]:
    return {"int8": fast, "int8-reference": INT8_REFERENCE}


# torch.nn's cells: torch.nn's parameter layout and gate order, every variant (the step takes the
# options and masks), head-wise LSTM and GRU.
register(CellKind("lstm", cells.lstm_cell, 4, cells.GATE_NAMES["lstm"], ("h", "c"),
                  headwise=True, variants=True,
                  engines=_engines(fused="gatedrnn.engines.kernels.lstm:run",
                                   triton="gatedrnn.engines.triton.lstm:run", **_int8(INT8))))
register(CellKind("gru", cells.gru_cell, 3, cells.GATE_NAMES["gru"], headwise=True, variants=True,
                  engines=_engines(fused="gatedrnn.engines.kernels.gru:run",
                                   triton="gatedrnn.engines.triton.gru:run", **_int8(INT8))))
register(CellKind("rnn_tanh", cells.rnn_cell, 1, (), variants=True,
                  engines=_engines(fused="gatedrnn.engines.kernels.rnn:run", **_int8(INT8))))
register(CellKind("rnn_relu", cells.rnn_cell, 1, (), variants=True,
                  engines=_engines(fused="gatedrnn.engines.kernels.rnn:run", **_int8(INT8))))

# The minimal cells (Feng et al. 2024): gates of x alone, so no recurrent weight, and a scan.
register(CellKind("mingru", cells.mingru_cell, 2, ("update", "candidate"),
                  weights=("weight_ih", "bias_ih"),
                  engines=_engines(fused="gatedrnn.engines.kernels.minrnn:run",
                                   scan="gatedrnn.equations.scan:run",
                                   triton="gatedrnn.engines.triton.minrnn:run", **_int8())))
register(CellKind("minlstm", cells.minlstm_cell, 3, ("forget", "input", "candidate"),
                  weights=("weight_ih", "bias_ih"),
                  engines=_engines(fused="gatedrnn.engines.kernels.minrnn:run",
                                   scan="gatedrnn.equations.scan:run",
                                   triton="gatedrnn.engines.triton.minrnn:run", **_int8())))

# sLSTM (Beck et al. 2024): exponential gating with a stabiliser, optionally head-wise.
register(CellKind("slstm", cells.slstm_cell, 4,
                  ("input", "forget", "candidate", "output", "cell", "normalizer", "stabilizer"),
                  ("h", "c", "n", "m"), headwise=True,
                  engines=_engines(fused="gatedrnn.engines.kernels.slstm:run",
                                   triton="gatedrnn.engines.triton.slstm:run", **_int8())))
