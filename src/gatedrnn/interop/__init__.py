"""Moving models in and out of gatedrnn.

- ``gatedrnn.interop.io``: save_model / load_model (safetensors + JSON, no pickle), write_atomic.
- ``gatedrnn.interop.torch_nn``: from_torch / to_torch for torch.nn.LSTM, GRU, RNN.
- ``gatedrnn.interop.keras``: from_keras / to_keras for Keras 3 layers (needs ``keras``).
- ``gatedrnn.interop.streaming``: Stream, for online prediction one step or chunk at a time.
- ONNX export needs nothing from here: ``torch.onnx.export(model, ...)`` works on models that
  contain gatedrnn modules (see ``gatedrnn.export.graph``).

Keras is imported only by ``gatedrnn.interop.keras``, so the rest works without it.
"""

from .io import CheckpointError, load_model, load_tensors, save_model, save_tensors, write_atomic
from .streaming import Stream
from .torch_nn import from_torch, to_torch

__all__ = ["CheckpointError", "save_model", "load_model", "save_tensors", "load_tensors",
           "write_atomic", "Stream", "from_torch", "to_torch"]
