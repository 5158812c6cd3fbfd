"""Per-task module options: what compare and `gatedrnn train` give each cell, and how to undo them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatedrnn import cli
from gatedrnn.toolkit import compare, defaults, tasks
from gatedrnn.toolkit.train import TrainConfig


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru", "mingru", "minlstm", "slstm"])
def test_every_cell_gets_the_task_options_and_only_lstm_gru_the_variants(cell: str) -> None:
    options = compare.model_options("japanese-vowels", cell, {})
    assert options["bidirectional"] is True
    assert ("recurrent_dropout" in options) == (cell in compare.VARIANT_CELLS)


def test_the_lstm_keeps_chrono_on_copy_unless_given_other_options() -> None:
    assert compare.model_options("copy", "lstm", {"length": 50}) == {"init": "chrono", "chrono_max_len": 70}
    assert compare.model_options("copy", "lstm", {"length": 50}, {}) == {}
    assert compare.model_options("copy", "gru", {"length": 50}) == {}


def _captured_config(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> object:
    seen = {}

    def fake_train(cfg):  # type: ignore[no-untyped-def]
        seen["cfg"] = cfg
        return type("R", (), {"history": [], "final": {}})()

    monkeypatch.setattr("gatedrnn.toolkit.train.train", fake_train)
    assert cli.main(argv) == 0
    return seen["cfg"]


def test_train_uses_the_task_options_and_no_flags_turn_them_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "TASK_OPTIONS", {"mnist1d": {"bidirectional": True}})
    monkeypatch.setattr(defaults, "VARIANT_OPTIONS", {"mnist1d": {"zoneout": 0.1}})
    cfg = _captured_config(monkeypatch, ["train", "--task", "mnist1d", "--cell", "gru", "--no-progress"])
    assert cfg.options == {"bidirectional": True, "zoneout": 0.1}  # type: ignore[attr-defined]
    cfg = _captured_config(monkeypatch, ["train", "--task", "mnist1d", "--cell", "gru", "--no-progress",
                                         "--no-bidirectional", "--zoneout", "0.2"])
    assert cfg.options == {"bidirectional": False, "zoneout": 0.2}  # type: ignore[attr-defined]


def test_init_on_the_command_line_drops_chrono(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _captured_config(monkeypatch, ["train", "--task", "copy", "--length", "20", "--cell", "lstm",
                                         "--init", "torch", "--no-progress"])
    assert cfg.options == {"init": "torch"}  # type: ignore[attr-defined]
    cfg = _captured_config(monkeypatch, ["train", "--task", "copy", "--length", "20", "--cell", "lstm",
                                         "--no-progress"])
    assert cfg.options == {"init": "chrono", "chrono_max_len": 40}  # type: ignore[attr-defined]


def test_help_lists_the_task_options() -> None:
    text = cli._task_defaults()
    assert "japanese-vowels  --bidirectional; LSTM/GRU also --recurrent-dropout 0.25" in text


def test_blocks_take_no_task_direction_and_refuse_one_given() -> None:
    from gatedrnn.toolkit.blocks import BlockStack

    options = compare.model_options("japanese-vowels", "gru", {}, block="conv")
    assert "bidirectional" not in options and options["recurrent_dropout"] == 0.25
    for key, value in (("bidirectional", True), ("proj_size", 4)):
        with pytest.raises(ValueError, match=f"{key} is not available in blocks"):
            BlockStack("lstm", 3, 8, 2, layers=1, **{key: value})


# --- TrainConfig takes the command line's per-task defaults ---

def _help_defaults(task: str, cell: str) -> dict[str, float]:
    """The settings `gatedrnn train --help` prints for (task, cell): the task's line of the
    per-task table, then the per-cell line where there is one."""
    lines = cli._task_defaults().splitlines()
    found = [line for line in lines if line.strip().startswith((task + " ", "other tasks"))][:1]
    found += [line for line in lines if line.strip().startswith(f"--task {task} --cell {cell}:")]
    values: dict[str, float] = {}
    for line in found:
        for item in line.split(":")[-1].split(","):
            if "--" in item:
                flag, value = item.split("--")[-1].split()
                values[flag.replace("-", "_")] = float(value)
    return values


@pytest.mark.parametrize("task", sorted(set(tasks.task_names())))
def test_train_config_defaults_are_the_command_lines(monkeypatch: pytest.MonkeyPatch, task: str) -> None:
    for cell in cli.CELLS:
        from_cli = _captured_config(monkeypatch, ["train", "--task", task, "--cell", cell, "--no-progress"])
        ours = TrainConfig(task=task, cell=cell, progress=False)
        assert from_cli == ours, (task, cell)
        # and both are what the help table says
        shown = _help_defaults(task, cell)
        keys = ("hidden", "batch", "lr", "steps")
        assert {k: float(getattr(ours, k)) for k in keys} == {k: shown[k] for k in keys}, (task, cell)
        assert ours.decay_steps == shown.get("decay_steps", 0) and ours.eval_every == ours.steps // 20
        assert ours.task_args == ({"length": int(shown["length"])} if "length" in shown else {})
        assert ours.options == compare.model_options(task, cell, ours.task_args)


@settings(max_examples=30, deadline=None)
@given(hidden=st.integers(1, 512), batch=st.integers(1, 512), steps=st.integers(1, 10**5),
       lr=st.floats(1e-6, 1.0), decay=st.integers(0, 10**5), every=st.integers(1, 10**5),
       task=st.sampled_from(["adding", "copy", "charlm", "japanese-vowels", "selective-copy"]),
       cell=st.sampled_from(cli.CELLS), options=st.sampled_from([{}, {"zoneout": 0.1}]),
       task_args=st.sampled_from([{}, {"length": 7}]))
def test_values_given_to_train_config_are_kept(hidden: int, batch: int, steps: int, lr: float, decay: int,
                                               every: int, task: str, cell: str, options: dict,
                                               task_args: dict) -> None:
    # What the benchmarks and compare() build: every per-task setting given, none replaced.
    cfg = TrainConfig(task=task, cell=cell, hidden=hidden, batch=batch, steps=steps, lr=lr,
                      decay_steps=decay, eval_every=every, options=options, task_args=task_args)
    assert (cfg.hidden, cfg.batch, cfg.steps, cfg.lr, cfg.decay_steps, cfg.eval_every, cfg.options,
            cfg.task_args) == (hidden, batch, steps, lr, decay, every, options, task_args)
