"""Training loop, checkpoints and analysis: exact resume, atomic writes, failures reported clearly."""

from __future__ import annotations

import doctest
import json
import os
from pathlib import Path

import pytest
import torch

import gatedrnn.toolkit.analysis
import gatedrnn.toolkit.checkpoint
import gatedrnn.toolkit.model
import gatedrnn.toolkit.sample
import gatedrnn.toolkit.tasks
import gatedrnn.toolkit.train
import gatedrnn.toolkit.tsfile
from gatedrnn.toolkit import checkpoint
from gatedrnn.toolkit.analysis import hidden_gradient_norms, inside
from gatedrnn.toolkit.model import build_model
from gatedrnn.toolkit.tasks import AddingProblem, Batch, get_task
from gatedrnn.toolkit.train import NonFiniteLossError, TrainConfig, train

MODULES = [gatedrnn.toolkit.analysis, gatedrnn.toolkit.checkpoint, gatedrnn.toolkit.model,
           gatedrnn.toolkit.sample, gatedrnn.toolkit.tasks, gatedrnn.toolkit.train,
           gatedrnn.toolkit.tsfile]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


def small(**kw) -> TrainConfig:
    base = dict(task="adding", task_args={"length": 12}, cell="gru", hidden=8, eval_every=3,
                progress=False)
    return TrainConfig(**{**base, **kw})


def without_time(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(s).items() if k != "time"} for s in path.read_text().splitlines()]


