"""``gatedrnn bench`` and the benchmark scripts at tiny shapes: every column is there and sane.

The figures at these shapes mean nothing; what is checked is that each table has the columns it
promises, that times and ratios are positive and finite, that auto's pick is reported, that ONNX
Runtime runs on the exported graph (and that a graph computing something else is refused), and
that the newer-cell, targets and heads tables run.
"""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import pytest
import torch

import gatedrnn
from gatedrnn import cli
from gatedrnn.toolkit import bench, bench_cells, bench_common, bench_ort

ROOT = Path(__file__).parent.parent
TINY = (3, 2, 4, 8)
MS_RATIO = re.compile(r"^(\d+\.\d+) \((\d+\.\d+)\)$")
needs_ort = pytest.mark.skipif(not bench_ort.available(), reason="onnxruntime is in the interop extra")


def _has_heads(cls: type) -> bool:
    try:
        cls(4, 8, num_heads=2)
    except TypeError:
        return False
    return True


def _table(out: str, first: str) -> list[dict[str, str]]:
    """The rows of the Markdown table whose header starts with ``first``, as dicts."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in line.strip("|").split("|")))))
    return rows


@pytest.mark.parametrize("cell", list(bench_common.CELLS))
@pytest.mark.parametrize("mode", ["inference", "training"])
def test_measure_times_every_engine_of_the_cell(cell: str, mode: str) -> None:
    times, ran = bench.measure(cell, TINY, mode, repeats=1, threads=1)
    want = {"torch.nn", *bench_common.ENGINES[cell]}
    if mode == "inference" and cell in bench.ORT_CELLS and bench_ort.available():
        want.add("onnxruntime")
    assert set(times) == want
    assert all(0 < t < math.inf for t in times.values())
    # module.last_engine after the auto call: on the CPU in float32 the newer cells run fused
    assert ran in (("fused", "native") if cell in ("lstm", "gru") else ("fused",))


@pytest.mark.slow
def test_the_main_table_has_every_column_with_positive_ratios(capsys) -> None:
    # LSTM has native and ONNX Runtime, minGRU scan, sLSTM neither: every kind of row.
    assert bench.main(["--shapes", "3,2,4,8;4,1,4,8", "--modes", "inference,training", "--repeats", "1",
                       "--cells", "lstm,mingru,slstm", "--threads", "1", "--no-memory"]) == 0
    out = capsys.readouterr().out
    rows = _table(out, "| cell | peer |")
    assert len(rows) == 3 * 2 * 2  # cells × modes × shapes
    for row in rows:
        cell = next(k for k, v in bench_common.CELLS.items() if v[0] == row["cell"])
        assert row["peer"] == f"torch.nn.{bench_common.CELLS[cell][1]}"
        for engine in ("auto", "fused", "native", "scan"):
            text = row[f"{engine} ms (ratio)"]
            if engine in bench_common.ENGINES[cell]:
                ms, ratio = map(float, MS_RATIO.match(text).groups())  # type: ignore[union-attr]
                assert ms > 0 and ratio > 0
            else:
                assert text == "-"
        ort = row["ONNX Runtime ms (ratio)"]
        if row["mode"] == "inference" and cell in bench.ORT_CELLS and bench_ort.available():
            assert MS_RATIO.match(ort)
        else:
            assert ort == "-"
        assert row["auto ran"] in (("fused", "native") if cell in ("lstm", "gru") else ("fused",))
        assert float(row["fused GFLOP/s"]) >= 0
    summary = _table(out, "| cell | mode | torch.nn / auto")
    assert len(summary) == 3 * 2
    for row in summary:
        geo, worst = map(float, row["torch.nn / fused"].split(" / "))
        assert geo >= worst > 0


@pytest.mark.slow
def test_threads_is_a_list_and_each_count_gets_its_tables(capsys) -> None:
    # Two runs at one thread: two threads on this shared two-core machine can take minutes
    # (OpenMP barriers spinning against the other processes).
    before = torch.get_num_threads()
    assert bench.main(["--quick", "--shapes", "3,2,4,8", "--modes", "inference", "--cells", "gru",
                       "--repeats", "1", "--threads", "1,1"]) == 0
    out = capsys.readouterr().out
    assert out.count("1 threads") == 2 and out.count("| GRU | torch.nn.GRU |") == 2
    assert torch.get_num_threads() == before  # main restores the caller's setting


def test_out_writes_what_was_printed_with_the_command_and_machine(tmp_path, capsys) -> None:
    out = tmp_path / "speed.md"
    argv = ["--quick", "--shapes", "3,2,4,8", "--modes", "inference", "--cells", "gru", "--repeats", "1",
            "--threads", "1", "--out", str(out)]
    assert bench.main(argv) == 0
    printed, text = capsys.readouterr().out, out.read_text()
    table = [line for line in printed.splitlines() if line.startswith("| GRU |")]
    assert table and all(line in text for line in table)
    assert "python benchmarks/speed.py --quick" in text and "torch " + torch.__version__ in text


@pytest.mark.parametrize("argv", [["--shapes", "3,2,4"], ["--shapes", "3,0,4,8"], ["--cells", "lstm,foo"],
                                  ["--modes", "speed"], ["--threads", "0"], ["--threads", "a"]])
def test_bad_arguments_are_an_argument_error(argv: list[str], capsys) -> None:
    assert cli.main(["bench", *argv]) == 2
    assert "error: argument" in capsys.readouterr().err


@needs_ort
def test_the_ort_runner_reproduces_the_module_and_refuses_a_graph_that_does_not() -> None:
    torch.manual_seed(0)
    model, x = gatedrnn.LSTM(4, 8).eval(), torch.randn(6, 3, 4)
    run = bench_ort.runner(model, x, threads=1)
    torch.testing.assert_close(torch.from_numpy(run()), model(x)[0], atol=1e-5, rtol=1e-5)

    class Shifted(torch.nn.Module):  # eager output differs from what the exporter records
        def __init__(self) -> None:
            super().__init__()
            self.rnn = gatedrnn.GRU(4, 8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y, h = self.rnn(x)
            return (y if torch.onnx.is_in_onnx_export() else y + 1), h

    with pytest.raises(RuntimeError, match="differs"):
        bench_ort.runner(Shifted().eval(), x, threads=1)


@pytest.mark.slow
def test_the_targets_table_names_every_model_and_target() -> None:
    rows = bench_cells.target_rows(repeats=1, quick=True)
    text = "\n".join(rows)
    times = _table(text, "| training, fastest")
    assert {r["training, fastest of interleaved runs"] for r in times} == {
        "MinGRU fused", "MinLSTM fused", "MinGRU scan", "MinLSTM scan", "gatedrnn.GRU fused",
        "torch.nn.GRU", "SLSTM fused", "SLSTM reference"}
    assert all(float(r["ms"]) > 0 for r in times)
    targets = _table(text, "| target |")
    assert len(targets) == 4
    for r in targets:
        assert float(r["measured"]) > 0 and r["met"] in ("yes", "no")


def test_the_heads_table_runs_slstm(capsys) -> None:
    assert bench.main(["--quick", "--modes", "heads", "--cells", "slstm", "--repeats", "1"]) == 0
    (row,) = _table(capsys.readouterr().out, "| training at")
    values = list(row.values())
    assert values[0] == "SLSTM" and all(float(v) > 0 for v in values[1:5])


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_the_heads_table_for_lstm_and_gru(name: str) -> None:
    rows = bench_cells.heads_rows([name.lower()], repeats=1, quick=True)
    cells = [c.strip() for c in rows[2].strip("|").split("|")]
    if not _has_heads(getattr(gatedrnn, name)):
        # Until num_heads lands in gatedrnn.LSTM/GRU the row says why it has no figures.
        assert cells[0] == name and cells[1].startswith("n/a") and "num_heads" in cells[1]
        pytest.skip(f"gatedrnn.{name} has no num_heads yet: the row says so (checked)")
    assert cells[0] == name and all(float(v) > 0 for v in cells[1:5])


@pytest.mark.slow
def test_streaming_and_variants_run_at_quick_settings(capsys) -> None:
    assert bench.main(["--quick", "--modes", "streaming,variants", "--cells", "gru", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert len(_table(out, "| streaming")) == 2
    variants = _table(out, "| training at")
    assert len(variants) == 1 + len(bench.VARIANTS["gru"])


def test_flops_count_only_the_products_a_cell_has() -> None:
    T, B, I, H = 5, 3, 4, 8
    assert bench_common.flops("lstm", T, B, I, H, "inference") == 2 * T * B * 4 * H * (I + H)
    assert bench_common.flops("mingru", T, B, I, H, "inference") == 2 * T * B * 2 * H * I
    slstm = bench_common.flops("slstm", T, B, I, H, "training", heads=4)
    assert slstm == 3 * 2 * T * B * 4 * H * (I + H // 4)


@pytest.mark.slow
def test_peak_memory_is_measured_in_a_subprocess() -> None:
    for impl in ("torch", "ours"):
        assert 0 <= bench._peak_bytes(impl, "slstm", TINY, "training", 1) < math.inf


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_results_script_has_a_row_per_chosen_cell(capsys) -> None:
    results = _script("results")
    args = ["--rows", "adding-100", "--cells", "gru,mingru,slstm", "--steps", "2", "--seeds", "0,1"]
    assert results.main(args) == 0
    rows = {row["cell"]: row for row in _table(capsys.readouterr().out, "| cell |")}
    assert set(rows) == {"GRU", "minGRU", "sLSTM"}  # the chosen cells, none other
    for row in rows.values():
        mean, _, std = row["test_mse, mean ± std"].partition(" ± ")
        assert float(mean) > 0 and float(std) >= 0
        assert len(row["per seed"].split(",")) == 2  # one value per seed
        assert row["parameters"].endswith("k") and row["solved"].endswith("/2")


def test_results_script_rejects_an_unknown_cell() -> None:
    with pytest.raises(SystemExit) as done:
        _script("results").main(["--cells", "gru,transformer"])
    assert done.value.code == 2
