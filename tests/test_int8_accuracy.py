"""``benchmarks/int8_accuracy.py``: the accuracy table of the toolkit's models before and after int8.

The figures of a few training steps mean nothing; what is checked is the table's shape (a line per
task and cell, a drop per seed, the largest drop), that the float32 score is the run's own at the
validation-selected step, and that the last step's scores are what ``gatedrnn quantize
RUN_FOLDER`` (``quantize_run``) reports for the same run trained by ``gatedrnn train``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gatedrnn.toolkit.quantize import quantize_run
from gatedrnn.toolkit.train import TrainConfig, train

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_int8_accuracy",
                                                  ROOT / "benchmarks" / "int8_accuracy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _rows(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``text``, as lists of cells."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_table_has_a_line_per_task_and_cell_and_a_drop_per_seed(script: ModuleType) -> None:
    runs = [script.Run(row, cell, seed, 10, 0.9, None,
                       acc={"float32": 0.9, "int8": 0.9 - 0.001 * seed, "int8+linear": 0.902})
            for row in ("mnist1d", "japanese-vowels") for cell in ("lstm", "gru") for seed in (0, 1, 2)]
    rows = _rows(script.table(runs))
    assert [r[:2] for r in rows] == [["mnist1d", "LSTM"], ["mnist1d", "GRU"],
                                     ["japanese-vowels", "LSTM"], ["japanese-vowels", "GRU"]]
    for r in rows:
        assert len(r) == 9
        assert r[2] == "90.0 ± 0.0%" and r[3] == "89.9 ± 0.1%"
        assert r[4:6] == ["0.00, 0.10, 0.20", "0.20"]  # a drop per seed, then the largest
        assert r[7:9] == ["-0.20, -0.20, -0.20", "-0.20"]  # int8 + linear scored higher


@pytest.mark.slow
def test_tiny_run_writes_the_table_and_matches_quantize_run(script: ModuleType, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("mnist1d", reason="MNIST-1D is in the data extra")
    out = tmp_path / "int8-accuracy.md"
    assert script.main(["--rows", "mnist1d", "--seeds", "0,1", "--steps", "3", "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out.rstrip("\n") + "\n"
    rows = _rows(text)
    assert [r[:2] for r in rows] == [["mnist1d", "LSTM"], ["mnist1d", "GRU"]]
    for r in rows:
        for per_seed, largest in ((r[4], r[5]), (r[7], r[8])):
            drops = [float(d) for d in per_seed.split(", ")]
            assert len(drops) == 2 and float(largest) == max(drops)
            # mnist1d has 1000 test samples: a drop is a whole number of tenths of a point
            assert all(abs(10 * d - round(10 * d)) < 1e-6 for d in drops)
    assert "Float32 check: every float32 accuracy is the one the run logged" in text
    assert "--rows mnist1d --seeds 0,1 --steps 3" in text

    # The same run through the toolkit's own path: gatedrnn train, then gatedrnn quantize.
    runs, _ = script.measure("mnist1d", ("gru",), seed=0, steps=3)
    folder = tmp_path / "run"
    train(TrainConfig(task="mnist1d", cell="gru", seed=0, steps=3, eval_every=1, out=str(folder),
                      progress=False, select=True))
    last = quantize_run(folder, weights="last")
    assert runs[0].final == {"float32": last["before"]["test_acc"], "int8": last["after"]["test_acc"]}
    best = quantize_run(folder)  # the selected evaluation's weights, as the table's columns
    assert best["step"] == runs[0].step
    assert (runs[0].acc["float32"], runs[0].acc["int8"]) == (best["before"]["test_acc"],
                                                             best["after"]["test_acc"])
