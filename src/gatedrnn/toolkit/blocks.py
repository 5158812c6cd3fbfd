"""Residual blocks: any of the six cells stacked the way the minGRU and xLSTM papers stack theirs.

One block, on a stream of width ``d`` (all steps at once, batch-first)::

    x = x + conv(x)              optional: causal depthwise convolution, kernel 4
    x = x + cell(norm(x))        pre-norm, the recurrent cell (hidden size d), residual
    x = x + ffn(norm(x))         pre-norm, gated feed-forward (GELU gate), residual

``BlockStack`` puts an input projection (an embedding for symbol inputs) before ``layers`` blocks
and a norm and linear head after them. It is the shape of

- minGRU / minLSTM, Feng et al. 2024, "Were RNNs All We Needed?" (https://arxiv.org/abs/2410.01201):
  optional causal depthwise convolution with a residual, norm, cell, residual, norm, feed-forward,
  residual; input projection before the stack, norm and head after it.
- sLSTM, Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory"
  (https://arxiv.org/abs/2405.04517): pre-LayerNorm, a causal convolution (kernel 4), the cell,
  a residual, then a pre-norm gated feed-forward (GELU, factor 4/3) with a residual.

Where these blocks differ from the papers', on purpose, so every cell sees the same block:
- The cell's hidden size equals the stream width (no expansion factor; Feng et al. expand 1.5-2x).
- The convolution (with SiLU) feeds the cell's whole input, as in minGRU's code; in xLSTM it
  feeds only the input and forget gates of the sLSTM, and the sLSTM's head-wise group norm is not
  applied (``num_heads`` can still be passed as a cell option).
- Norms are LayerNorm (minGRU's code uses RMSNorm); the feed-forward is GeGLU with factor 4/3 for
  every cell; initialisation is each module's own (xLSTM starts recurrent weights at zero and
  spreads the forget biases).

Example:
    >>> import torch
    >>> model = BlockStack("mingru", input_size=1, hidden_size=16, output_size=10, layers=3)
    >>> model(torch.randn(4, 40, 1)).shape
    torch.Size([4, 10])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ..interop.io import CheckpointError
from .networks import CELLS, make_rnn

__all__ = ["BLOCKS", "BlockStack", "CausalConv", "GatedFeedForward", "ResidualBlock",
           "check_block_config"]

BLOCKS = ("plain", "conv")  # "conv": each block starts with the causal depthwise convolution
CONV_KERNEL = 4


class CausalConv(nn.Module):
    """Depthwise convolution over time that sees only the current and the ``kernel`` - 1 previous
    steps (zeros before the start), followed by SiLU. (B, T, d) -> (B, T, d)."""

    def __init__(self, d: int, kernel: int = CONV_KERNEL) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(d, d, kernel, groups=d)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x.transpose(1, 2), (self.kernel - 1, 0))  # (B, d, T + k - 1): pad the past only
        return F.silu(self.conv(x)).transpose(1, 2)  # (B, T, d)


class GatedFeedForward(nn.Module):
    """GeGLU feed-forward (Shazeer 2020): W_out (GELU(W_gate x) * W_up x), inner width about
    ``factor`` * d, as in xLSTM's blocks."""

    def __init__(self, d: int, factor: float = 4 / 3) -> None:
        super().__init__()
        inner = max(1, round(factor * d))
        self.up = nn.Linear(d, 2 * inner)
        self.out = nn.Linear(inner, d)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.up(x).chunk(2, dim=-1)  # (B, T, inner) each
        return self.out(F.gelu(gate) * up)


class ResidualBlock(nn.Module):
    """[x + conv(x)] -> x + cell(norm(x)) -> x + ffn(norm(x)); see the module docstring.

    Args:
        cell: one of lstm, gru, rnn, mingru, minlstm, slstm.
        d: the stream width, also the cell's hidden size.
        conv: start with the causal depthwise convolution (kernel 4).
        options: keyword arguments of the cell's module (init, num_heads, engine, ...).
    """

    def __init__(self, cell: str, d: int, conv: bool = False, **options: Any) -> None:
        super().__init__()
        self.conv = CausalConv(d) if conv else None
        self.norm_cell = nn.LayerNorm(d)
        self.rnn = make_rnn(cell, d, d, 1, **options)
        self.norm_ffn = nn.LayerNorm(d)
        self.ffn = GatedFeedForward(d)

    def forward(self, x: Tensor) -> Tensor:  # (B, T, d) -> (B, T, d)
        if self.conv is not None:
            x = x + self.conv(x)
        x = x + self.rnn(self.norm_cell(x))[0]
        return x + self.ffn(self.norm_ffn(x))


