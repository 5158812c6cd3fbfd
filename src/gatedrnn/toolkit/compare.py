"""The main job: a tanh RNN, an LSTM and a GRU of equal width on one task, measured side by side.

``gatedrnn compare`` (no arguments) trains each cell on the adding problem at T = 100 and prints
parameters, training time, the final test MSE against the 0.167 baseline, and whether the task was
solved (test MSE < 0.01). With an output folder it also writes the table as Markdown and CSV, and
the figures of ``gatedrnn.toolkit.plots``: learning curves, ‖∂L/∂h_t‖ against t, and gate heat maps;
a folder that already holds a report is refused unless ``overwrite=True`` replaces it.

Settings of the default run, chosen by measurement: hidden 64, batch 32, Adam lr 3e-3, 2000 steps,
gradient clipping at 1. With seeds 0, 1 and 2 the LSTM and GRU solved the task (by step 800-1000)
and the RNN stayed at the baseline, in about 100 s of wall time on one thread. The LSTM
uses chrono initialisation (Tallec & Ollivier 2018, forget-gate bias ~ log U(1, T-1)), gatedrnn's
``init="chrono"``: with torch's default init it also solves the task, but only after about 1900
steps on seed 0, too close to the budget to be robust. Pass ``lstm_options={}`` to see that.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save_file

from . import analysis, plots
from .checkpoint import check_run_folder, clear_run_folder
from .defaults import (
    CELL_DEFAULTS,
    GENERIC_DEFAULTS,
    TASK_DEFAULTS,
    TASK_OPTIONS,
    VARIANT_CELLS,
    VARIANT_OPTIONS,
    defaults_help,
    lstm_options_for,
    model_options,
    train_defaults,
)
from .model import SequenceModel, build_model
from .tasks import Task, get_task
from .train import TrainConfig, TrainResult, train

CELLS = ("rnn", "lstm", "gru")
# The defaults table lives in defaults.py (train() and the CLI read it too); these names stay
# importable from here.
__all__ = ["CELLS", "CELL_DEFAULTS", "GENERIC_DEFAULTS", "TASK_DEFAULTS", "TASK_OPTIONS", "VARIANT_CELLS",
           "VARIANT_OPTIONS", "Row", "compare", "csv_table", "defaults_help", "lstm_options_for",
           "markdown_table", "model_options", "run_compare", "train_defaults"]


@dataclass
class Row:
    """One cell's line in the table."""

    cell: str
    parameters: int
    seconds: float
    steps: int
    metrics: dict[str, float]
    solved: bool
    solved_at: int | None
    options: dict[str, Any]


def _row(cell: str, result: TrainResult, options: dict[str, Any]) -> Row:
    task, history = result.task, result.history
    solved_at = next((r["step"] for r in history if task.solved(r)), None)
    chosen = result.selected  # the final record, or the best on the validation set (select=True)
    metrics = {k: v for k, v in chosen.items() if k.startswith("test_")}
    return Row(cell, result.parameters, result.seconds, chosen.get("step", 0), metrics,
               task.solved(chosen), solved_at, options)


def _analyse(result: TrainResult, init_model: SequenceModel, out: Path) -> None:
    """Gradient norms (trained and at init) on up to 256 test sequences, and the insides of the
    first test sequence, saved as analysis.safetensors in the run folder."""
    task, model = result.task, result.model
    assert isinstance(model, SequenceModel)  # compare analyses bare networks only, not blocks
    batch = task.test_batches(256)[0]
    arrays: dict[str, np.ndarray] = {}
    if isinstance(batch.x, torch.Tensor) and not model.rnn.bidirectional:
        arrays["grad_norm"] = analysis.hidden_gradient_norms(model, task, batch).numpy()
        arrays["grad_norm_init"] = analysis.hidden_gradient_norms(init_model, task, batch).numpy()
        x = batch.x[:1]
        for name, value in analysis.inside(model, x).items():
            arrays[name if name == "hidden" else f"gate.{name}"] = value.numpy()
        if task.name == "adding":
            arrays["marks"] = torch.nonzero(x[0, :, 1]).flatten().numpy().astype(np.float32)
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()},
              str(out / plots.ANALYSIS_FILE))


