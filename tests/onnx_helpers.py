"""What the ONNX export tests of the core modules (``test_export_onnx.py``) and of the newer cells
(``test_export_minimal_and_slstm.py``) share: the models they export and the ONNX Runtime session."""

from __future__ import annotations

from typing import Any

import torch


def perturbed(rnn: torch.nn.Module) -> torch.nn.Module:
    """``rnn`` in evaluation mode, its parameters moved away from their small initial values
    (biases and peepholes included) so that a mistake in the exported graph shows."""
    with torch.no_grad():
        for p in rnn.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return rnn.eval()


def session(model_bytes: bytes) -> Any:
    """An ONNX Runtime session on one thread (two cores shared by everyone), whose thread pool
    does not spin after a run (it would take the cores from torch)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model_bytes, options)
