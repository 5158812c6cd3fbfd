"""gatedrnn: LSTM and GRU from their equations.

Drop-in ``LSTM``, ``GRU``, ``RNN`` and their cells for ``torch.nn``, a fused CPU engine with a
hand-derived backward pass, the variants people ask for, and a toolkit. The equations live in
``gatedrnn.equations.cells``.
"""

from .modules.base import GRU, LSTM, RNN, from_config
from .modules.min_slstm import SLSTM, MinGRU, MinLSTM
from .modules.patch import patch_torch, unpatch_torch
from .modules.rnn_cells import GRUCell, LSTMCell, RNNCell

__version__ = "0.1.0"
__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "from_config",
           "MinGRU", "MinLSTM", "SLSTM", "patch_torch", "unpatch_torch", "__version__"]
