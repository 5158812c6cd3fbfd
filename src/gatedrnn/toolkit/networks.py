"""A batch-first gatedrnn network from a cell name: what the bare model and the blocks share."""

from __future__ import annotations

from typing import Any

import gatedrnn

from ..modules.base import SequenceModule

CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "mingru": "MinGRU", "minlstm": "MinLSTM",
         "slstm": "SLSTM"}


def make_rnn(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
             **options: Any) -> SequenceModule:
    """A batch-first ``gatedrnn`` network; ``options`` are its keyword arguments (variants,
    bidirectional, dropout, engine, ...). Options left as None are dropped, so callers can pass
    every command-line flag and only the ones given reach the module."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    options = {k: v for k, v in options.items() if v is not None}
    cls = getattr(gatedrnn, CELLS[cell])
    return cls(input_size, hidden_size, num_layers, batch_first=True, **options)
