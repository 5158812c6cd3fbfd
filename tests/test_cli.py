"""The gatedrnn command: each subcommand end to end on tiny settings, and its error reporting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gatedrnn import cli


def test_python_m_gatedrnn_is_the_command() -> None:
    out = subprocess.run([sys.executable, "-m", "gatedrnn", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("compare", "train", "sample", "plot", "bench"):
        assert command in out.stdout


def test_bench_is_handed_its_arguments(monkeypatch) -> None:
    import types

    seen = []
    fake = types.ModuleType("gatedrnn.toolkit.bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "gatedrnn.toolkit.bench", fake)
    monkeypatch.setattr("gatedrnn.toolkit.bench", fake, raising=False)
    assert cli.main(["bench", "--quick", "--cells", "gru"]) == 0
    assert seen == [["--quick", "--cells", "gru"]]


def test_train_with_variants_then_resume(tmp_path: Path, capsys) -> None:
    args = ["train", "--task", "adding", "--length", "10", "--cell", "lstm", "--hidden", "6",
            "--steps", "4", "--eval-every", "2", "--layer-norm", "--peephole", "--forget-bias", "1",
            "--zoneout", "0.1", "--out", str(tmp_path), "--no-progress"]
    assert cli.main(args) == 0
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    rnn = meta["model"]["rnn"]
    assert (rnn["type"], rnn["layer_norm"], rnn["peephole"], rnn["forget_bias"]) == ("LSTM", True, True, 1.0)
    assert cli.main([*args[:-3], "--steps", "6", "--out", str(tmp_path), "--resume", "--no-progress"]) == 0
    assert [json.loads(s)["step"] for s in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6]
    assert "lstm on adding" in capsys.readouterr().out


def test_gru_reset_before_and_the_rnn_refusing_gru_options(tmp_path: Path, capsys) -> None:
    base = ["train", "--task", "adding", "--length", "6", "--hidden", "4", "--steps", "2", "--no-progress"]
    assert cli.main([*base, "--cell", "gru", "--no-reset-after", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "checkpoint.json").read_text())["model"]["rnn"]["reset_after"] is False
    capsys.readouterr()
    assert cli.main([*base, "--cell", "rnn", "--layer-norm"]) == 1  # the plain RNN has no variants
    assert "layer_norm" in capsys.readouterr().err


def test_errors_are_reported_with_exit_status_1(tmp_path: Path, capsys) -> None:
    assert cli.main(["train", "--task", "nope", "--steps", "1", "--no-progress"]) == 1
    assert "unknown task" in capsys.readouterr().err
    assert cli.main(["train", "--task", "mnist1d", "--length", "5", "--no-progress"]) == 1
    assert "takes no --length" in capsys.readouterr().err
    assert cli.main(["sample", str(tmp_path)]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_compare_writes_the_report_and_plot_redraws_it(tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert cli.main(["compare", "--length", "8", "--hidden", "4", "--steps", "4", "--eval-every", "2",
                     "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for label in ("tanh RNN", "LSTM", "GRU", "baseline"):
        assert label in printed
    names = {p.name for p in out.iterdir()}
    assert {"results.md", "results.csv", "learning_curves.png", "gradient_norms.png", "gates_lstm.png",
            "gates_gru.png", "gates_rnn.png", "rnn", "lstm", "gru"} <= names
    assert (out / "results.csv").read_text().splitlines()[0].startswith("cell,parameters,train_seconds")
    for png in out.glob("*.png"):
        png.unlink()
    assert cli.main(["plot", str(out)]) == 0
    assert len(list(out.glob("*.png"))) == 5


def test_sample_from_a_char_model(tmp_path: Path, capsys) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat. " * 200)
    run = tmp_path / "run"
    assert cli.main(["train", "--task", "charlm", "--text", str(text), "--length", "16", "--hidden", "8",
                     "--steps", "3", "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["sample", str(run), "--chars", "30", "--temperature", "0.5", "--prime", "the"]) == 0
    sample = capsys.readouterr().out
    assert sample.startswith("the") and len(sample.rstrip("\n")) >= 33
    assert set(sample) <= set("the cat sat on the mat. \n")
