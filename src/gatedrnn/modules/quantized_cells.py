"""The int8 cells: ``QuantizedLSTMCell``, ``QuantizedGRUCell``, ``QuantizedRNNCell``, one step per call.

torch.nn's cell calling convention (``checks.cell_args``) on the int8 engines of
``gatedrnn.equations.quantized``; see ``gatedrnn.modules.quantized`` for the scheme and the rest.

Example:
    >>> import torch, gatedrnn
    >>> cell = gatedrnn.quantize(gatedrnn.LSTMCell(3, 8))
    >>> h, c = cell(torch.randn(2, 3))
    >>> h.shape, cell.last_engine
    (torch.Size([2, 8]), 'int8')
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..engines import stack
from ..equations.kinds import CELLS
from ..equations.quantized import step_weights
from . import checks, quantized_lean
from .base import exporting, record_engine
from .quantized import _QuantizedBase, _TorchView
from .rnn_cells import GRUCell, LSTMCell, RNNCell


class _QuantizedCell(_QuantizedBase):
    """A quantized LSTMCell/GRUCell/RNNCell: one step of the int8 engine per call."""

    def forward(self, input: Tensor, hx: Any = None) -> Any:
        """As the float cell's forward: h' (GRU, RNN) or (h', c') (LSTM); (B, H) or (H,) unbatched."""
        # A plain inference step straight to the int8 kernel (quantized_lean.py); None otherwise.
        result = quantized_lean.cell_call(self, input, hx)
        if result is not None:
            return result
        self._check_call(input)
        lstm = self.kind == "lstm"
        tag = type(self).__name__.removeprefix("Quantized")
        if torch.jit.is_tracing():  # (a trace records sizes as tensors: comparing them warns)
            unbatched = input.dim() == 1
            x = input.unsqueeze(0) if unbatched else input
            given = [] if hx is None else list(hx) if lstm else [hx]
            parts = [p.unsqueeze(0) if unbatched else p for p in given] or \
                [x.new_zeros(x.shape[0], self.hidden_size)] * (2 if lstm else 1)
        else:
            view = _TorchView(self, self._FLOAT._TORCH)  # type: ignore[attr-defined]
            x, parts, unbatched = checks.cell_args(view, input, hx, lstm, tag)
        engine = self._int8_engine(x)
        if exporting() or torch._C._get_tracing_state() is not None:
            # numba is opaque to tracers; the reference computes the same scheme in torch ops
            engine = "int8-reference"
        record_engine(self, engine)
        opts = self._options()
        H = self.hidden_size
        w = self._with_packed(self._int8_weights(""), "")
        new: tuple[Tensor, ...]
        if engine == "int8-reference":  # one step of cells.py on int8 products, no time loop
            zone = {k: opts_p or None for k, opts_p in (("zoneout_h", opts.zoneout),
                                                        ("zoneout_c", opts.zoneout_cell))}
            new, _ = CELLS[self.kind].step(x, tuple(parts), step_weights(w), opts, **zone)
        else:
            masks = stack.draw_masks(opts, stack.StackSpec(1, 1), 1, x.shape[0], H, H, x)
            run = stack.engine_run(self.kind, engine)
            _, new, _ = run(x[None], tuple(parts), w, None, False, opts, masks, False)
        if unbatched:
            new = tuple(s.squeeze(0) for s in new)
        return tuple(new) if lstm else new[0]


class QuantizedLSTMCell(_QuantizedCell):
    """``gatedrnn.LSTMCell`` with int8 weights: one step per call; see ``QuantizedLSTM``."""

    _FLOAT = LSTMCell


class QuantizedGRUCell(_QuantizedCell):
    """``gatedrnn.GRUCell`` with int8 weights (both forms); see ``QuantizedLSTM``."""

    _FLOAT = GRUCell


class QuantizedRNNCell(_QuantizedCell):
    """``gatedrnn.RNNCell`` with int8 weights; see ``QuantizedLSTM``."""

    _FLOAT = RNNCell
