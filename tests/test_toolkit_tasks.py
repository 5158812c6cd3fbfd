"""The built-in tasks: data shapes, determinism, baselines, the .ts reader, offline real data."""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence

from gatedrnn.toolkit import datasets, tsfile
from gatedrnn.toolkit.tasks import AddingProblem, CopyMemory, get_task, task_names


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_adding_batches_are_a_function_of_the_generator() -> None:
    task = AddingProblem(length=30)
    a, b = task.train_batch(gen(5), 16), task.train_batch(gen(5), 16)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.shape == (16, 30, 2)
    markers = a.x[..., 1]
    assert torch.equal(markers.sum(1), torch.full((16,), 2.0))
    assert (markers[:, :15].sum(1) == 1).all()  # one marker in each half
    assert torch.allclose((a.x[..., 0] * markers).sum(1), a.y)


def test_adding_baseline_is_the_variance_of_the_sum() -> None:
    task = AddingProblem(length=20, test_size=4000)
    y = torch.cat([b.y for b in task.test_batches()])
    mse_of_predicting_one = task.score(torch.ones_like(y), y)["test_mse"]
    assert abs(mse_of_predicting_one - task.baseline) < 0.01
    assert task.solved({"test_mse": 0.005}) and not task.solved({"test_mse": 0.05})


def test_copy_memory_layout_and_memoryless_baseline() -> None:
    T = 30
    task = CopyMemory(length=T)
    batch = task.train_batch(gen(), 8)
    assert batch.x.shape == batch.y.shape == (8, T + 20)
    assert torch.equal(batch.y[:, -10:], batch.x[:, :10])
    assert (batch.x[:, T + 9] == 9).all() and (batch.y[:, :T + 10] == 0).all()
    # The memoryless strategy: blanks until the recall, then uniform over the 8 symbols.
    logits = torch.full((8, T + 20, 9), -1e9)
    logits[:, :T + 10, 0] = 0
    logits[:, T + 10:, 1:] = 0
    scores = task.score(logits, batch.y)
    assert math.isclose(scores["test_ce"], task.baseline, rel_tol=1e-6)
    assert math.isclose(task.baseline, 10 * math.log(8) / (T + 20))


TOY = """# a comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true 1 2 10
@data
1.0,2.0,3.0:4.0,?,6.0:1
7.0,8.0:9.0,10.0:10
5.0,5.0,5.0,5.0:1.0,1.0,1.0,1.0:2
"""


def test_ts_parser_reads_variable_length_missing_values_and_labels() -> None:
    series, labels, header = tsfile.parse_ts(TOY)
    assert [s.shape for s in series] == [(2, 3), (2, 2), (2, 4)]
    assert labels == ["1", "10", "2"]
    assert np.isnan(series[0][1, 1]) and series[1][1, 1] == 10.0
    assert header["problemname"] == "Toy"
    stamped_line = "(2007-01-01 00:00:00,1.5),(2007-01-01 00:01:00,2.5):a"  # colons inside the stamps
    stamped, _, _ = tsfile.parse_ts(f"@classLabel true a\n@data\n{stamped_line}\n")
    assert stamped[0].tolist() == [[1.5, 2.5]]
    with pytest.raises(ValueError, match="@data"):
        tsfile.parse_ts("@problemName x\n")


def test_series_task_from_a_folder_and_from_a_wheel(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "Toy"
    folder.mkdir(parents=True)
    for split in ("TRAIN", "TEST"):
        (folder / f"Toy_{split}.ts").write_text(TOY)
    task = get_task("uea", problem="Toy", data=str(tmp_path / "data"))
    assert (task.input_size, task.output_size) == (2, 3)
    assert task.y.tolist() == [0, 2, 1]  # classes sorted as numbers: 1, 2, 10
    batch = task.train_batch(gen(), 4)
    assert isinstance(batch.x, PackedSequence)  # unequal lengths travel packed
    wheel = tmp_path / "aeon-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for split in ("TRAIN", "TEST"):
            z.writestr(f"aeon/datasets/data/Toy/Toy_{split}.ts", TOY)
    assert get_task("uea", problem="Toy", data=str(wheel)).y.tolist() == [0, 2, 1]


def test_missing_ts_files_name_the_install_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(tsfile.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"pip install aeon=={tsfile.AEON_VERSION}"):
        get_task("japanese-vowels")


@pytest.mark.skipif(not os.environ.get(tsfile.ENV_VAR) and tsfile._aeon_data_dir() is None,
                    reason="the aeon .ts files are an optional extra (set GATEDRNN_TS_DATA)")
def test_japanese_vowels_is_what_the_archive_says() -> None:
    task = get_task("japanese-vowels")
    assert (len(task.x), len(task.x_test), task.input_size, task.output_size) == (270, 370, 12, 9)
    lengths = [len(x) for x in task.x + task.x_test]
    assert (min(lengths), max(lengths)) == (7, 29)


def test_mnist1d_is_generated_offline_and_leaves_numpy_alone(monkeypatch) -> None:
    requests = pytest.importorskip("requests")

    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-1D tried to download")

    monkeypatch.setattr(requests, "get", no_network)
    datasets._mnist1d.cache_clear()
    state = np.random.get_state()[1].copy()
    task = get_task("mnist1d")
    assert np.array_equal(np.random.get_state()[1], state)
    assert task.x.shape == (4000, 40, 1) and task.x_test.shape == (1000, 40, 1)
    assert sorted(task.y.unique().tolist()) == list(range(10))


def test_char_lm_on_a_file_and_on_the_standard_library(tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 300)
    task = get_task("charlm", text=str(text), length=20)
    batch = task.train_batch(gen(), 3)
    assert torch.equal(batch.x[:, 1:], batch.y[:, :-1])  # targets are the next characters
    assert task.vocab == "".join(sorted(set("hello world\n")))
    assert 0 < task.baseline < math.log2(len(task.vocab)) + 1e-9
    assert "def " in datasets.stdlib_corpus(20_000)


def test_sunspots_and_the_registry() -> None:
    pytest.importorskip("statsmodels")
    task = get_task("sunspots", window=10)
    assert len(task.y) + len(task.y_test) == 309 - 10 and task.baseline > 0
    assert {"adding", "copy", "mnist1d", "japanese-vowels", "gunpoint", "charlm"} <= set(task_names())
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")


def test_toolkit_imports_run_one_way() -> None:
    """No import circle inside the toolkit: base <- datasets <- tasks, and so on.
    Imports inside functions count too: they only hide a circle."""
    import ast

    package = Path(datasets.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        graph[path.stem] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                graph[path.stem] |= {n.split(".")[0] for n in names}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n}))
                   for n in graph.get(start, ()))

    circles = sorted(m for m in graph if reaches(m, m, set()))
    assert circles == [], circles
    assert "tasks" not in graph["datasets"] and "datasets" in graph["tasks"]
