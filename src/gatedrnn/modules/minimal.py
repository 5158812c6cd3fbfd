"""``MinGRU`` and ``MinLSTM`` (Feng et al. 2024, "Were RNNs All We Needed?"): gates that see x_t
alone, so no recurrent weight, and a training run that is a parallel scan.

Their parameters, state and engines are declared in ``gatedrnn.equations.kinds``; the module
machinery is ``gatedrnn.modules.declared.DeclaredRNN``.
"""

from __future__ import annotations

from typing import Any

import torch

from .declared import DeclaredRNN


class MinGRU(DeclaredRNN):
    """minGRU (Feng et al. 2024) over a sequence, with torch.nn's shape of API.

    For each step t, each layer computes from its input x = x_t and the state h = h_{t−1}
    (``gatedrnn.equations.cells.mingru_cell``)::

        [a_z | a_h] = W_ih x + b_ih               (B, 2H)
        z  = σ(a_z)                               update gate
        h̃ = g(a_h)                               candidate (``positive``)
        h' = (1 − z) ⊙ h + z ⊙ h̃

    σ is the sigmoid, ⊙ the elementwise product and g(v) = v + ½ for v ≥ 0, σ(v) otherwise. The
    gates see x alone, so there is no W_hh: a third of a GRU's parameters, and a scan in time.

    Args:
        input_size: H_in, the features of each input step.
        hidden_size: H, the features of h.
        num_layers: stacked layers; layer k > 0 reads layer k − 1's output.
        bias: whether the layers have bias_ih.
        batch_first: input and output as (N, L, ·) instead of (L, N, ·); not the state.
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: a second direction per layer, reading the sequence backwards.
        device: where the parameters are created.
        dtype: their dtype.
        engine: "auto", "fused" (numba's sequential scan, CPU float32/float64), "scan" (the
            log-space parallel scan, ``gatedrnn.equations.scan``), "triton" (a linear-space
            Triton scan, CUDA; ``gatedrnn[gpu]``) or "reference".

    Inputs:
        input, hx, return_gates

        - **input**: (L, H_in) unbatched, (L, N, H_in), (N, L, H_in) with ``batch_first``, or a
          ``PackedSequence``.
        - **hx**: h_0 (D·num_layers, N, H) or None (zeros); (D·num_layers, H) unbatched.
          D = 2 if bidirectional else 1.
        - **return_gates**: also return the activated gates of every step.

    Outputs:
        output, h_n[, gates]

        - **output**: (L, N, D·H), (N, L, D·H) with ``batch_first``, (L, D·H) unbatched, or a
          ``PackedSequence`` for a packed input; bidirectional: ``output.view(L, N, 2, H)``
          splits the directions (index 0 forward, 1 reverse).
        - **h_n**: the final state, shaped as h_0; ``h_n.view(num_layers, D, N, H)`` separates
          layers and directions.
        - **gates** (with ``return_gates``): keys "update", "candidate", each
          (D·num_layers, L, N, H); (D·num_layers, L, H) unbatched.

    Attributes:
        engine (str): The engine setting, as the argument; a plain attribute, change it at any time.
        last_engine (str | None): The engine that ran the last call ("fused", "scan", "triton" or
            "reference"); None before the first.
        weight_ih_l{k} (Tensor): (2H, H_in) for k = 0, else (2H, D·H), rows [z | h̃]; the reverse
            direction's with the suffix ``_reverse``. U(−1/√H, 1/√H).
        bias_ih_l{k} (Tensor): (2H), with ``bias``; U(−1/√H, 1/√H).

    Raises:
        ValueError: At construction: an argument out of its range or an engine the cell does not
            have (torch.nn-style checks and messages). At a call: an input that is not 2-D or 3-D,
            or of another dtype than the weights.
        TypeError: At construction: an argument of the wrong type.
        RuntimeError: At a call: an input or a state whose size, batch or device does not match
            the module, or a forced engine that cannot run the call.

    Engines:
        ``engine="auto"`` runs the fused kernels on CPU float32/float64 tensors; on CUDA the Triton
        scan where triton is installed (planned, its speed not yet measured), else the log-space
        scan; the reference loop otherwise (a CPU's bfloat16).
        ``last_engine`` names the engine of the last call. The fused scan is sequential in time
        and more accurate than the log-space scan (which loses digits as T grows); engines agree
        to about 1e-6 in float32, each is deterministic on one machine whatever the thread count.
        numba compiles the kernels on their first call and caches them on disk.

    Example:
        >>> import torch, gatedrnn
        >>> rnn = gatedrnn.MinGRU(3, 8, num_layers=2)
        >>> out, h = rnn(torch.randn(5, 4, 3))
        >>> out.shape, h.shape
        (torch.Size([5, 4, 8]), torch.Size([2, 4, 8]))
        >>> y, h = rnn.step(torch.randn(4, 3), h)  # one streaming step
    """

    kind = "mingru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None, *,
                 engine: str = "auto") -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype, engine=engine)


