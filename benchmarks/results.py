"""The README's Results table: tanh RNN vs LSTM vs GRU on each built-in benchmark task.

Usage: python benchmarks/results.py [--out results.md] [--rows adding-100,copy,...] [--seed 0]

Every row trains the three cells with the same hidden size, batch, learning rate and step count
(``gatedrnn.toolkit.compare``), on one CPU thread each, and reports the headline test metric,
parameters and training time. The step counts are modest on purpose, to keep the whole table near
ten minutes on two cores: the numbers show what each cell learns in a short budget, not its best.
The published column comes from the literature (shared/REFERENCE.md section 6); its settings
differ (e.g. Bai et al. use T = 600 and T = 1000 and far longer training), as the notes say.
JapaneseVowels needs aeon's .ts files (GATEDRNN_TS_DATA or an installed aeon) and is skipped with a
note when they are absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from gatedrnn.toolkit.compare import GENERIC_DEFAULTS, TASK_DEFAULTS, compare
from gatedrnn.toolkit.tasks import Task

# name -> (task, settings, published number with its source)
ROWS: dict[str, tuple[str, dict[str, Any], str]] = {
    "adding-100": ("adding", {"task_args": {"length": 100}, "steps": 2000},
                   "T=600: LSTM 0.164, GRU 5.3e-5, RNN 0.177 (Bai et al. 2018)"),
    "adding-200": ("adding", {"task_args": {"length": 200}, "steps": 2000},
                   "T=600: LSTM 0.164, GRU 5.3e-5, RNN 0.177 (Bai et al. 2018)"),
    "copy": ("copy", {"task_args": {"length": 50}, "steps": 2000},
             "T=1000: LSTM 0.0204, GRU 0.0197, RNN 0.0202 (Bai et al. 2018)"),
    "mnist1d": ("mnist1d", {"steps": 2000}, "GRU 91% (Greydanus 2020; 8000 steps)"),
    "japanese-vowels": ("japanese-vowels", {"steps": 600},
                        "MLP 97.6%, FCN 99.3% (Fawaz et al. 2019); LSTM-FCN 99% (Karim et al. 2019)"),
}
CELLS = ("rnn", "lstm", "gru")


def _fmt(value: float, metric: str) -> str:
    return f"{100 * value:.1f}%" if metric.endswith("acc") else f"{value:.3g}"


def run_row(name: str, seed: int) -> tuple[str, Task | None, str]:
    """One Markdown table row, the task, and a note (why it was skipped, or its settings)."""
    task_name, settings, published = ROWS[name]
    try:
        rows, task = compare(task_name, CELLS, seed=seed, progress=False, **settings)
    except FileNotFoundError as err:
        return "", None, (f"{name}: skipped, {str(err).split('. ')[0]} (set GATEDRNN_TS_DATA to the aeon "
                          "wheel or a folder of .ts files; see gatedrnn.toolkit.tsfile).")
    by_cell = {r.cell: r for r in rows}
    cells = []
    for cell in CELLS:
        r = by_cell[cell]
        cells.append(f"{_fmt(r.metrics[task.metric], task.metric)} · {r.parameters / 1000:.1f}k · "
                     f"{r.seconds:.0f} s" + (" ✓" if r.solved else ""))
    args = ", ".join(f"{k}={v}" for k, v in task.config().items()
                     if k not in ("vocab", "test_size", "data") and v is not None)
    label = f"{task.name}" + (f" ({args})" if args else "")
    baseline = _fmt(task.baseline, task.metric)
    line = f"| {label} | {task.metric} | {' | '.join(cells)} | {baseline} | {published} |"
    used = {**GENERIC_DEFAULTS, **TASK_DEFAULTS.get(task_name, {}), **settings}
    note = (f"{label}: hidden {used['hidden']}, batch {used['batch']}, lr {used['lr']:g}, "
            f"{used['steps']} steps; solved = {task.solved_rule}")
    return line, task, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {list(ROWS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # see gatedrnn.cli._threads: one thread is as fast here and robust
    start = time.perf_counter()
    lines = ["| task | metric | tanh RNN | LSTM | GRU | baseline | published |",
             "|---|---|---|---|---|---|---|"]
    notes = []
    for name in args.rows.split(","):
        t = time.perf_counter()
        line, _, note = run_row(name.strip(), args.seed)
        if line:
            lines.append(line)
        notes.append(note)
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + (
        "\n- Each cell: test metric · parameters · training seconds (one CPU thread; evaluation "
        "excluded); ✓ = solved. Adam, gradient clipping at 1, the same settings for the three "
        "cells of a row; the LSTM uses init='chrono' on adding and copy (see gatedrnn.toolkit.compare)."
        f"\n- Seed {args.seed}; whole table {total / 60:.1f} min; `python benchmarks/results.py`.")
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
