"""gatedrnn: LSTM and GRU from their equations.

Drop-in ``LSTM``, ``GRU``, ``RNN`` and their cells for ``torch.nn``, a fused CPU engine with a
hand-derived backward pass, the variants people ask for, and a toolkit. The equations live in
``gatedrnn.cells``.
"""

from .cell_modules import GRUCell, LSTMCell, RNNCell
from .modules import GRU, LSTM, RNN, from_config
from .newcells import SLSTM, MinGRU, MinLSTM

__version__ = "0.1.0"
__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "from_config",
           "MinGRU", "MinLSTM", "SLSTM", "__version__"]
