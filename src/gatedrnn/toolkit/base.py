"""The task interface: what every task (``gatedrnn.toolkit.tasks``, ``.datasets``) implements.

A task is a data generator plus its metric. Training batches are a pure function of a
``torch.Generator`` that the trainer seeds from (seed, rank, step), so a resumed run sees exactly the
batches an uninterrupted one would, and no data loader has state to save. The test set is fixed by
the task alone (its own constant seed), so runs with different seeds are scored on the same data.

Model selection (the best step of a run) uses ``validation_batches``: for synthetic tasks another
fixed draw, for real data a part of the training set held out from training. Never the test set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

TEST_SEED = 20_240_601  # fixes every synthetic test set, independent of the training seed
VALID_SEED = 20_240_602  # fixes every synthetic validation set, a different draw from the test set


@dataclass
class Batch:
    """Inputs and targets. ``x`` is batch-first: (B, T, I) floats, (B, T) int64 symbols when the
    task's ``vocab`` is set, or a PackedSequence for variable-length series."""

    x: Tensor | PackedSequence
    y: Tensor


class Task:
    """The interface every task implements (see the concrete classes below for examples).

    Attributes:
        input_size: features per step, or the number of symbols when ``vocab`` is set.
        output_size: regression outputs or classes.
        vocab: None for real-valued inputs; otherwise inputs are symbol ids in [0, input_size).
        per_step: targets at every step (B, T) instead of one per sequence (B,).
        metric: the name of the headline test metric; ``lower_is_better`` says which way is good.
        baseline: the headline metric of a model that has learnt nothing useful.
        solved_below: the headline value under which the task counts as solved, if it has one.
        solved_rule: what ``solved`` checks, in words (for reports).
    """

    name: ClassVar[str]
    metric: ClassVar[str]
    lower_is_better: ClassVar[bool] = True
    regression: ClassVar[bool] = False
    per_step: ClassVar[bool] = False
    solved_below: ClassVar[float | None] = None
    solved_rule: ClassVar[str] = "never (no threshold defined)"
    vocab: str | None = None
    input_size: int
    output_size: int
    baseline: float

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this task with ``get_task`` (JSON-serialisable)."""
        return {}

    def train_batch(self, gen: torch.Generator, batch_size: int) -> Batch:
        raise NotImplementedError

    def test_batches(self, batch_size: int = 500) -> list[Batch]:
        raise NotImplementedError

    def validation_batches(self, batch_size: int = 500) -> list[Batch]:
        """Data for choosing among checkpoints, disjoint from the test set; tasks without one
        raise NotImplementedError."""
        raise NotImplementedError

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """The training loss: MSE for regression, mean cross-entropy for classes."""
        if self.regression:
            return F.mse_loss(out.squeeze(-1), y)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    def score(self, out: Tensor, y: Tensor) -> dict[str, float]:
        """Test metrics from all test outputs and targets, concatenated along the batch."""
        if self.regression:
            return {self.metric: F.mse_loss(out.squeeze(-1), y).item()}
        ce = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).item()
        acc = (out.argmax(-1) == y).double().mean().item()
        return {"test_ce": ce, "test_acc": acc}

    def solved(self, metrics: dict[str, float]) -> bool:
        """Whether the headline metric shows the task was learnt (each task says what that means)."""
        return False

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, batch_size: int = 500,
                 split: str = "test") -> dict[str, float]:
        """Score ``model`` on the whole test set, or with ``split="validation"`` on the validation
        set (in eval mode; the mode is restored after)."""
        batches = self.test_batches if split == "test" else self.validation_batches
        was_training = model.training
        model.eval()
        outs, ys = [], []
        for batch in batches(batch_size):
            outs.append(model(batch.x))
            ys.append(batch.y)
        model.train(was_training)
        return self.score(torch.cat(outs), torch.cat(ys))


class SyntheticTask(Task):
    """A task whose data is generated: the test and validation sets are fixed draws of
    ``train_batch`` (``test_size`` sequences each, from TEST_SEED and VALID_SEED)."""

    test_size: int

    def _fixed(self, seed: int, batch_size: int) -> list[Batch]:
        gen = torch.Generator().manual_seed(seed)
        sizes = [batch_size] * (self.test_size // batch_size) + [self.test_size % batch_size]
        return [self.train_batch(gen, n) for n in sizes if n]

    def test_batches(self, batch_size: int = 500) -> list[Batch]:
        return self._fixed(TEST_SEED, batch_size)

    def validation_batches(self, batch_size: int = 500) -> list[Batch]:
        return self._fixed(VALID_SEED, batch_size)
