"""Model selection on a validation split: held out from training, disjoint from the test set."""

from __future__ import annotations

import pytest
import torch

from gatedrnn.toolkit.datasets import _holdout
from gatedrnn.toolkit.tasks import CopyMemory, get_task
from gatedrnn.toolkit.train import TrainConfig, TrainResult, train


def test_the_holdout_is_fixed_disjoint_and_the_size_asked() -> None:
    train_idx, valid_idx = _holdout(4000, 0.1)
    again = _holdout(4000, 0.1)
    assert torch.equal(train_idx, again[0]) and torch.equal(valid_idx, again[1])
    assert len(valid_idx) == 400 and len(train_idx) == 3600
    assert not set(train_idx.tolist()) & set(valid_idx.tolist())


def test_synthetic_validation_is_another_draw_than_the_test_set() -> None:
    task = CopyMemory(length=10, test_size=50)
    test, valid = task.test_batches()[0], task.validation_batches()[0]
    assert test.x.shape == valid.x.shape and not torch.equal(test.x, valid.x)
    assert torch.equal(valid.x, task.validation_batches()[0].x)


def test_mnist1d_trains_only_on_what_is_not_held_out() -> None:
    task = get_task("mnist1d")
    held = {tuple(task.x[i, :, 0].tolist()) for i in task.valid_idx.tolist()}
    batch = task.train_batch(torch.Generator().manual_seed(0), 256)
    assert not {tuple(row[:, 0].tolist()) for row in batch.x} & held
    assert sum(len(b.y) for b in task.validation_batches()) == 400 and len(task.y_test) == 1000


def test_selection_reads_the_validation_score_never_the_test_score() -> None:
    task = CopyMemory(length=5)
    history = [{"step": 1, "test_ce": 0.1, "valid_ce": 0.9}, {"step": 2, "test_ce": 0.5, "valid_ce": 0.2},
               {"step": 3, "test_ce": 0.05, "valid_ce": 0.4}]
    result = TrainResult(torch.nn.Linear(1, 1), task, history, [], 0.0, 0)  # type: ignore[arg-type]
    assert result.selected["step"] == 2
    assert TrainResult(torch.nn.Linear(1, 1), task, history[:1] + [{"step": 2, "test_ce": 0.0}], [], 0.0,  # type: ignore[arg-type]
                       0).selected["step"] == 1


def test_a_run_with_select_logs_validation_scores() -> None:
    cfg = TrainConfig(task="copy", task_args={"length": 4, "test_size": 20}, cell="gru", hidden=4,
                      steps=4, eval_every=2, progress=False, select=True)
    result = train(cfg)
    assert all("valid_ce" in r and "valid_acc" in r for r in result.history)


def test_the_learning_rate_falls_to_zero_over_the_last_decay_steps(monkeypatch) -> None:
    seen: list[float] = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    cfg = TrainConfig(task="copy", task_args={"length": 4, "test_size": 20}, cell="gru", hidden=4,
                      steps=6, eval_every=6, lr=0.01, decay_steps=4, progress=False)
    train(cfg)
    assert seen == pytest.approx([0.01, 0.01, 0.01, 0.0075, 0.005, 0.0025])


def test_ties_on_accuracy_go_to_the_lower_validation_cross_entropy() -> None:
    task = get_task("mnist1d")
    history = [{"step": 1, "test_acc": 0.9, "valid_acc": 0.8, "valid_ce": 0.7},
               {"step": 2, "test_acc": 0.7, "valid_acc": 0.9, "valid_ce": 0.5},
               {"step": 3, "test_acc": 0.95, "valid_acc": 0.9, "valid_ce": 0.3},
               {"step": 4, "test_acc": 0.1, "valid_acc": 0.9, "valid_ce": 0.3}]
    result = TrainResult(torch.nn.Linear(1, 1), task, history, [], 0.0, 0)  # type: ignore[arg-type]
    assert result.selected["step"] == 3  # best accuracy, then lowest cross-entropy, then earliest
    no_ce = [{k: v for k, v in r.items() if k != "valid_ce"} for r in history]
    assert TrainResult(torch.nn.Linear(1, 1), task, no_ce, [], 0.0, 0).selected["step"] == 2  # type: ignore[arg-type]
