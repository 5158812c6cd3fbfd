"""What the ONNX export tests of the core modules (``test_export_onnx.py``) and of the newer cells
(``test_export_minimal_and_slstm.py``) share: the cases, the models they export, their inputs, the dynamo
export, the ONNX Runtime session and the comparison with eager."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import torch

import gatedrnn

I, H = 3, 4  # input and hidden size of every exported module


@dataclass(frozen=True)
class Case:
    kind: str  # a gatedrnn class: LSTM | GRU | RNN | MinGRU | MinLSTM | SLSTM
    kwargs: dict[str, Any] = field(default_factory=dict)
    hx: bool = False
    unbatched: bool = False  # input (T, I), states (L·D, H)


class Net(torch.nn.Module):
    """A model around a gatedrnn module with its states as separate tensors, as ONNX has them:
    h0 alone, (h0, c0) for the LSTM, (h0, c0, n0, m0) for the sLSTM."""

    def __init__(self, rnn: torch.nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None, c0: torch.Tensor | None = None,
                n0: torch.Tensor | None = None, m0: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, ...]:
        hx = None if h0 is None else h0 if c0 is None else (h0, c0) if n0 is None else (h0, c0, n0, m0)
        y, state = self.rnn(x, hx)
        return (y, *state) if isinstance(state, tuple) else (y, state)


def build(case: Case) -> Net:
    torch.manual_seed(0)
    return Net(perturbed(getattr(gatedrnn, case.kind)(I, H, **case.kwargs))).eval()


def inputs(case: Case, T: int, B: int) -> list[torch.Tensor]:
    """x, and with ``case.hx`` the initial states, at sequence length T and batch B."""
    rnn = build(case).rnn  # a fresh module, for the sizes
    batch = () if case.unbatched else (B,)
    x = torch.randn((T, I) if case.unbatched else (B, T, I) if rnn.batch_first else (T, B, I))
    if not case.hx:
        return [x]
    LD = rnn.num_layers * (2 if rnn.bidirectional else 1)
    state = [torch.randn(LD, *batch, rnn.proj_size or H)]
    state += [torch.randn(LD, *batch, H) for _ in range({"LSTM": 1, "SLSTM": 3}.get(case.kind, 0))]
    if case.kind == "SLSTM":  # n > 0, as a run of the cell leaves it
        state[2] = state[2].abs() + 0.5
    return [x, *state]


def axes(case: Case) -> tuple[dict[int, str], dict[int, str]]:
    """The dynamic axes of x and of each state."""
    if case.unbatched:
        return {0: "T"}, {}
    return ({0: "B", 1: "T"} if case.kwargs.get("batch_first") else {0: "T", 1: "B"}), {1: "B"}


def export_dynamo(model: Net, case: Case, args: list[torch.Tensor]) -> bytes:
    """``model`` exported by torch's dynamo ONNX exporter, its time and batch axes dynamic."""
    x_axes, state_axes = axes(case)
    # Dim.DYNAMIC, not named Dims: one name on several inputs makes the exporter warn.
    dyn = torch.export.Dim.DYNAMIC
    shapes = [{k: dyn for k in x_axes}] + [{k: dyn for k in state_axes} or None] * (len(args) - 1)
    buf = io.BytesIO()
    torch.onnx.export(model, tuple(args), buf, dynamo=True, dynamic_shapes=tuple(shapes),
                      input_names=["x", "h0", "c0", "n0", "m0"][: len(args)], verbose=False)
    return buf.getvalue()


def assert_ort_matches_eager(model: Net, case: Case, model_bytes: bytes,
                             run_sizes: list[tuple[int, int]], **tol: float) -> None:
    """ONNX Runtime on ``model_bytes`` gives eager's outputs at each (T, B) of ``run_sizes``."""
    sess = session(model_bytes)
    names = [i.name for i in sess.get_inputs()]
    for T, B in run_sizes:
        args = inputs(case, T, B)
        got = sess.run(None, dict(zip(names, (a.numpy() for a in args))))
        with torch.no_grad():
            want = model(*args)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == tuple(w.shape), (case, T, B)
            torch.testing.assert_close(torch.from_numpy(g), w, **tol)


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