@pytest.mark.parametrize("cell, options", [
    ("lstm", {"zoneout": 0.1, "recurrent_dropout": 0.2}),  # random masks: the RNG must resume too
    ("gru", {"weight_drop": 0.3}),
    ("rnn", {}),
])
def test_resume_is_bitwise_the_uninterrupted_run(tmp_path: Path, cell: str, options: dict) -> None:
    full = train(small(cell=cell, options=options, steps=12, out=str(tmp_path / "a")))
    train(small(cell=cell, options=options, steps=6, out=str(tmp_path / "b")))
    rest = train(small(cell=cell, options=options, steps=12, out=str(tmp_path / "b"), resume=True))
    assert full.losses[6:] == rest.losses
    for (name, a), b in zip(full.model.state_dict().items(), rest.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert without_time(tmp_path / "a" / "metrics.jsonl") == without_time(tmp_path / "b" / "metrics.jsonl")


def test_resume_refuses_a_different_model(tmp_path: Path) -> None:
    train(small(steps=3, out=str(tmp_path)))
    with pytest.raises(checkpoint.CheckpointError, match="different model"):
        train(small(steps=6, hidden=9, out=str(tmp_path), resume=True))


def test_optimizer_state_round_trips_exactly_without_pickle(tmp_path: Path) -> None:
    result = train(small(steps=3, out=str(tmp_path)))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["checkpoint.json", "metrics.jsonl", "weights-00000003.safetensors"]
    ckpt = checkpoint.load_checkpoint(tmp_path)
    opt = torch.optim.Adam(result.model.parameters(), lr=1e-3)
    ckpt.restore_optimizer(opt)
    state = opt.state_dict()
    assert len(state["state"]) == len(list(result.model.parameters()))
    assert isinstance(state["param_groups"][0]["betas"], tuple)
    assert ckpt.meta["model"] == result.model.get_config()


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "f.json"
    checkpoint.atomic_write_json(target, {"v": 1})

    def crash(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        checkpoint.atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left behind


class NaNAt(AddingProblem):
    """The adding problem, except that step ``bad`` goes wrong: a NaN input (a NaN loss), or a
    loss that stays finite while its gradient is NaN (d sqrt(u)/du = inf at u = 0, times 0)."""

    def __init__(self, bad: int, where: str = "loss") -> None:
        super().__init__(length=8)
        self.bad, self.where, self.calls = bad, where, 0

    def train_batch(self, gen: torch.Generator, batch_size: int) -> Batch:
        self.calls += 1
        batch = super().train_batch(gen, batch_size)
        if self.calls == self.bad and self.where == "loss":
            batch.x[0, 0, 0] = float("nan")
        return batch

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = super().loss(out, y)
        if self.calls == self.bad and self.where == "gradient":
            loss = loss + torch.sqrt(out.sum() * 0)  # value unchanged, gradient NaN
        return loss

    def test_batches(self, batch_size: int = 500) -> list[Batch]:
        return AddingProblem(length=8).test_batches(batch_size)  # not counted as training steps


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_non_finite_step_never_reaches_the_weights(tmp_path: Path, where: str) -> None:
    with pytest.raises(NonFiniteLossError, match=rf"step 5 the {where}.*without updating the weights.*"
                                                 rf"{tmp_path}/checkpoint.json \(step 3, "
                                                 r"weights-00000003.safetensors\)"):
        train(small(steps=9, out=str(tmp_path)), task=NaNAt(bad=5, where=where))
    ckpt = checkpoint.load_checkpoint(tmp_path)
    assert ckpt.meta["step"] == 3
    assert all(torch.isfinite(t).all() for t in ckpt.tensors.values() if t.is_floating_point())
    # The named checkpoint resumes, and the run goes on to the end.
    rest = train(small(steps=9, out=str(tmp_path), resume=True), task=AddingProblem(length=8))
    assert [r["step"] for r in rest.history] == [3, 6, 9] and len(rest.losses) == 6


def test_weights_that_overflow_are_never_saved(tmp_path: Path, monkeypatch) -> None:
    # A finite gradient times a huge lr can overflow the weights; stand in for that with an
    # optimizer step that writes an inf at step 2.
    real_step, steps = torch.optim.Adam.step, []

    def overflowing(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 2:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("inf")
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", overflowing)
    with pytest.raises(NonFiniteLossError, match=r"step 2 the weights became non-finite.*\(step 1,"):
        train(small(steps=3, eval_every=1, out=str(tmp_path)))
    ckpt = checkpoint.load_checkpoint(tmp_path)
    assert ckpt.meta["step"] == 1
    assert all(torch.isfinite(t).all() for t in ckpt.model_state.values())


@pytest.mark.parametrize("damage", ["truncate", "flip", "json", "missing"])
def test_damaged_checkpoints_raise_a_clear_error(tmp_path: Path, damage: str) -> None:
    train(small(steps=3, out=str(tmp_path)))
    weights = tmp_path / "weights-00000003.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "flip":
        blob = bytearray(weights.read_bytes())
        blob[-5] ^= 0xFF
        weights.write_bytes(bytes(blob))
    elif damage == "json":
        meta = tmp_path / "checkpoint.json"
        meta.write_text(meta.read_text()[:50])
    else:
        weights.unlink()
    with pytest.raises(checkpoint.CheckpointError, match="corrupt|missing"):
        checkpoint.load_checkpoint(tmp_path)


def test_gradient_norms_match_an_unrolled_torch_nn_cell() -> None:
    task = AddingProblem(length=15)
    torch.manual_seed(1)
    model = build_model(task, "gru", 6)
    batch = task.train_batch(torch.Generator().manual_seed(0), 4)
    ours = hidden_gradient_norms(model, task, batch)
    # The reference: torch.nn.GRUCell with the same weights, one step at a time, per sequence.
    cell = torch.nn.GRUCell(2, 6)
    rnn = model.rnn
    cell.load_state_dict({"weight_ih": rnn.weight_ih_l0, "weight_hh": rnn.weight_hh_l0,
                          "bias_ih": rnn.bias_ih_l0, "bias_hh": rnn.bias_hh_l0})
    h, hs = torch.zeros(4, 6), []
    for t in range(15):
        h = cell(batch.x[:, t], h)
        h.retain_grad()
        hs.append(h)
    loss = ((model.head(h).squeeze(-1) - batch.y) ** 2).sum()  # the sum of per-sequence losses
    loss.backward()
    reference = torch.stack([g.grad.norm(dim=-1).mean() for g in hs])
    assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-12)


def test_gate_maps_come_from_return_gates() -> None:
    task = get_task("adding", length=7)
    x = task.train_batch(torch.Generator().manual_seed(0), 1).x
    shown = [("lstm", {"forget", "input", "output"}), ("gru", {"reset", "update"}), ("rnn", set())]
    for cell, names in shown:
        model = build_model(task, cell, 5)
        maps = inside(model, x)
        assert set(maps) == names | {"hidden"}
        assert all(v.shape == (7, 5) for v in maps.values())
        if cell == "gru":
            _, _, gates = model.rnn(x, return_gates=True)
            assert torch.equal(maps["update"], gates["update"][-1, :, 0])


# --- a run is never overwritten unasked ---

def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_that_holds_a_run_is_refused_unless_resumed_or_overwritten(tmp_path: Path) -> None:
    from gatedrnn.toolkit import plots

    train(small(steps=3, out=str(tmp_path)))
    plots.redraw(tmp_path)  # the figure that used to outlive an overwritten run
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "results.md").write_text("mine too")  # a compare report's name, not a train run's
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match=r"already holds a run .*resume=True.*overwrite=True"):
        train(small(steps=2, out=str(tmp_path)))
    assert snapshot(tmp_path) == before  # nothing written, nothing deleted
    with pytest.raises(ValueError, match="give one of them"):
        train(small(steps=6, out=str(tmp_path), resume=True, overwrite=True))
    assert snapshot(tmp_path) == before

    train(small(steps=2, out=str(tmp_path), overwrite=True))
    assert sorted(snapshot(tmp_path)) == ["checkpoint.json", "metrics.jsonl", "notes.txt", "results.md",
                                          "weights-00000002.safetensors"]  # no stale figure
    assert [json.loads(s)["step"] for s in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2]
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not files of the run: kept


