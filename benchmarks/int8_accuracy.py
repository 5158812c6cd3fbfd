"""The accuracy int8 costs: the toolkit's MNIST-1D and JapaneseVowels models before and after quantizing.

Usage: python benchmarks/int8_accuracy.py [--rows mnist1d,japanese-vowels] [--cells lstm,gru]
                                          [--seeds 0,1,2] [--steps N] [--out PATH]

Each (row, cell, seed) is trained exactly as that row of ``benchmarks/results.py`` trains it (the
row's settings are imported from that script; ``gatedrnn.toolkit.compare`` with ``select=True``,
on one CPU thread). The model that row publishes, the evaluation with the best validation score,
is scored on the test set in float32, quantized with ``gatedrnn.quantize`` (the recurrent layers;
then again with ``linear=True``, the output layer too) and scored again. Those weights are the
run's ``TrainResult.best_state`` (in a run folder, best-STEP.safetensors, which ``gatedrnn quantize
RUN_FOLDER`` reads). The last step's model (``gatedrnn quantize --weights last``) is quantized and
scored too, and reported in the notes.

The float32 scores are checked twice: against the test accuracy the run logged at the selected
evaluation, and against the per-seed figures published in ``docs/results/<row>.md``; a mismatch
is printed and written in the notes. The table goes to ``docs/results/int8-accuracy.md``
(``--out``); with ``--steps`` (a quick check) nothing is written unless ``--out`` is given.
JapaneseVowels needs aeon's .ts files (``GATEDRNN_TS_DATA`` or an installed aeon) and is skipped
with a note when they are absent.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numba
import torch
from torch import Tensor

import gatedrnn
import gatedrnn.toolkit.compare as compare_module
from gatedrnn.engines import dispatch
from gatedrnn.engines.kernels import int8_gemm
from gatedrnn.toolkit.bench_common import machine
from gatedrnn.toolkit.compare import GENERIC_DEFAULTS, TASK_DEFAULTS, compare, model_options
from gatedrnn.toolkit.tasks import Task
from gatedrnn.toolkit.train import TrainConfig, TrainResult

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "docs" / "results" / "int8-accuracy.md"
ROWS = ("mnist1d", "japanese-vowels")
CELLS = ("lstm", "gru")
FORMS = ("float32", "int8", "int8+linear")  # the model, quantize(model), quantize(model, linear=True)
TARGET = 0.5  # the largest accuracy drop allowed, in points


def _results() -> ModuleType:
    """benchmarks/results.py, whose ROWS define the runs (loaded by path: benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location("_results_rows", HERE / "results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results = _results()


@dataclass
class Run:
    """One trained model and its scores: ``acc[form]`` test accuracy, ``changed[form]`` test
    predictions that differ from float32's; ``final`` the same two for the last step's model."""

    row: str
    cell: str
    seed: int
    step: int  # the selected evaluation's step
    logged: float  # the test accuracy the run logged at that evaluation (what results.py prints)
    published: str | None  # the seed's figure in docs/results/<row>.md, if it has one
    acc: dict[str, float] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    engine: str = ""  # which engine ran the quantized recurrent layer
    dispatch: str | None = None  # the engine="auto" table the run pinned (TrainConfig.dispatch)
    samples: int = 0


@contextlib.contextmanager
def _keeping_runs(kept: dict[str, tuple[TrainConfig, TrainResult]]) -> Iterator[None]:
    """While inside, each ``train`` that ``compare`` runs leaves its config and result in
    ``kept[cell]`` (``compare`` returns table rows only)."""
    real = compare_module.train

    def train(cfg: TrainConfig, task: Task) -> TrainResult:
        kept[cfg.cell] = (cfg, real(cfg, task))
        return kept[cfg.cell][1]

    compare_module.train = train  # type: ignore[assignment]
    try:
        yield
    finally:
        compare_module.train = real


@torch.no_grad()
def _predict(model: torch.nn.Module, task: Task) -> tuple[float, Tensor]:
    """Test accuracy and predicted classes, batched as ``Task.evaluate`` batches (500)."""
    outs, ys = [], []
    for batch in task.test_batches(500):
        outs.append(model(batch.x))
        ys.append(batch.y)
    out, y = torch.cat(outs), torch.cat(ys)
    return task.score(out, y)["test_acc"], out.argmax(-1)


def _score(model: torch.nn.Module, task: Task) -> tuple[dict[str, float], dict[str, int], str]:
    """Accuracy and changed predictions of the float32 model and its two int8 forms."""
    model.eval()
    acc, pred = _predict(model, task)
    accs, changed, engine = {"float32": acc}, {"float32": 0}, ""
    for form, linear in (("int8", False), ("int8+linear", True)):
        qmodel = gatedrnn.quantize(model, linear=linear)
        accs[form], qpred = _predict(qmodel, task)
        changed[form] = int((qpred != pred).sum())
        rnn = getattr(qmodel, "rnn", None)  # a SequenceModel's recurrent layer
        engine = getattr(rnn, "last_engine", None) or engine
    return accs, changed, engine


def published(row: str, cell: str) -> dict[int, str]:
    """seed -> the cell's float32 test accuracy as docs/results/<row>.md prints it ("91.2%")."""
    path = HERE.parent / "docs" / "results" / f"{row}.md"
    if not path.exists():
        return {}
    text = path.read_text()
    seeds = re.search(r"--seeds ([\d,]+)", text)
    line = next((ln for ln in text.splitlines() if ln.startswith(f"| {results.NAMES[cell]} |")), None)
    if seeds is None or line is None:
        return {}
    values = [v.strip() for v in line.strip("|").split("|")[2].split(",")]
    return dict(zip((int(s) for s in seeds.group(1).split(",")), values))


def measure(row: str, cells: tuple[str, ...], seed: int, steps: int | None = None,
            progress: bool = False) -> tuple[list[Run], Task]:
    """Train ``cells`` on results.py's ``row`` with ``seed`` and score each model (see the module
    docstring). Raises FileNotFoundError when the task's data are absent."""
    task_name, settings, _, _ = results.ROWS[row]
    if steps is not None:
        settings = {**settings, "steps": steps}
    kept: dict[str, tuple[TrainConfig, TrainResult]] = {}
    with _keeping_runs(kept):
        rows, task = compare(task_name, cells, seed=seed, progress=progress, select=True, **settings)
    runs = []
    for r in rows:
        cfg, result = kept[r.cell]
        assert result.selected["step"] == r.steps and result.best_state is not None
        figure = published(row, r.cell).get(seed) if steps is None else None  # else other runs
        run = Run(row, r.cell, seed, r.steps, r.metrics["test_acc"], figure, dispatch=cfg.dispatch)
        with dispatch.pinned(cfg.dispatch):  # the engines the run trained and evaluated with
            model = copy.deepcopy(result.model)
            model.load_state_dict(result.best_state)
            run.acc, run.changed, run.engine = _score(model, task)
            final, _, _ = _score(result.model, task)
            run.final = {"float32": final["float32"], "int8": final["int8"]}
        run.samples = sum(len(b.y) for b in task.test_batches(500))
        runs.append(run)
    return runs, task


def _points(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def drops(runs: list[Run], form: str, source: str = "acc") -> list[float]:
    """float32 accuracy minus ``form``'s, in points, per run (> 0: int8 is worse)."""
    return [100 * (getattr(r, source)["float32"] - getattr(r, source)[form]) for r in runs]


def mismatches(runs: list[Run]) -> list[str]:
    """Where the float32 accuracy is not the logged one or the published figure."""
    bad = []
    for r in runs:
        where = f"{r.row} {results.NAMES[r.cell]} seed {r.seed}"
        if r.acc["float32"] != r.logged:
            bad.append(f"{where}: {r.acc['float32']!r} here, {r.logged!r} logged by the run")
        if r.published is not None and results.fmt(r.acc["float32"], "test_acc") != r.published:
            bad.append(f"{where}: {results.fmt(r.acc['float32'], 'test_acc')} here, "
                       f"{r.published} in docs/results/{r.row}.md")
    return bad


def table(runs: list[Run]) -> str:
    """The Markdown table: a line per (task, cell), every seed's drop, the largest."""
    head = ["task", "cell", "float32 test_acc", "int8 test_acc", "drop per seed (points)", "max drop",
            "int8 + linear test_acc", "drop per seed (points)", "max drop"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for row in dict.fromkeys(r.row for r in runs):
        for cell in dict.fromkeys(r.cell for r in runs if r.row == row):
            rs = [r for r in runs if r.row == row and r.cell == cell]
            cols = [row, results.NAMES[cell], results.mean_std([r.acc["float32"] for r in rs], "test_acc")]
            for form in FORMS[1:]:
                d = drops(rs, form)
                cols += [results.mean_std([r.acc[form] for r in rs], "test_acc"), _points(d), f"{max(d):.2f}"]
            lines.append("| " + " | ".join(cols) + " |")
    return "\n".join(lines)


def _settings(row: str, cells: tuple[str, ...], steps: int | None, task: Task) -> str:
    task_name, settings, _, _ = results.ROWS[row]
    used = {**GENERIC_DEFAULTS, **TASK_DEFAULTS.get(task_name, {}), **settings}
    if steps is not None:
        used["steps"] = steps
    options = {k: v for c in cells for k, v in model_options(task_name, c, task.config()).items()}
    text = (f"{row}: one layer of {used['hidden']} units"
            + "".join(f", {k} {v}" for k, v in options.items())
            + f"; Adam lr {used['lr']:g}, batch {used['batch']}, {used['steps']} steps")
    return text + (f", the rate falling linearly to 0 over the last {used['decay_steps']}"
                   if used.get("decay_steps") else "")


def _each(runs: list[Run], text: Any) -> str:
    """'; '.join of ``text(row, cell, runs of that row and cell)`` over the (row, cell) pairs."""
    pairs = dict.fromkeys((r.row, r.cell) for r in runs)
    return "; ".join(text(row, cell, [r for r in runs if (r.row, r.cell) == (row, cell)])
                     for row, cell in pairs)


def report(runs: list[Run], tasks: dict[str, Task], cells: tuple[str, ...], steps: int | None,
           command: str, seconds: float, skipped: list[str]) -> str:
    """The results file: the table, then how it was made."""
    worst = {form: max(drops(runs, form)) for form in FORMS[1:]}
    met = {form: "met" if worst[form] <= TARGET else "missed" for form in worst}
    samples = {r.row: r.samples for r in runs}
    bad = mismatches(runs)
    notes = [
        "Models: the rows of `benchmarks/results.py` (its settings, imported): "
        + "; ".join(_settings(row, cells, steps, task) for row, task in tasks.items())
        + "; gradient clipping at 1. Each seed's model is the evaluation with the best validation "
        "score, the one the published rows report (steps chosen: "
        + _each(runs, lambda row, c, rs: f"{row} {results.NAMES[c]} " + ", ".join(str(r.step) for r in rs))
        + "). The runs pin engine=\"auto\"'s table to " + ", ".join(sorted({str(r.dispatch) for r in runs}))
        + " (`TrainConfig.dispatch`), and the float32 scores here are taken under the same table.",
        "int8: `gatedrnn.quantize(model)` (the recurrent layer: int8 weights with a scale per row, the "
        "input and the state quantized per row at run time; see docs/quantization.md), engine "
        + ", ".join(sorted({f"`{r.engine}`" for r in runs})) + "; int8 + linear: "
        "`gatedrnn.quantize(model, linear=True)`, the output layer too.",
        "Drop: float32 accuracy minus int8's, in points (below 0: int8 scored higher); one test sample is "
        + ", ".join(f"{100 / n:.2f} points on {row} ({n} samples)" for row, n in samples.items()) + ". "
        f"Target: a drop of at most {TARGET} points: {met['int8']} for int8 (largest {worst['int8']:.2f}), "
        f"{met['int8+linear']} for int8 + linear (largest {worst['int8+linear']:.2f}).",
        "Test predictions whose class changed, per seed (int8 / int8 + linear): " + _each(
            runs, lambda row, c, rs: f"{row} {results.NAMES[c]} " + " / ".join(
                ", ".join(str(r.changed[form]) for r in rs) for form in FORMS[1:])) + ".",
        "The last step's models (what `gatedrnn quantize RUN_FOLDER` reads from a run folder, its last "
        "checkpoint), drop from float32 to int8 per seed in points: "
        + _each(runs, lambda row, c, rs: f"{row} {results.NAMES[c]} " + _points(drops(rs, "int8", "final")))
        + ".",
        "Float32 check: " + ("every float32 accuracy is the one the run logged at the selected step"
                             + ("" if steps is not None else " and the per-seed figure of " + " and ".join(
                                 f"docs/results/{row}.md" for row in tasks)) + "."
                             if not bad else "MISMATCH: " + "; ".join(bad) + "."),
        *skipped,
        f"Command: `{command}`; {seconds:.0f} s on one thread (`torch.set_num_threads(1)`) of "
        f"{machine()}, numba {numba.__version__}; int8 products on {int8_gemm.ISA_NAMES[int8_gemm.ISA]}.",
    ]
    return table(runs) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {list(ROWS)}")
    parser.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated, from {list(CELLS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    parser.add_argument("--steps", type=int, default=None, help="every row's training steps "
                        "(default: each row's own; a quick check)")
    parser.add_argument("--out", help=f"the results file (default {OUT.relative_to(HERE.parent)}, "
                        "unless --steps is given)")
    args = parser.parse_args(argv)
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    cells = tuple(c.strip().lower() for c in args.cells.split(",") if c.strip())
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds takes integers, got {args.seeds!r}")
    bad = [r for r in rows if r not in ROWS] + [c for c in cells if c not in CELLS]
    if bad or not rows or not cells or not seeds or (args.steps is not None and args.steps < 1):
        parser.error(f"unknown or empty --rows/--cells/--seeds, or --steps < 1: {bad}")
    out = args.out or (None if args.steps is not None else str(OUT))
    torch.set_num_threads(1)  # as the published rows ran (results.py)
    start = time.perf_counter()
    runs: list[Run] = []
    tasks: dict[str, Task] = {}
    skipped: list[str] = []
    total, done = len(rows) * len(seeds), 0
    for row in rows:
        for seed in seeds:
            t = time.perf_counter()
            try:
                new, tasks[row] = measure(row, cells, seed, args.steps, progress=sys.stderr.isatty())
            except FileNotFoundError as err:
                skipped.append(f"{row}: skipped, {str(err).split('. ')[0]} (set GATEDRNN_TS_DATA to "
                               "the aeon wheel or a folder of .ts files; see gatedrnn.toolkit.tsfile).")
                print(skipped[-1], file=sys.stderr, flush=True)
                break
            runs += new
            done += 1
            for r in new:
                print(f"[{done}/{total}] {row} {results.NAMES[r.cell]} seed {seed} (step {r.step}): "
                      + ", ".join(f"{f} {100 * r.acc[f]:.2f}%" for f in FORMS)
                      + f" (published {r.published})", file=sys.stderr, flush=True)
            print(f"[{done}/{total}] {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    if not runs:
        print("\n".join(skipped))
        return 1
    command = "python benchmarks/int8_accuracy.py" + "".join(
        f" --{name} {value}" for name, value, default in (
            ("rows", ",".join(rows), ",".join(ROWS)), ("cells", ",".join(cells), ",".join(CELLS)),
            ("seeds", ",".join(map(str, seeds)), "0,1,2"), ("steps", args.steps, None))
        if value != default)
    text = report(runs, tasks, cells, args.steps, command, time.perf_counter() - start, skipped)
    print(text, flush=True)
    for line in mismatches(runs):
        print(f"float32 mismatch: {line}", file=sys.stderr)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
