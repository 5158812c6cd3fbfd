"""``SLSTM``: the sLSTM of xLSTM (Beck et al. 2024), with torch.nn's shape of API.

Its parameters, state and engines are declared in ``gatedrnn.equations.kinds``; the module
machinery is ``gatedrnn.modules.declared.DeclaredRNN``.
"""

from __future__ import annotations

from typing import Any

import torch

from .declared import DeclaredRNN


class SLSTM(DeclaredRNN):
    """sLSTM (Beck et al. 2024, xLSTM) over a sequence: exponential input gate, a normaliser n
    and a stabiliser m beside the cell c.

    For each step t, each layer computes from its input x = x_t and the state (h, c, n, m) of
    step t − 1 (``gatedrnn.equations.cells.slstm_cell``)::

        [ĩ | f̃ | z̃ | õ] = W_ih x + b_ih + R h + b_hh   (B, 4H); R h by ``headwise_product``
        m' = max(log σ(f̃) + m, ĩ)                       stabiliser
        i  = exp(ĩ − m')                                 input gate (stabilised)
        f  = exp(log σ(f̃) + m − m')                     forget gate (stabilised)
        c' = f ⊙ c + i ⊙ tanh(z̃)                        cell
        n' = f ⊙ n + i                                   normaliser
        h' = σ(õ) ⊙ c' / n'

    R is ``weight_hh``, dense or head-wise. m cancels from h' (c' and n' share the factor
    exp(−m')), so it only keeps exp from overflowing.

    Args:
        input_size: H_in, the features of each input step.
        hidden_size: H, the features of h (and of c, n, m).
        num_layers: stacked layers; layer k > 0 reads layer k − 1's output.
        bias: whether the layers have bias_ih and bias_hh.
        batch_first: input and output as (N, L, ·) instead of (L, N, ·); not the state.
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: a second direction per layer, reading the sequence backwards.
        device: where the parameters are created.
        dtype: their dtype.
        engine: "auto", "fused" (numba, CPU float32/float64), "triton" (Triton kernels, CUDA;
            ``gatedrnn[gpu]``) or "reference".
        num_heads: nh > 1 makes the recurrence head-wise (block-diagonal): H splits into nh
            blocks of d = H / nh units whose gates see only their own block of h.

    Inputs:
        input, hx, return_gates

        - **input**: (L, H_in) unbatched, (L, N, H_in), (N, L, H_in) with ``batch_first``, or a
          ``PackedSequence``.
        - **hx**: ``(h_0, c_0, n_0, m_0)``, each (D·num_layers, N, H), or None (zeros); without
          the N axis unbatched. D = 2 if bidirectional else 1.
        - **return_gates**: also return the activated gates of every step.

    Outputs:
        output, (h_n, c_n, n_n, m_n)[, gates]

        - **output**: (L, N, D·H), (N, L, D·H) with ``batch_first``, (L, D·H) unbatched, or a
          ``PackedSequence`` for a packed input; bidirectional: ``output.view(L, N, 2, H)``
          splits the directions (index 0 forward, 1 reverse).
        - **h_n**, **c_n**, **n_n**, **m_n**: the final state, shaped as hx's parts.
        - **gates** (with ``return_gates``): keys "input", "forget", "candidate", "output",
          "cell", "normalizer", "stabilizer", each (D·num_layers, L, N, H);
          (D·num_layers, L, H) unbatched.

    Attributes:
        engine (str): The engine setting, as the argument; a plain attribute, change it at any time.
        last_engine (str | None): The engine that ran the last call ("fused", "triton" or "reference"); None
            before the first.
        weight_ih_l{k} (Tensor): (4H, H_in) for k = 0, else (4H, D·H), rows [i | f | z | o]; the reverse
            direction's with the suffix ``_reverse``.
        weight_hh_l{k} (Tensor): (4H, H), or (nh, 4d, d) with num_heads = nh > 1.
        bias_ih_l{k} (Tensor): (4H), with ``bias``.
        bias_hh_l{k} (Tensor): (4H), with ``bias``. All start at U(−1/√H, 1/√H).

    Raises:
        ValueError: At construction: an argument out of its range, an engine the cell does not
            have, a ``num_heads`` that does not divide ``hidden_size``. At a call: an input that
            is not 2-D or 3-D.
        TypeError: At construction: an argument of the wrong type.
        RuntimeError: At a call: an input or a state whose size, batch or device does not match
            the module, or a forced engine that cannot run the call.

    Engines:
        ``engine="auto"`` runs the fused kernels on CPU float32/float64 tensors, the Triton kernels
        on CUDA where triton is installed (planned, not yet measured), and the reference loop
        otherwise (sLSTM's gates see h, so it has no scan). ``last_engine`` names the engine
        of the last call. Engines agree to about 1e-6 in float32; each is deterministic on one
        machine whatever the thread count. numba compiles the kernels on their first call and
        caches them on disk.

    Example:
        >>> import torch, gatedrnn
        >>> rnn = gatedrnn.SLSTM(3, 8, num_layers=2, num_heads=2)
        >>> out, (h, c, n, m) = rnn(torch.randn(5, 4, 3))
        >>> out.shape, h.shape, rnn.weight_hh_l0.shape
        (torch.Size([5, 4, 8]), torch.Size([2, 4, 8]), torch.Size([2, 16, 4]))
    """

    kind = "slstm"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None, *, engine: str = "auto",
                 num_heads: int = 1) -> None:
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype, engine=engine, num_heads=num_heads)