def compare(task: str = "adding", cells: tuple[str, ...] = CELLS, *, out: str | Path | None = None,
            seed: int = 0, progress: bool = True, lstm_options: dict[str, Any] | None = None,
            overwrite: bool = False, **overrides: Any) -> tuple[list[Row], Task]:
    """Train each of ``cells`` with the same settings; returns the rows and the task.

    ``overrides`` replace the task's defaults (``TASK_DEFAULTS``, the same for every cell; not the
    per-cell ones of ``gatedrnn train``): task_args, hidden, batch, lr, steps, decay_steps,
    eval_every, layers, block, clip, select. Each cell's module options are ``model_options``;
    ``lstm_options`` replace the LSTM's init (default ``lstm_options_for``). A folder ``out`` that
    holds a report (``checkpoint.run_files``) is refused with ``FileExistsError``, or with
    ``overwrite`` emptied of the old report's files first.
    """
    settings = {"decay_steps": 0, **GENERIC_DEFAULTS, **TASK_DEFAULTS.get(task, {})}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    settings.setdefault("eval_every", max(1, settings["steps"] // 20))
    the_task = get_task(task, **settings.get("task_args", {}))
    settings["task_args"] = the_task.config()
    if out is not None:
        check_run_folder(out, overwrite=overwrite, report=True)
        if overwrite:  # the old report's cells, tables and figures: none may outlive it
            clear_run_folder(out, report=True)
    rows = []
    for cell in cells:
        options = model_options(task, cell, the_task.config(), lstm_options, settings.get("block"))
        folder = Path(out) / cell if out is not None else None
        cfg = TrainConfig(task=task, cell=cell, seed=seed, options=options, progress=progress,
                          out=None if folder is None else str(folder), **settings)
        torch.manual_seed(seed)  # the same draw train() makes, for the at-initialisation curve
        init_model = build_model(the_task, cell, settings["hidden"], cfg.layers, cfg.block, **options)
        result = train(cfg, the_task)
        rows.append(_row(cell, result, options))
        if folder is not None and isinstance(init_model, SequenceModel):  # not for blocks
            _analyse(result, init_model, folder)
    if out is not None:
        Path(out, "results.md").write_text(markdown_table(rows, the_task) + "\n")
        Path(out, "results.csv").write_text(csv_table(rows))
        plots.redraw(out)
    return rows, the_task


def _columns(rows: list[Row], task: Task) -> list[str]:
    return [task.metric] + sorted({k for r in rows for k in r.metrics} - {task.metric})


def _pretty(metric: str) -> str:
    return {"test_mse": "test MSE", "test_ce": "test cross-entropy", "test_acc": "test accuracy",
            "recall_acc": "recall accuracy", "test_bpc": "test bits/char"}.get(metric, metric)


def markdown_table(rows: list[Row], task: Task) -> str:
    """The compare table in Markdown, with the baseline and the settings underneath."""
    metrics = _columns(rows, task)
    head = ["cell", "parameters", "train time (s)", "steps", *[_pretty(m) for m in metrics],
            f"baseline ({_pretty(task.metric)})", "solved"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        solved = f"yes (step {r.solved_at})" if r.solved and r.solved_at else ("yes" if r.solved else "no")
        values = [f"{r.metrics.get(m, float('nan')):.4g}" for m in metrics]
        lines.append("| " + " | ".join([plots.LABELS.get(r.cell, r.cell), f"{r.parameters:,}",
                                        f"{r.seconds:.1f}", str(r.steps), *values,
                                        f"{task.baseline:.4g}", solved]) + " |")
    args = ", ".join(f"{k}={v}" for k, v in task.config().items() if k != "vocab")
    lines.append("")
    lines.append(f"Task: {task.name} ({args}); baseline = {task.metric} of a model that learnt nothing "
                 f"useful. Solved: {task.solved_rule}. Train time excludes evaluation.")
    for r in rows:
        if r.options:
            lines.append(f"{plots.LABELS.get(r.cell, r.cell)} options: "
                         + ", ".join(f"{k}={v}" for k, v in r.options.items()) + ".")
    return "\n".join(lines)


def csv_table(rows: list[Row]) -> str:
    """The compare table as CSV (one row per cell, every test metric a column)."""
    metrics = sorted({k for r in rows for k in r.metrics})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["cell", "parameters", "train_seconds", "steps", *metrics, "solved", "solved_at_step"])
    for r in rows:
        writer.writerow([r.cell, r.parameters, f"{r.seconds:.2f}", r.steps,
                         *[f"{r.metrics.get(m, float('nan')):.6g}" for m in metrics], r.solved,
                         r.solved_at if r.solved_at is not None else ""])
    return buf.getvalue()


def run_compare(**kwargs: Any) -> str:
    """``compare`` plus timing, returning the printed report (used by the command line)."""
    start = time.perf_counter()
    rows, task = compare(**kwargs)
    total = time.perf_counter() - start
    text = markdown_table(rows, task) + f"\n\nTotal wall time {total:.0f} s (training, evaluation, figures)."
    if kwargs.get("out") is not None:
        text += f"\nReport written to {kwargs['out']}/ (results.md, results.csv, *.png)."
    return text
