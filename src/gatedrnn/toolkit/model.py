"""A sequence model around one gatedrnn recurrent network: (embedding) -> LSTM/GRU/RNN -> linear head.

``build_model`` makes it, or with ``block`` a ``gatedrnn.toolkit.blocks.BlockStack``.

The recurrent network is ``gatedrnn.LSTM``, ``GRU`` or ``RNN``, batch-first. Symbol inputs (a task
with a ``vocab``) go through an embedding first. A per-step task reads every output; a
per-sequence task reads the final hidden state of the top layer (both directions when
bidirectional), which for a PackedSequence is the state after each sequence's own last step.

Example:
    >>> import torch
    >>> model = SequenceModel(make_rnn("gru", 2, 8), output_size=1)
    >>> model(torch.randn(3, 5, 2)).shape
    torch.Size([3, 1])
"""

from __future__ import annotations

from typing import Any, overload

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

import gatedrnn

from ..interop.io import CheckpointError, check_config
from ..modules.base import SequenceModule
from .blocks import BlockStack, check_block_config
from .networks import CELLS, make_rnn

__all__ = ["CELLS", "SequenceModel", "build_model", "check_model_config", "count_parameters",
           "make_rnn", "model_from_config"]

class SequenceModel(nn.Module):
    """Embedding (for symbol inputs), a gatedrnn network and a linear head.

    Args:
        rnn: a batch-first gatedrnn LSTM/GRU/RNN.
        output_size: outputs of the head (classes, or 1 for regression).
        vocab_size: number of input symbols, or None for real-valued inputs.
        per_step: return (B, T, output_size) instead of (B, output_size).
    """

    def __init__(self, rnn: SequenceModule, output_size: int, vocab_size: int | None = None,
                 per_step: bool = False) -> None:
        super().__init__()
        self.vocab_size, self.per_step = vocab_size, per_step
        self.embed = nn.Embedding(vocab_size, rnn.input_size) if vocab_size else None
        self.rnn = rnn
        directions = 2 if rnn.bidirectional else 1
        self.head = nn.Linear((rnn.proj_size or rnn.hidden_size) * directions, output_size)

    @overload
    def features(self, x: Tensor) -> Tensor: ...
    @overload
    def features(self, x: PackedSequence) -> PackedSequence: ...

    def features(self, x: Tensor | PackedSequence) -> Tensor | PackedSequence:
        """The network's input: embedded symbols, or ``x`` itself."""
        if self.embed is None:
            return x
        if isinstance(x, PackedSequence):
            return x._replace(data=self.embed(x.data))
        return self.embed(x)  # (B, T) -> (B, T, I)

    def readout(self, output: Tensor | PackedSequence, h_n: Tensor) -> Tensor:
        """Head on every step (per-step tasks) or on the top layer's final state."""
        if self.per_step:
            if isinstance(output, PackedSequence):
                raise ValueError("per-step tasks take padded tensors, not PackedSequences")
            return self.head(output)  # (B, T, out)
        D = 2 if self.rnn.bidirectional else 1
        last = torch.cat(list(h_n[-D:]), dim=-1)  # (B, D·H_out)
        return self.head(last)  # (B, out)

    def forward(self, x: Tensor | PackedSequence, *, return_gates: bool = False) -> Any:
        """Outputs of the head; with ``return_gates`` also the gate dict of the network."""
        result = self.rnn(self.features(x), return_gates=return_gates)
        output, state = result[0], result[1]
        h_n = state[0] if isinstance(state, tuple) else state
        out = self.readout(output, h_n)
        return (out, result[2]) if return_gates else out

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable description; ``SequenceModel.from_config`` inverts it."""
        return {"rnn": self.rnn.get_config(), "output_size": self.head.out_features,
                "vocab_size": self.vocab_size, "per_step": self.per_step}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SequenceModel:
        """Rebuild from ``get_config()`` (the weights come separately, from the checkpoint)."""
        return cls(gatedrnn.from_config(config["rnn"]), config["output_size"], config["vocab_size"],
                   config["per_step"])


def check_model_config(where: str, config: Any) -> dict[str, Any]:
    """``config`` if it is a complete, well-typed ``SequenceModel.get_config()`` (or a
    ``BlockStack``'s); else a CheckpointError naming ``where`` (the recurrent part is checked by
    interop.io.check_config)."""
    body = "block" if isinstance(config, dict) and "block" in config else "rnn"
    keys = {body, "output_size", "vocab_size", "per_step"}
    if not isinstance(config, dict) or set(config) != keys:
        raise CheckpointError(f"{where}: the model config must have exactly the keys {sorted(keys)}")
    if body == "rnn":
        check_config(where, config["rnn"])
    else:
        check_block_config(where, config["block"])
    count = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1  # noqa: E731
    if not count(config["output_size"]) or not (config["vocab_size"] is None or count(config["vocab_size"])):
        raise CheckpointError(f"{where}: 'output_size' and 'vocab_size' must be integers >= 1")
    if not isinstance(config["per_step"], bool):
        raise CheckpointError(f"{where}: 'per_step' must be true or false")
    return config


def build_model(task: Any, cell: str, hidden: int, layers: int = 1, block: str | None = None,
                **options: Any) -> SequenceModel | BlockStack:
    """The model for ``task`` (a ``gatedrnn.toolkit.tasks.Task``): a ``SequenceModel`` (symbol
    inputs embedded in min(vocab, hidden) dimensions), or with ``block`` ("plain" or "conv") a
    ``gatedrnn.toolkit.blocks.BlockStack`` of ``layers`` residual blocks."""
    vocab = task.input_size if task.vocab is not None else None
    if block is not None:
        return BlockStack(cell, task.input_size, hidden, task.output_size, layers, block, vocab,
                          task.per_step, **options)
    input_size = min(task.input_size, hidden) if vocab else task.input_size
    rnn = make_rnn(cell, input_size, hidden, layers, **options)
    return SequenceModel(rnn, task.output_size, vocab, task.per_step)


def model_from_config(config: dict[str, Any]) -> SequenceModel | BlockStack:
    """A ``SequenceModel`` or ``BlockStack`` rebuilt from its ``get_config()``."""
    if "block" in config:
        return BlockStack.from_config(config)
    return SequenceModel.from_config(config)


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
