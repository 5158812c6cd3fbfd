"""Built-in tasks: what to learn, how to score it, and the number to beat.

A task is a data generator plus its metric. Training batches are a pure function of a
``torch.Generator`` that the trainer seeds from (seed, rank, step), so a resumed run sees exactly the
batches an uninterrupted one would, and no data loader has state to save. The test set is fixed by
the task alone (its own constant seed), so runs with different seeds are scored on the same data.

The interface (``Task``, ``Batch``) is in ``gatedrnn.toolkit.base``; the synthetic long-memory
tasks (adding, copy memory, selective copying) live here; the tasks on real data (MNIST-1D,
UEA/UCR series, text, sunspots) are in ``gatedrnn.toolkit.datasets``. ``get_task(name, **kwargs)``
builds either kind. Imports run one way: base <- datasets <- tasks.

Example:
    >>> import torch
    >>> task = get_task("adding", length=20)
    >>> batch = task.train_batch(torch.Generator().manual_seed(0), 4)
    >>> batch.x.shape, batch.y.shape, task.baseline
    (torch.Size([4, 20, 2]), torch.Size([4]), 0.16666666666666666)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import datasets
from .base import TEST_SEED, Batch, SyntheticTask, Task

__all__ = ["TEST_SEED", "Batch", "Task", "AddingProblem", "CopyMemory", "SelectiveCopy", "get_task",
           "task_class", "task_names"]


class AddingProblem(SyntheticTask):
    """The adding problem (Hochreiter & Schmidhuber 1997), in the form of Le et al. 2015 and Bai et
    al. 2018: each step carries (value ~ U(0, 1), marker); exactly two markers are 1, one in each
    half of the sequence, and the target is the sum of the two marked values.

    Predicting the mean, 1, scores MSE = Var(u1 + u2) = 2/12 = 0.167. A model has solved the task
    when its test MSE is below ``solved_below`` = 0.01, 6% of that baseline; a model that only learnt
    the second half's value (the easy, short-lag part) sits near 1/12 = 0.083.
    """

    name = "adding"
    metric = "test_mse"
    regression = True
    input_size, output_size = 2, 1
    baseline = 1.0 / 6.0
    solved_below = 0.01
    solved_rule = "test MSE < 0.01"

    def __init__(self, length: int = 100, test_size: int = 1000) -> None:
        if length < 2:
            raise ValueError(f"adding problem needs length >= 2, got {length}")
        self.length, self.test_size = int(length), int(test_size)

    def config(self) -> dict[str, Any]:
        return {"length": self.length, "test_size": self.test_size}

    def train_batch(self, gen: torch.Generator, batch_size: int) -> Batch:
        T, half = self.length, self.length // 2
        values = torch.rand(batch_size, T, generator=gen)
        first = torch.randint(0, half, (batch_size,), generator=gen)
        second = torch.randint(half, T, (batch_size,), generator=gen)
        markers = torch.zeros(batch_size, T)
        rows = torch.arange(batch_size)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = torch.stack([values, markers], dim=-1)  # (B, T, 2)
        y = values[rows, first] + values[rows, second]  # (B,)
        return Batch(x, y)

    def solved(self, metrics: dict[str, float]) -> bool:
        return metrics.get(self.metric, math.inf) < self.solved_below


class CopyMemory(SyntheticTask):
    """Copy memory (Arjovsky, Shah & Bengio 2016): ten symbols from {1..8}, then ``length`` - 1
    blanks (0), a delimiter (9) and ten more blanks; the model must output blanks for the first
    ``length`` + 10 steps and then the ten symbols. Sequences are ``length`` + 20 long.

    The headline metric is the cross-entropy over every step, as in Bai et al. 2018. A memoryless
    model that outputs blanks and then guesses uniformly scores 10·ln 8 / (length + 20), the
    baseline. ``test_acc`` is the accuracy on the ten recalled symbols alone (chance 1/8). The task
    counts as solved when that accuracy reaches 0.99 and the cross-entropy is below 5% of the
    baseline.
    """

    name = "copy"
    metric = "test_ce"
    per_step = True
    vocab = "_12345678:"  # 0 blank, 1..8 symbols, 9 delimiter
    input_size, output_size = 10, 9
    solved_rule = "recall accuracy >= 0.99 and cross-entropy < 5% of the baseline"
    N_SYMBOLS = 10

    def __init__(self, length: int = 100, test_size: int = 500) -> None:
        if length < 1:
            raise ValueError(f"copy memory needs length >= 1, got {length}")
        self.length, self.test_size = int(length), int(test_size)
        self.baseline = 10 * math.log(8) / (self.length + 20)

    def config(self) -> dict[str, Any]:
        return {"length": self.length, "test_size": self.test_size}

    def train_batch(self, gen: torch.Generator, batch_size: int) -> Batch:
        K, T = self.N_SYMBOLS, self.length
        symbols = torch.randint(1, 9, (batch_size, K), generator=gen)
        x = torch.zeros(batch_size, T + 2 * K, dtype=torch.long)
        x[:, :K] = symbols
        x[:, T + K - 1] = 9  # the delimiter: "recall now"
        y = torch.zeros_like(x)
        y[:, -K:] = symbols
        return Batch(x, y)

    def score(self, out: Tensor, y: Tensor) -> dict[str, float]:
        K = self.N_SYMBOLS
        ce = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).item()
        recall = (out[:, -K:].argmax(-1) == y[:, -K:]).double().mean().item()
        return {"test_ce": ce, "test_acc": recall}

    def solved(self, metrics: dict[str, float]) -> bool:
        return (metrics.get("test_acc", 0.0) >= 0.99
                and metrics.get("test_ce", math.inf) < 0.05 * self.baseline)


class SelectiveCopy(SyntheticTask):
    """Selective copying (Gu & Dao 2023, the Mamba paper): ``n_symbols`` symbols from {1..8} sit at
    random positions among ``length`` steps of noise (the blank, 0); after them a delimiter (9) and
    ``n_symbols`` - 1 blanks, during which the model must output the symbols in order. Unlike copy
    memory the positions change from sequence to sequence, so a fixed delay line cannot solve it:
    the model has to decide, from the content of each step, what to keep.

    Sequences are ``length`` + ``n_symbols`` long. The loss and the metrics cover the recall steps
    only, as in Gu & Dao (what comes before is noise with no target). The headline metric is the
    recall accuracy; chance is 1/8, the baseline. Solved: accuracy >= 0.99.
    Gu & Dao use 16 symbols among 4096 steps with a 16-symbol vocabulary; the defaults here are
    sized for a CPU (10 symbols among 100 steps).
    """

    name = "selective-copy"
    metric, lower_is_better = "test_acc", False
    per_step = True
    vocab = "_12345678:"  # 0 blank (noise), 1..8 symbols, 9 delimiter
    input_size, output_size = 10, 9
    baseline = 1 / 8
    solved_rule = "recall accuracy >= 0.99"

    def __init__(self, length: int = 100, n_symbols: int = 10, test_size: int = 500) -> None:
        if n_symbols < 1 or length < n_symbols:
            raise ValueError(f"selective copy needs 1 <= n_symbols <= length, got {n_symbols}, {length}")
        self.length, self.n_symbols, self.test_size = int(length), int(n_symbols), int(test_size)

    def config(self) -> dict[str, Any]:
        return {"length": self.length, "n_symbols": self.n_symbols, "test_size": self.test_size}

    def train_batch(self, gen: torch.Generator, batch_size: int) -> Batch:
        K, T = self.n_symbols, self.length
        symbols = torch.randint(1, 9, (batch_size, K), generator=gen)
        # K distinct positions per sequence, kept in increasing order so the recall order is theirs.
        positions = torch.rand(batch_size, T, generator=gen).argsort(-1)[:, :K].sort(-1).values
        x = torch.zeros(batch_size, T + K, dtype=torch.long)
        x.scatter_(1, positions, symbols)
        x[:, T] = 9  # the delimiter: "recall now"
        y = torch.zeros_like(x)
        y[:, -K:] = symbols
        return Batch(x, y)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        K = self.n_symbols
        return F.cross_entropy(out[:, -K:].reshape(-1, out.shape[-1]), y[:, -K:].reshape(-1))

    def score(self, out: Tensor, y: Tensor) -> dict[str, float]:
        K = self.n_symbols
        acc = (out[:, -K:].argmax(-1) == y[:, -K:]).double().mean().item()
        return {"test_acc": acc, "test_ce": self.loss(out, y).item()}

    def solved(self, metrics: dict[str, float]) -> bool:
        return metrics.get("test_acc", 0.0) >= 0.99


SYNTHETIC: dict[str, type[Task]] = {"adding": AddingProblem, "copy": CopyMemory,
                                    "selective-copy": SelectiveCopy}


def task_names() -> list[str]:
    """Every built-in task name (the real-data ones may still need an optional package)."""
    return sorted({**SYNTHETIC, **datasets.REAL})


def task_class(name: str) -> type[Task]:
    """The class of the task called ``name``; raises ValueError naming the choices."""
    registry = {**SYNTHETIC, **datasets.REAL}
    if name not in registry:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(registry)}")
    return registry[name]


def get_task(name: str, **kwargs: Any) -> Task:
    """Build a task by name; ``kwargs`` are its constructor arguments (see ``Task.config``)."""
    return task_class(name)(**kwargs)
