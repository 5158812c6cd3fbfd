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

    Equations in ``gatedrnn.equations.cells.mingru_cell``: z = σ(W_z x + b_z), h̃ = g(W_h x + b_h),
    h' = (1 − z) ⊙ h + z ⊙ h̃. A third of a GRU's parameters and no W_hh.

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
          ``PackedSequence`` for a packed input.
        - **h_n**: the final state, shaped as h_0.
        - **gates** (with ``return_gates``): keys "update", "candidate", each
          (D·num_layers, L, N, H); (D·num_layers, L, H) unbatched.

    Weights:
        Per layer k and direction (suffix ``_reverse``): ``weight_ih_l{k}`` (2H, H_in for k = 0,
        else D·H), rows [z | h̃], and ``bias_ih_l{k}`` (2H); all U(−1/√H, 1/√H).

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

    Equations in ``gatedrnn.equations.cells.minlstm_cell``: f, i = σ(W_f x + b_f), σ(W_i x + b_i),
    normalised to f' = f / (f + i), i' = i / (f + i); h' = f' ⊙ h + i' ⊙ g(W_h x + b_h).

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
          ``PackedSequence`` for a packed input.
        - **h_n**: the final state, shaped as h_0.
        - **gates** (with ``return_gates``): keys "forget", "input" (the normalised f', i') and
          "candidate", each (D·num_layers, L, N, H); (D·num_layers, L, H) unbatched.

    Weights:
        Per layer k and direction (suffix ``_reverse``): ``weight_ih_l{k}`` (3H, H_in for k = 0,
        else D·H), rows [f | i | h̃], and ``bias_ih_l{k}`` (3H); all U(−1/√H, 1/√H).

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
