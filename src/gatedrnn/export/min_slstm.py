"""What ``MinGRU``, ``MinLSTM`` and ``SLSTM`` run while ``torch.onnx.export`` or ``torch.export.export``
traces them.

Their eager engines loop in Python or numba (or run a log-space scan), which no exporter can trace
into a graph that works at other sequence lengths. So while exporting, ``NewRNNBase.forward`` hands
over to ``export_forward``, which builds the network from one ``scan`` per layer and direction over
``gatedrnn.equations.cells.NEW_STEPS``, the same equations eager runs, traced once with a symbolic length:

- ``torch.export.export``: a ``scan`` node per layer and direction; the program runs at any length
  and batch size its ``dynamic_shapes`` allow.
- ``torch.onnx.export(..., dynamo=True)`` (the default in torch 2.13): an ONNX ``Scan`` per layer
  and direction.
- ``torch.onnx.export(..., dynamo=False)`` (TorchScript): refused. Its tracer records the steps it
  sees, so the graph would only be right at the traced length, and it cannot emit a ``Scan``.

ONNX has no operator for these cells, so there is no native path as for LSTM/GRU/RNN
(``gatedrnn.export.graph``). Random options in training mode (dropout between layers) and
PackedSequence inputs are refused, as there.

Example:
    >>> import io, onnxruntime, torch, gatedrnn
    >>> rnn = gatedrnn.SLSTM(3, 4, num_heads=2).eval()
    >>> buf = io.BytesIO()
    >>> T, B = torch.export.Dim.DYNAMIC, torch.export.Dim.DYNAMIC
    >>> _ = torch.onnx.export(rnn, (torch.randn(5, 2, 3),), buf, input_names=["x"],
    ...                       dynamic_shapes=({0: T, 1: B},), verbose=False)
    >>> session = onnxruntime.InferenceSession(buf.getvalue())
    >>> x = torch.randn(9, 3, 3)  # another length and batch size
    >>> y_onnx = session.run(None, {"x": x.numpy()})[0]
    >>> torch.allclose(torch.from_numpy(y_onnx), rnn(x)[0], atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..equations.cells import NEW_GATE_NAMES, NEW_STEPS
from ..modules import checks
from .graph import _refuse_unexportable, scan_cell


def export_forward(module: Any, input: Any, hx: Any = None, return_gates: bool = False) -> Any:
    """``module(input, hx, return_gates)`` built from scans; returns what ``forward`` returns.

    Called by ``NewRNNBase.forward`` while ``torch.onnx.is_in_onnx_export()`` or
    ``torch.compiler.is_exporting()`` is true; not meant to be called directly.

    Example:
        >>> import torch, gatedrnn
        >>> rnn = gatedrnn.MinGRU(3, 4, num_layers=2, bidirectional=True).eval()
        >>> T = torch.export.Dim("T")
        >>> ep = torch.export.export(rnn, (torch.randn(6, 2, 3),), dynamic_shapes=({0: T},))
        >>> x = torch.randn(11, 2, 3)
        >>> torch.allclose(ep.module()(x)[0], rnn(x)[0], atol=1e-6)
        True
    """
    name = type(module).__name__
    _refuse_unexportable(module, input)
    if torch.onnx.is_in_onnx_export() and not torch.compiler.is_exporting():
        raise RuntimeError(
            f"{name} cannot be exported with the TorchScript-based exporter (dynamo=False): it "
            "would record the time loop unrolled at the traced length, and it cannot emit an ONNX "
            "Scan. Export with torch.onnx.export(..., dynamo=True) (the default), which emits a "
            "Scan that runs at any sequence length."
        )
    checks.check_input(name, input, module.input_size, module.weight_ih_l0.dtype, packed=False)
    unbatched = input.dim() == 2
    if unbatched:
        x = input.unsqueeze(1)
    else:
        x = input.transpose(0, 1) if module.batch_first else input  # (T, B, I)
    checks.check_length(name, x.shape[0])
    states = module._initial_states(hx, x, x.shape[1], unbatched, None)  # per k: (B, H) each
    D = 2 if module.bidirectional else 1
    cell = NEW_STEPS[module.kind]
    layer_in = x
    finals: list[list[Tensor]] = []
    recorded: list[dict[str, Tensor]] = []
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            y, final, gates = scan_cell(cell, layer_in, states[k], module._weights(k),
                                        reverse=d == 1, record=return_gates)
            outs.append(y)  # (T, B, H)
            finals.append(final)
            if gates is not None:
                recorded.append(gates)
        # No dropout between layers: in training mode with dropout the export was refused above.
        layer_in = outs[0] if D == 1 else torch.cat(outs, dim=-1)  # (T, B, D·H)
    state = [torch.stack([f[i] for f in finals]) for i in range(len(finals[0]))]  # (L·D, B, H)
    y = layer_in
    if unbatched:
        y, state = y.squeeze(1), [s.squeeze(1) for s in state]
    elif module.batch_first:
        y = y.transpose(0, 1)
    result = (y, module._pack_state(state))
    if not return_gates:
        return result
    stacked = {g: torch.stack([r[g] for r in recorded]) for g in NEW_GATE_NAMES[module.kind]}
    if unbatched:  # (L·D, T, B, H) as eager's, without the batch axis
        stacked = {g: v.squeeze(2) for g, v in stacked.items()}
    return result + (stacked,)
