"""Selection on a validation set keeps the best evaluation's weights: in memory, in the run folder
(best-STEP.safetensors, named by the checkpoint), across a resume, and for ``gatedrnn quantize``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gatedrnn import cli
from gatedrnn.toolkit import checkpoint
from gatedrnn.toolkit.model import model_from_config
from gatedrnn.toolkit.quantize import load_run, quantize_run
from gatedrnn.toolkit.train import TrainConfig, train


def small(**kw) -> TrainConfig:
    base = dict(task="adding", task_args={"length": 10}, cell="gru", hidden=8, steps=40,
                eval_every=5, progress=False, select=True)
    return TrainConfig(**{**base, **kw})


def test_the_kept_weights_score_what_the_selected_record_logged(tmp_path: Path) -> None:
    result = train(small(out=str(tmp_path)))
    chosen = result.selected
    assert chosen is not result.final, "pick a setting whose last evaluation is not the best"
    assert sorted(p.name for p in tmp_path.glob("best-*")) == [f"best-{chosen['step']:08d}.safetensors"]
    ckpt = checkpoint.load_checkpoint(tmp_path)
    step, state = checkpoint.load_best(ckpt)
    assert step == chosen["step"] and ckpt.meta["best"]["step"] == step
    assert all(torch.equal(state[k], v) for k, v in result.best_state.items())
    model = model_from_config(ckpt.meta["model"])
    model.load_state_dict(state)
    assert result.task.evaluate(model.eval()) == {"test_mse": chosen["test_mse"]}
    # and they are not the last step's weights
    assert not all(torch.equal(state[k], v) for k, v in result.model.state_dict().items())


def test_without_selection_nothing_is_kept(tmp_path: Path) -> None:
    result = train(small(out=str(tmp_path), select=False))
    assert result.best_state is None and not list(tmp_path.glob("best-*"))
    assert "best" not in checkpoint.load_checkpoint(tmp_path).meta
    assert load_run(tmp_path)[1]["weights"] == "last"


def test_in_memory_without_a_folder() -> None:
    result = train(small())
    model = model_from_config(result.model.get_config())
    model.load_state_dict(result.best_state)
    assert result.task.evaluate(model.eval())["test_mse"] == result.selected["test_mse"]


@pytest.mark.parametrize("stop", [20, 35])  # before the best evaluation (35), and at it
def test_a_resumed_run_keeps_the_same_best_bitwise(tmp_path: Path, stop: int) -> None:
    full = train(small(out=str(tmp_path / "a")))
    assert full.selected["step"] == 35
    train(small(out=str(tmp_path / "b"), steps=stop))
    rest = train(small(out=str(tmp_path / "b"), resume=True))
    untimed = [{k: v for k, v in r.selected.items() if k != "time"} for r in (rest, full)]
    assert untimed[0] == untimed[1]
    assert all(torch.equal(rest.best_state[k], v) for k, v in full.best_state.items())
    assert ([p.name for p in (tmp_path / "a").glob("best-*")]
            == [p.name for p in (tmp_path / "b").glob("best-*")])


def test_quantize_takes_the_best_weights_unless_told(tmp_path: Path, capsys) -> None:
    result = train(small(out=str(tmp_path)))
    best = quantize_run(tmp_path, tmp_path / "q-best.safetensors")
    last = quantize_run(tmp_path, tmp_path / "q-last.safetensors", weights="last")
    assert (best["weights"], best["step"]) == ("best", result.selected["step"])
    assert (last["weights"], last["step"]) == ("last", result.final["step"])
    assert best["before"] == {"test_mse": result.selected["test_mse"]}
    assert last["before"] == {"test_mse": result.final["test_mse"]}
    with pytest.raises(ValueError, match="weights must be one of"):
        load_run(tmp_path, "first")
    assert cli.main(["quantize", str(tmp_path), "--out", str(tmp_path / "q.safetensors")]) == 0
    assert f"best evaluation's weights, step {result.selected['step']}" in capsys.readouterr().out


def test_a_damaged_best_file_or_record_is_refused(tmp_path: Path) -> None:
    train(small(out=str(tmp_path)))
    ckpt = checkpoint.load_checkpoint(tmp_path)
    path = tmp_path / ckpt.meta["best"]["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="corrupted or truncated"):
        load_run(tmp_path)
    load_run(tmp_path, "last")  # the last step's weights are intact
    path.unlink()
    with pytest.raises(checkpoint.CheckpointError, match="best weights .* are missing"):
        load_run(tmp_path)
    meta = json.loads((tmp_path / checkpoint.META_FILE).read_text())
    for bad in ({"step": 999, "file": "best-00000999.safetensors", "sha256": "0" * 64},
                {"step": 3, "file": "../weights-00000030.safetensors", "sha256": "0" * 64}, "best"):
        record = {k: v for k, v in {**meta, "best": bad}.items() if k != "checksum"}
        checkpoint.atomic_write_json(tmp_path / checkpoint.META_FILE,
                                     {**record, "checksum": checkpoint.checksum(record)})
        with pytest.raises(checkpoint.CheckpointError, match="'best' must be"):
            checkpoint.load_checkpoint(tmp_path)


def test_overwrite_deletes_the_best_weights_too(tmp_path: Path) -> None:
    train(small(out=str(tmp_path)))
    assert list(tmp_path.glob("best-*"))
    train(small(out=str(tmp_path), select=False, overwrite=True))
    assert not list(tmp_path.glob("best-*"))


def test_the_command_line_selects(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert cli.main(["train", "--task", "adding", "--length", "10", "--hidden", "8", "--steps", "40",
                     "--eval-every", "5", "--select", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "best on the validation set: {'step': " in printed
    assert "best" in checkpoint.load_checkpoint(out).meta
