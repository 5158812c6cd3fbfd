"""Per-task module options: what compare and `gatedrnn train` give each cell, and how to undo them."""

from __future__ import annotations

import pytest

from gatedrnn import cli
from gatedrnn.toolkit import compare


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
    monkeypatch.setattr(compare, "TASK_OPTIONS", {"mnist1d": {"bidirectional": True}})
    monkeypatch.setattr(compare, "VARIANT_OPTIONS", {"mnist1d": {"zoneout": 0.1}})
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