class MinLSTM(DeclaredRNN):
    """minLSTM (Feng et al. 2024) over a sequence, with torch.nn's shape of API.

    For each step t, each layer computes from its input x = x_t and the state h = h_{t−1}
    (``gatedrnn.equations.cells.minlstm_cell``)::

        [a_f | a_i | a_h] = W_ih x + b_ih         (B, 3H)
        f = σ(a_f),  i = σ(a_i),  h̃ = g(a_h)     (g: ``positive``)
        f' = f / (f + i),  i' = i / (f + i)
        h' = f' ⊙ h + i' ⊙ h̃

    σ is the sigmoid, ⊙ the elementwise product and g as ``MinGRU``'s; the normalised gates keep
    h's scale independent of time.

    Args:
        input_size: H_in, the features of each input step.
        hidden_size: H, the features of h.
        num_layers: stacked layers; layer k > 0 reads layer k − 1's output.
        bias: whether the layers have bias_ih.
        batch_first: input and output as (N, L, ·) instead of (L, N, ·); not the state.
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: a second direction per layer, reading the sequence backwards.
        device: where the parameters are created.
        dtype: their dtype.
        engine: "auto", "fused", "scan", "triton" or "reference" (see ``MinGRU``).

    Inputs:
        input, hx, return_gates

        - **input**: (L, H_in) unbatched, (L, N, H_in), (N, L, H_in) with ``batch_first``, or a
          ``PackedSequence``.
        - **hx**: h_0 (D·num_layers, N, H) or None (zeros); (D·num_layers, H) unbatched.
        - **return_gates**: also return the activated gates of every step.

    Outputs:
        output, h_n[, gates]

        - **output**: (L, N, D·H), (N, L, D·H) with ``batch_first``, (L, D·H) unbatched, or a
          ``PackedSequence`` for a packed input; bidirectional: ``output.view(L, N, 2, H)``
          splits the directions (index 0 forward, 1 reverse).
        - **h_n**: the final state, shaped as h_0.
        - **gates** (with ``return_gates``): keys "forget", "input" (the normalised f', i') and
          "candidate", each (D·num_layers, L, N, H); (D·num_layers, L, H) unbatched.

    Attributes:
        engine (str): The engine setting, as the argument; a plain attribute, change it at any time.
        last_engine (str | None): The engine that ran the last call; None before the first.
        weight_ih_l{k} (Tensor): (3H, H_in) for k = 0, else (3H, D·H), rows [f | i | h̃]; the reverse
            direction's with the suffix ``_reverse``. U(−1/√H, 1/√H).
        bias_ih_l{k} (Tensor): (3H), with ``bias``; U(−1/√H, 1/√H).

    Raises:
        ValueError: As ``MinGRU``'s.
        TypeError: As ``MinGRU``'s.
        RuntimeError: As ``MinGRU``'s.

    Engines:
        As ``MinGRU``'s.

    Example:
        >>> import torch, gatedrnn
        >>> rnn = gatedrnn.MinLSTM(3, 8, bidirectional=True, batch_first=True)
        >>> out, h, gates = rnn(torch.randn(4, 5, 3), return_gates=True)
        >>> out.shape, h.shape, gates["forget"].shape
        (torch.Size([4, 5, 16]), torch.Size([2, 4, 8]), torch.Size([2, 5, 4, 8]))
    """

    kind = "minlstm"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None, *,
                 engine: str = "auto") -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype, engine=engine)