def test_compare_refuses_a_report_and_overwrite_leaves_nothing_stale(tmp_path: Path) -> None:
    from gatedrnn.toolkit.compare import compare

    tiny = dict(task_args={"length": 6}, hidden=3, steps=2, eval_every=1, progress=False)
    compare("adding", ("rnn", "gru"), out=tmp_path, **tiny)
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="already holds a report .*overwrite=True"):
        compare("adding", ("lstm",), out=tmp_path, **tiny)
    assert snapshot(tmp_path) == before
    compare("adding", ("lstm",), out=tmp_path, overwrite=True, **tiny)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["gates_lstm.png", "gradient_norms.png", "learning_curves.png", "lstm", "results.csv",
                     "results.md"]  # the rnn and gru runs, and their figures, are gone


def test_train_resolves_the_task_defaults_and_records_them(tmp_path: Path) -> None:
    # The main job's published settings for the adding problem (README: hidden 64, batch 32,
    # Adam 3e-3, 2000 steps, chrono for the LSTM), where TrainConfig once had lr 1e-3, batch 64.
    cfg = TrainConfig(task="adding", cell="lstm")
    assert (cfg.hidden, cfg.batch, cfg.lr, cfg.steps, cfg.eval_every, cfg.decay_steps) == (64, 32, 3e-3, 2000,
                                                                                          100, 0)
    assert cfg.task_args == {"length": 100} and cfg.options == {"init": "chrono", "chrono_max_len": 100}
    train(TrainConfig(task="adding", task_args={"length": 6}, hidden=3, steps=2, out=str(tmp_path),
                      progress=False))
    saved = json.loads((tmp_path / "checkpoint.json").read_text())["train"]
    assert (saved["lr"], saved["batch"], saved["eval_every"], saved["options"]) == (3e-3, 32, 1, {})