class BlockStack(nn.Module):
    """Input projection, ``layers`` residual blocks of one cell, a final norm and a linear head.

    A drop-in for ``gatedrnn.toolkit.model.SequenceModel`` in the training loop (``--block``).
    Per-step tasks read every step; per-sequence tasks read each sequence's last step (for a
    PackedSequence, its own last step: every layer is causal, so padding after it changes nothing).

    Args:
        cell: one of lstm, gru, rnn, mingru, minlstm, slstm.
        input_size: features per step, or the number of symbols when ``vocab_size`` is set.
        hidden_size: the stream width d (and each cell's hidden size).
        output_size: classes, or 1 for regression.
        layers: blocks in the stack.
        block: "plain" or "conv" (every block starts with the causal convolution).
        vocab_size: number of input symbols (an embedding replaces the input projection), or None.
        per_step: return (B, T, output_size) instead of (B, output_size).
        options: keyword arguments of each cell's module.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, output_size: int,
                 layers: int = 3, block: str = "plain", vocab_size: int | None = None,
                 per_step: bool = False, **options: Any) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {list(BLOCKS)}, got {block!r}")
        if layers < 1 or hidden_size < 1:
            raise ValueError(f"layers and hidden_size must be >= 1, got {layers}, {hidden_size}")
        # The residual stream is the cell's width and each step may see only the past.
        for key in ("bidirectional", "proj_size"):
            if options.get(key):
                raise ValueError(f"{key} is not available in blocks: each block's cell keeps the "
                                 "stream's width and reads only the past")
        self.cell, self.block, self.per_step, self.vocab_size = cell, block, per_step, vocab_size
        self.input_size, self.hidden_size = input_size, hidden_size
        self.options = {k: v for k, v in options.items() if v is not None}
        self.project: nn.Module = (nn.Embedding(vocab_size, hidden_size) if vocab_size
                                   else nn.Linear(input_size, hidden_size))
        self.blocks = nn.ModuleList(ResidualBlock(cell, hidden_size, block == "conv", **self.options)
                                    for _ in range(layers))
        self.norm = nn.LayerNorm(hidden_size)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor | PackedSequence, *, return_gates: bool = False) -> Tensor:
        if return_gates:
            raise ValueError("return_gates is not available for block models")
        lengths = None
        if isinstance(x, PackedSequence):
            if self.per_step:
                raise ValueError("per-step tasks take padded tensors, not PackedSequences")
            x, lengths = pad_packed_sequence(x, batch_first=True)  # (B, T_max, ...), (B,)
        h = self.project(x)  # (B, T, d)
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        if self.per_step:
            return self.head(h)  # (B, T, out)
        if lengths is None:
            return self.head(h[:, -1])  # (B, out)
        last = (lengths - 1).to(h.device)
        return self.head(h[torch.arange(h.shape[0], device=h.device), last])  # (B, out)

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable description; ``BlockStack.from_config`` inverts it."""
        return {"block": {"cell": self.cell, "kind": self.block, "input_size": self.input_size,
                          "hidden_size": self.hidden_size, "layers": len(self.blocks),
                          "options": self.options},
                "output_size": self.head.out_features, "vocab_size": self.vocab_size,
                "per_step": self.per_step}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BlockStack:
        """Rebuild from ``get_config()`` (the weights come separately, from the checkpoint)."""
        b = config["block"]
        return cls(b["cell"], b["input_size"], b["hidden_size"], config["output_size"], b["layers"],
                   b["kind"], config["vocab_size"], config["per_step"], **b["options"])


def check_block_config(where: str, config: Any) -> dict[str, Any]:
    """The ``block`` part of a ``BlockStack.get_config()``, each field present and well typed;
    else a CheckpointError naming ``where``."""
    keys = {"cell", "kind", "input_size", "hidden_size", "layers", "options"}
    count = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1  # noqa: E731
    if (not isinstance(config, dict) or set(config) != keys or config["cell"] not in CELLS
            or config["kind"] not in BLOCKS or not isinstance(config["options"], dict)
            or not all(count(config[k]) for k in ("input_size", "hidden_size", "layers"))):
        raise CheckpointError(f"{where}: the block config must have the keys {sorted(keys)}, a "
                              f"cell from {sorted(CELLS)}, a kind from {list(BLOCKS)} and sizes >= 1")
    return config
