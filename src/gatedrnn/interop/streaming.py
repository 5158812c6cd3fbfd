"""Online prediction: feed a recurrent module one step or one chunk at a time.

A recurrent network's state is everything it remembers, so running a sequence in pieces and
handing each piece the state the previous one ended with gives exactly the outputs of running it
whole (as Keras' ``stateful=True`` does). ``Stream`` keeps that state between calls.

Only forward-in-time networks stream: a reverse direction starts at the last step, which has not
arrived yet, so bidirectional modules are refused. Works with gatedrnn's LSTM/GRU/RNN and with
torch.nn's, which share the calling convention. Outputs equal the whole-sequence run in evaluation
mode; in training, random masks (dropout, zoneout) are drawn per call, not per sequence.

Example:
    >>> import torch, gatedrnn
    >>> from gatedrnn.interop.streaming import Stream
    >>> lstm = gatedrnn.LSTM(3, 4, num_layers=2).eval()
    >>> x = torch.randn(6, 2, 3)  # (T, B, I)
    >>> stream = Stream(lstm)
    >>> ys = [stream.step(x_t) for x_t in x]  # each (B, H)
    >>> torch.allclose(torch.stack(ys), lstm(x)[0], atol=1e-6)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class Stream:
    """Carries ``module``'s state across calls; ``step`` takes one time step, ``chunk`` several.

    Shapes follow the module: with batch size B and input size I, ``step`` takes (B, I), or (I,)
    for an unbatched stream, and ``chunk`` takes what the module's forward takes, (T, B, I) or
    (B, T, I) with ``batch_first``, or (T, I). The state is detached after each call (``detach``)
    so a long stream does not grow an autograd graph; pass ``detach=False`` for truncated BPTT.

    Args:
        module: A forward-in-time recurrent module: gatedrnn's LSTM, GRU, RNN, MinGRU, MinLSTM,
            SLSTM, or torch.nn's LSTM, GRU, RNN. Call ``module.eval()`` first for outputs equal
            to the whole-sequence run (in training, random masks are drawn per call).
        state: The state to start from, as the module's ``hx`` (None: zeros); ``stream.state``
            holds the current one.
        detach: Detach the state from the autograd graph after each call (True), or keep the
            graph across calls (False: truncated backpropagation through time, whose caller
            detaches when a window ends).

    Raises:
        ValueError: A bidirectional module: its reverse direction starts from the last step,
            which has not arrived yet.
        TypeError: A module that is not a recurrent module (no ``batch_first``, ``num_layers``).

    Example:
        >>> import torch, gatedrnn
        >>> from gatedrnn.interop.streaming import Stream
        >>> gru = gatedrnn.GRU(3, 4, batch_first=True).eval()
        >>> x = torch.randn(2, 7, 3)  # (B, T, I)
        >>> stream = Stream(gru)
        >>> y = torch.cat([stream.chunk(x[:, :3]), stream.chunk(x[:, 3:])], dim=1)
        >>> torch.allclose(y, gru(x)[0], atol=1e-6)
        True
    """

    def __init__(self, module: nn.Module, state: Any = None, detach: bool = True) -> None:
        if getattr(module, "bidirectional", False):
            raise ValueError(
                f"{type(module).__name__}(bidirectional=True) cannot stream: its reverse direction "
                "starts from the last step, which has not arrived yet. Run it on whole sequences."
            )
        if not hasattr(module, "batch_first") or not hasattr(module, "num_layers"):
            raise TypeError(f"Stream takes a recurrent module (LSTM, GRU, RNN), got {type(module).__name__}")
        self.module, self.state, self.detach = module, state, detach

    def chunk(self, x: Tensor) -> Tensor:
        """Run the next piece of the sequence; returns its output, shaped as the module's output."""
        y, state = self.module(x, self.state)
        if self.detach:
            state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        self.state = state
        return y

    def step(self, x_t: Tensor) -> Tensor:
        """Run one time step: x_t (B, I) or (I,); returns (B, H_out) or (H_out,)."""
        unbatched = x_t.dim() == 1
        time_dim = 1 if self.module.batch_first and not unbatched else 0
        return self.chunk(x_t.unsqueeze(time_dim)).squeeze(time_dim)

    def reset(self, rows: Tensor | list[int] | None = None) -> None:
        """Forget the state: all of it, or only that of batch ``rows`` (streams that restart).

        Example:
            >>> import torch, gatedrnn
            >>> from gatedrnn.interop.streaming import Stream
            >>> stream = Stream(gatedrnn.GRU(3, 4).eval())
            >>> _ = stream.step(torch.randn(2, 3))
            >>> stream.reset(rows=[1])
            >>> stream.state[:, 1].abs().sum().item()
            0.0
        """
        if rows is None or self.state is None:
            self.state = None
            return
        rows = torch.as_tensor(rows, dtype=torch.long)

        def cleared(s: Tensor) -> Tensor:
            # The state is (L·D, B, H), or (L·D, H) for an unbatched stream: one row, cleared whole.
            if s.dim() == 2:
                return torch.zeros_like(s)
            s = s.clone()
            s[:, rows] = 0
            return s

        if isinstance(self.state, tuple):
            self.state = tuple(cleared(s) for s in self.state)
        else:
            self.state = cleared(self.state)
