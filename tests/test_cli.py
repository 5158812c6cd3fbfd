"""The gatedrnn command: each subcommand end to end on tiny settings, and its error reporting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_into_a_finished_run_is_refused_and_overwrite_replaces_it(tmp_path: Path, capsys) -> None:
    run = ["train", "--task", "adding", "--length", "6", "--hidden", "3", "--steps", "2", "--no-progress",
           "--out", str(tmp_path)]
    assert cli.main(run) == 0 and cli.main(["plot", str(tmp_path)]) == 0
    before = files(tmp_path)
    capsys.readouterr()
    # Once this replaced metrics.jsonl and the weights and left the old learning_curves.png.
    assert_one_line_error(capsys, cli.main([*run, "--steps", "4"]), f"{tmp_path} already holds a run")
    assert files(tmp_path) == before
    assert_one_line_error(capsys, cli.main([*run, "--resume", "--overwrite"]), "give one of them")
    assert cli.main([*run, "--steps", "4", "--overwrite"]) == 0
    assert sorted(files(tmp_path)) == ["checkpoint.json", "metrics.jsonl", "weights-00000004.safetensors"]


def test_compare_twice_keeps_the_first_report(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    tiny = ["compare", "--length", "6", "--hidden", "3", "--steps", "2", "--eval-every", "1", "--no-progress"]
    assert cli.main([*tiny, "--cells", "gru"]) == 0
    first = files(tmp_path / "runs/compare")
    capsys.readouterr()
    assert cli.main([*tiny, "--cells", "gru"]) == 0  # the main job, again: a new numbered folder
    assert "runs/compare-2" in capsys.readouterr().err
    assert files(tmp_path / "runs/compare") == first
    assert files(tmp_path / "runs/compare-2").keys() == first.keys()
    assert_one_line_error(capsys, cli.main([*tiny, "--out", "runs/compare"]), "--overwrite")
    assert cli.main([*tiny, "--cells", "rnn", "--overwrite"]) == 0  # no --out: runs/compare itself
    names = {p.name for p in (tmp_path / "runs/compare").iterdir()}
    assert "rnn" in names and not names & {"gru", "gates_gru.png"}
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["compare", "compare-2"]


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


# --- every expected failure: one line on stderr, a nonzero exit, no traceback ---

TRAIN = ["train", "--task", "adding", "--length", "6", "--hidden", "3", "--steps", "2", "--no-progress"]
BAD_ARGUMENTS = {
    "batch -2": ["--batch", "-2"], "batch 0": ["--batch", "0"], "hidden 0": ["--hidden", "0"],
    "hidden abc": ["--hidden", "abc"], "length 0": ["--length", "0"], "steps 0": ["--steps", "0"],
    "layers 0": ["--layers", "0"], "eval-every 0": ["--eval-every", "0"], "threads 0": ["--threads", "0"],
    "lr 0": ["--lr", "0"], "lr -1": ["--lr", "-1"], "lr nan": ["--lr", "nan"], "lr inf": ["--lr", "inf"],
    "lr 1e39": ["--lr", "1e39"],
    "clip -1": ["--clip", "-1"], "clip 0": ["--clip", "0"], "clip nan": ["--clip", "nan"],
    "dropout 1": ["--dropout", "1"], "zoneout 1.5": ["--zoneout", "1.5"], "zoneout -0.1": ["--zoneout=-0.1"],
    "recurrent-dropout nan": ["--recurrent-dropout", "nan"], "weight-drop 1": ["--weight-drop", "1"],
    "zoneout-cell 2": ["--zoneout-cell", "2"], "forget-bias nan": ["--forget-bias", "nan"],
    "forget-bias inf": ["--forget-bias", "inf"], "proj-size -1": ["--proj-size", "-1"],
    "seed -1": ["--seed", "-1"], "seed 2**70": ["--seed", str(2**70)], "device bogus": ["--device", "bogus"],
    "device meta": ["--device", "meta"], "device cuda:7": ["--device", "cuda:7"],
    "cell foo": ["--cell", "foo"], "unknown flag": ["--colour", "red"],
}


def assert_one_line_error(capsys: Any, status: int, word: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status != 0, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert word.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize("extra", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_are_refused_in_one_line(capsys: Any, extra: list[str]) -> None:
    flag = extra[0].split("=")[0]
    assert_one_line_error(capsys, cli.main([*TRAIN, *extra]), flag if flag != "--colour" else "unrecognized")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_says_so(capsys: Any) -> None:
    assert_one_line_error(capsys, cli.main([*TRAIN, "--device", "cuda"]), "CUDA is not available")


def test_bad_paths_are_refused_in_one_line(tmp_path: Path, capsys: Any) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [([*TRAIN, "--task", "charlm", "--text", str(tmp_path)], "not a readable file"),
             ([*TRAIN, "--task", "charlm", "--text", str(tmp_path / "none.txt")], "not a readable file"),
             ([*TRAIN, "--out", str(a_file)], "is a file"),
             ([*TRAIN, "--out", str(a_file / "below")], "is a file"),
             (["compare", "--out", str(a_file)], "is a file")]
    for argv, word in cases:
        assert_one_line_error(capsys, cli.main(argv), word)


@pytest.mark.parametrize("argv, word", [
    (["sample", "RUN", "--chars", "-5"], "--chars"),
    (["sample", "RUN", "--temperature", "0"], "--temperature"),
    (["sample", "RUN", "--temperature", "nan"], "--temperature"), (["sample", "NOWHERE"], "no checkpoint"),
    (["compare", "--cells", ""], "--cells"), (["compare", "--cells", "lstm,foo"], "--cells"),
    (["compare", "--cells", "gru,gru"], "--cells"), (["plot", "NOWHERE"], "No such file"),
    ([*TRAIN, "--task", "nope"], "unknown task"), ([*TRAIN, "--cell", "rnn", "--layer-norm"], "layer_norm"),
    ([*TRAIN, "--length", "1"], "length >= 2"),
])
def test_other_commands_refuse_in_one_line(tmp_path: Path, capsys: Any, argv: list[str], word: str) -> None:
    argv = [str(tmp_path / a) if a in ("RUN", "NOWHERE") else a for a in argv]
    assert_one_line_error(capsys, cli.main(argv), word)


def test_absurd_sizes_are_refused_before_they_exhaust_memory(capsys: Any) -> None:
    assert_one_line_error(capsys, cli.main([*TRAIN, "--hidden", str(10**8)]), "GiB of memory")
    assert_one_line_error(capsys, cli.main([*TRAIN, "--length", str(10**13)]), "GiB of memory")


def test_resume_with_nothing_to_resume_says_so(tmp_path: Path, capsys: Any) -> None:
    assert_one_line_error(capsys, cli.main([*TRAIN, "--out", str(tmp_path), "--resume"]),
                          f"nothing to resume: no checkpoint.json in {tmp_path}")
    assert_one_line_error(capsys, cli.main([*TRAIN, "--resume"]), "nothing to resume")


@pytest.mark.parametrize("errno, word", [(30, "Read-only file system"), (28, "No space left on device")])
def test_a_read_only_or_full_disk_is_one_line(tmp_path: Path, capsys: Any, monkeypatch: Any,
                                              errno: int, word: str) -> None:
    import os

    from gatedrnn.interop import io

    def refuse(path: Any, data: bytes) -> None:
        raise OSError(errno, os.strerror(errno), str(path))

    # write_atomic is where every checkpoint byte goes; the CLI's own probe of --out is a plain write.
    monkeypatch.setattr(io, "write_atomic", refuse)
    monkeypatch.setattr("gatedrnn.toolkit.checkpoint.write_atomic", refuse)
    assert_one_line_error(capsys, cli.main([*TRAIN, "--out", str(tmp_path / "run")]), word)
    monkeypatch.setattr(Path, "write_bytes", lambda self, data: refuse(self, data))
    assert_one_line_error(capsys, cli.main([*TRAIN, "--out", str(tmp_path / "run2")]), word)


def test_damaged_run_folders_are_one_line_or_tolerated(tmp_path: Path, capsys: Any) -> None:
    run = [*TRAIN, "--eval-every", "1", "--out", str(tmp_path)]
    assert cli.main(run) == 0
    log = tmp_path / "metrics.jsonl"
    log.write_text(log.read_text() + '{"step": 3, "lo')  # a torn last line: tolerated
    assert cli.main([*run[:-4], "--steps", "3", "--eval-every", "1", "--out", str(tmp_path), "--resume"]) == 0
    assert [json.loads(s)["step"] for s in log.read_text().splitlines()] == [1, 2, 3]
    log.write_text('{"step": 1}\nnot json\n{"step": 3}\n')  # damage in the middle: named
    assert_one_line_error(capsys, cli.main([*run[:-4], "--steps", "4", "--out", str(tmp_path), "--resume"]),
                          f"{log}: line 2")
    record = json.loads((tmp_path / "checkpoint.json").read_text())
    del record["optimizer"]
    (tmp_path / "checkpoint.json").write_text(json.dumps(record))
    assert_one_line_error(capsys, cli.main([*run[:-4], "--steps", "4", "--out", str(tmp_path), "--resume"]),
                          "checkpoint.json")


def test_a_fresh_process_prints_one_line_and_no_traceback() -> None:
    done = subprocess.run([sys.executable, "-m", "gatedrnn", "train", "--batch", "-2"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize("damage", ["deep", "tampered", "analysis"])
def test_plot_of_a_damaged_run_folder_is_one_line(tmp_path: Path, capsys: Any, damage: str) -> None:
    assert cli.main([*TRAIN, "--out", str(tmp_path)]) == 0
    meta = tmp_path / "checkpoint.json"
    if damage == "deep":
        meta.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "tampered":
        meta.write_text(meta.read_text().replace('"metric": "test_mse"', '"metric": "loss"'))
    else:
        (tmp_path / "analysis.safetensors").write_bytes(b"\xff" * 64)
    capsys.readouterr()
    word = {"deep": "nested", "tampered": "checksum", "analysis": "analysis.safetensors"}[damage]
    assert_one_line_error(capsys, cli.main(["plot", str(tmp_path)]), word)


FLAGS = ["--hidden", "--layers", "--steps", "--lr", "--batch", "--seed", "--clip", "--eval-every",
         "--length", "--recurrent-dropout", "--zoneout", "--zoneout-cell", "--weight-drop", "--forget-bias",
         "--chrono-max-len", "--dropout", "--proj-size", "--cell", "--init", "--engine", "--task"]
SWITCHES = ["--layer-norm", "--peephole", "--bidirectional", "--no-reset-after", "--resume", "--overwrite"]
VALUES = ["0", "1", "2", "3", "-1", "0.5", "nan", "inf", "1e400", "abc", "", "lstm", "gru", "rnn",
          "chrono", "orthogonal", "reference", "fused", "copy", "adding"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flags=st.lists(st.tuples(st.sampled_from(FLAGS), st.sampled_from(VALUES)), max_size=4),
       switches=st.lists(st.sampled_from(SWITCHES), max_size=2, unique=True))
def test_any_combination_of_flags_runs_or_fails_in_one_line(tmp_path_factory: Any, capsys: Any,
                                                            flags: list, switches: list) -> None:
    out = tmp_path_factory.mktemp("fuzz")
    argv = [*TRAIN, "--out", str(out), *[f"{flag}={value}" for flag, value in flags], *switches,
            "--steps", "1", "--hidden", "3", "--length", "6", "--batch", "2"]  # keep each run tiny
    capsys.readouterr()
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if status != 0:
        assert status in (1, 2) and len([s for s in err.splitlines() if s.strip()]) == 1, err


def _parsers() -> dict[str, Any]:
    """The command's parser and each subcommand's, by name ("" for the command itself)."""
    import argparse

    parser = cli._parser()
    out = {"": parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update(action.choices)
    return out


def test_version(capsys: Any) -> None:
    import gatedrnn

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"gatedrnn {gatedrnn.__version__}"


def test_every_option_has_help_and_no_private_names(capsys: Any) -> None:
    import re

    for name, parser in _parsers().items():
        for action in parser._actions:
            assert action.help, f"gatedrnn {name} {action.option_strings or action.dest} has no help"
        text = parser.format_help()
        # no pointers to private functions or modules (cli._threads, _parser, ...)
        assert not re.search(r"(?<![\w-])\w*\._\w+|(?<![\w-])_[a-z]\w*\(", text), (name, text)


@pytest.mark.parametrize("command", ["train", "compare"])
def test_the_per_task_defaults_are_in_the_help(command: str) -> None:
    from gatedrnn.toolkit.compare import TASK_DEFAULTS

    text = _parsers()[command].format_help()
    for task, values in TASK_DEFAULTS.items():
        line = next(line for line in text.splitlines() if line.strip().startswith(task + " "))
        assert f"--hidden {values['hidden']}," in line and f"--steps {values['steps']}" in line
    assert "(default: 1)" in text  # --layers: a fixed default, shown beside the option


def test_engine_lists_every_engine() -> None:
    from gatedrnn.equations import kinds

    engine = next(a for a in _parsers()["train"]._actions if "--engine" in a.option_strings)
    declared = {e for kind in kinds.CELLS.values() for e in kind.engines} - set(kinds.INT8_ENGINES)
    assert set(engine.choices) == declared | {"auto", "native"}
    assert {"auto", "native", "fused", "reference", "scan"} <= set(engine.choices)
