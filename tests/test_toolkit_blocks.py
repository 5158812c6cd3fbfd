"""Residual blocks (gatedrnn.toolkit.blocks) and the selective copying task: shapes, causality,
determinism under a seed, checkpoints, and that a tiny run learns."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

from gatedrnn import cli
from gatedrnn.toolkit import BlockStack
from gatedrnn.toolkit.model import build_model, check_model_config, model_from_config
from gatedrnn.toolkit.tasks import SelectiveCopy, get_task
from gatedrnn.toolkit.train import TrainConfig, train

CELLS = ["lstm", "gru", "rnn", "mingru", "minlstm", "slstm"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("block", ["plain", "conv"])
def test_every_cell_stacks_and_each_step_sees_only_the_past(cell: str, block: str) -> None:
    torch.manual_seed(0)
    model = BlockStack(cell, 3, 8, 5, layers=3, block=block, per_step=True)
    x = torch.randn(2, 12, 3)
    out = model(x)
    assert out.shape == (2, 12, 5)
    changed = x.clone()
    changed[:, 7:] += 1.0  # a change at step 7 must leave steps 0..6 alone
    after = model(changed)
    assert torch.equal(after[:, :7], out[:, :7]) and not torch.allclose(after[:, 7:], out[:, 7:])


def test_packed_sequences_read_each_sequences_own_last_step() -> None:
    torch.manual_seed(0)
    model = BlockStack("gru", 2, 8, 4, layers=2, block="conv")
    seqs = [torch.randn(n, 2) for n in (5, 9, 3)]
    packed = model(pack_sequence(seqs, enforce_sorted=False))
    alone = torch.cat([model(s.unsqueeze(0)) for s in seqs])
    torch.testing.assert_close(packed, alone)


def test_symbol_inputs_are_embedded_and_the_config_round_trips() -> None:
    task = get_task("selective-copy", length=20, n_symbols=4)
    torch.manual_seed(0)
    model = build_model(task, "slstm", 8, 3, "conv")
    assert isinstance(model, BlockStack) and len(model.blocks) == 3
    config = check_model_config("here", model.get_config())
    twin = model_from_config(config)
    twin.load_state_dict(model.state_dict())
    x = task.train_batch(gen(), 3).x
    assert model(x).shape == (3, 24, 9)
    torch.testing.assert_close(twin(x), model(x))
    with pytest.raises(Exception, match="block config"):
        check_model_config("here", {**config, "block": {**config["block"], "kind": "huge"}})


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="block must be"):
        BlockStack("gru", 1, 4, 2, block="tower")
    with pytest.raises(ValueError, match="cell must be"):
        BlockStack("transformer", 1, 4, 2)
    with pytest.raises(ValueError, match="return_gates"):
        BlockStack("gru", 1, 4, 2)(torch.randn(1, 3, 1), return_gates=True)


def test_selective_copy_layout_and_chance_baseline() -> None:
    T, K = 30, 5
    task = SelectiveCopy(length=T, n_symbols=K)
    a, b = task.train_batch(gen(3), 16), task.train_batch(gen(3), 16)
    assert torch.equal(a.x, b.x) and a.x.shape == a.y.shape == (16, T + K)
    region = a.x[:, :T]
    assert ((region > 0).sum(1) == K).all() and (a.x[:, T] == 9).all() and (a.x[:, T + 1:] == 0).all()
    # The symbols come back in the order they appeared.
    assert torch.equal(region[region > 0].view(16, K), a.y[:, -K:])
    assert (a.y[:, :T] == 0).all()
    # Different sequences put their symbols in different places (the "selective" part).
    assert len({tuple(torch.nonzero(r).flatten().tolist()) for r in region}) > 1
    uniform = torch.zeros(16, T + K, 9)
    uniform[..., 0] = -1e9
    scores = task.score(uniform, a.y)
    assert math.isclose(scores["test_ce"], math.log(8), rel_tol=1e-6)
    assert task.baseline == 1 / 8 and task.solved({"test_acc": 0.995}) and not task.solved({"test_acc": 0.9})


def test_a_tiny_block_run_learns_and_repeats_under_its_seed() -> None:
    # Selective copying with one symbol among six steps: learnable in a few hundred steps.
    cfg = TrainConfig(task="selective-copy", task_args={"length": 6, "n_symbols": 1, "test_size": 200},
                      cell="gru", hidden=16, layers=2, block="conv", steps=150, lr=1e-2, batch=32,
                      eval_every=150, progress=False)
    first, again = train(cfg), train(cfg)
    assert first.losses == again.losses  # bitwise: the batches and the weights follow the seed
    start, end = sum(first.losses[:10]) / 10, sum(first.losses[-10:]) / 10
    assert end < 0.5 * start, (start, end)  # measured: 2.1 -> about 0.3
    assert first.final["test_acc"] > 0.5  # chance is 1/8


def test_the_command_line_trains_a_block_and_resumes_it(tmp_path: Path, capsys) -> None:
    argv = ["train", "--task", "selective-copy", "--length", "12", "--cell", "minlstm", "--block", "conv",
            "--layers", "3", "--hidden", "8", "--batch", "4", "--eval-every", "2", "--out", str(tmp_path)]
    assert cli.main([*argv, "--steps", "2"]) == 0
    assert cli.main([*argv, "--steps", "4", "--resume"]) == 0
    assert "test_acc" in capsys.readouterr().out


def test_sampling_a_block_run_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    argv = ["train", "--task", "charlm", "--length", "16", "--cell", "gru", "--block", "plain",
            "--hidden", "4", "--batch", "2", "--steps", "1", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["sample", str(tmp_path), "--chars", "5"]) == 1
    assert "--block" in capsys.readouterr().err
