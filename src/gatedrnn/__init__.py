"""gatedrnn: LSTM and GRU from their equations.

Drop-in ``LSTM``, ``GRU``, ``RNN`` and their cells for ``torch.nn``, a fused CPU engine with a
hand-derived backward pass, the variants people ask for, and a toolkit. The equations live in
``gatedrnn.equations.cells``.
"""

from . import export as export  # installs what the modules run while an exporter traces them
from .modules.lstm_gru_rnn import GRU, LSTM, RNN, from_config
from .modules.minimal import MinGRU, MinLSTM
from .modules.patch import patch_torch, unpatch_torch
from .modules.quantized import (
    QuantizedGRU,
    QuantizedLSTM,
    QuantizedMinGRU,
    QuantizedMinLSTM,
    QuantizedRNN,
    QuantizedSLSTM,
)
from .modules.quantized_cells import QuantizedGRUCell, QuantizedLSTMCell, QuantizedRNNCell
from .modules.quantized_convert import QuantizedLinear, dequantize, quantize
from .modules.rnn_cells import GRUCell, LSTMCell, RNNCell
from .modules.slstm import SLSTM
from .modules.tune import tune

__version__ = "0.1.0"
__all__ = ["LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "from_config",
           "MinGRU", "MinLSTM", "SLSTM", "patch_torch", "unpatch_torch",
           "quantize", "dequantize", "QuantizedLSTM", "QuantizedGRU", "QuantizedRNN",
           "QuantizedLSTMCell", "QuantizedGRUCell", "QuantizedRNNCell", "QuantizedMinGRU",
           "QuantizedMinLSTM", "QuantizedSLSTM", "QuantizedLinear", "tune", "__version__"]
