"""ONNX Runtime on the graph gatedrnn exports: the session the speed benchmarks time.

Shared by ``gatedrnn bench`` (its ONNX Runtime column) and ``benchmarks/onnxrt.py``, so that both
time the same thing:

- the model is exported by ``torch.onnx.export(..., dynamo=False)``: ONNX's own LSTM / GRU
  operator for gatedrnn.LSTM and GRU (``gatedrnn.export.graph``), whose weights ORT prepacks once
  per session; the newer cells (MinGRU, MinLSTM, SLSTM) export as their reference loop unrolled
  for the traced length, so their graph only serves inputs of that length;
- CPU execution provider (MLAS), all graph optimisations, ``intra_op_num_threads`` = the thread
  count torch runs with, one inter-op thread, and ``session.intra_op.allow_spinning = "0"`` so
  that ORT's pool does not spin after a run and steal the cores from torch in the next one.

Example:
    >>> import torch, gatedrnn
    >>> from gatedrnn.toolkit import bench_ort
    >>> model, x = gatedrnn.GRU(3, 4).eval(), torch.randn(5, 2, 3)
    >>> run = bench_ort.runner(model, x, threads=1)
    >>> torch.allclose(torch.from_numpy(run()), model(x)[0], atol=1e-5)
    True
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch


def available() -> bool:
    """Whether onnxruntime can be imported (it is in the ``interop`` extra)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def session(model: torch.nn.Module, x: torch.Tensor, threads: int) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``model`` exported with the example input ``x``
    (T, B, I), its input named "x" with dynamic T and B (fixed for the unrolled newer cells)."""
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's warnings about the unrolled loop of new cells
        warnings.simplefilter("ignore")
        # torch's hint says a path, but the TorchScript exporter writes to any binary file object.
        torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"],  # type: ignore[arg-type]
                          dynamic_axes={"x": {0: "T", 1: "B"}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])


def runner(model: torch.nn.Module, x: torch.Tensor, threads: int,
           atol: float = 1e-4) -> Callable[[], np.ndarray]:
    """A call that runs ``model``'s exported graph on ``x`` in ONNX Runtime and returns the output
    sequence (T, B, D·H). Checked once against ``model(x)`` first: a benchmark of a graph that
    computes something else would be meaningless, so a difference above ``atol`` raises
    RuntimeError."""
    sess = session(model, x, threads)
    feed = {"x": x.detach().numpy()}
    got = sess.run(None, feed)[0]
    with torch.no_grad():
        want = model(x)[0].numpy()
    err = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
    if not err <= atol:
        raise RuntimeError(f"ONNX Runtime's output differs from the module's (max abs error {err:.3g})")

    def run() -> np.ndarray:
        return sess.run(None, feed)[0]
    return run
