"""The README's Results table: tanh RNN, LSTM, GRU, minGRU, minLSTM and sLSTM on each built-in task.

Usage: python benchmarks/results.py [--out results.md] [--rows adding-100,copy,...] [--seed 0]
                                    [--cells rnn,lstm,gru,mingru,minlstm,slstm] [--steps N]

Every row trains the chosen cells (``--cells``, default all six) with the same hidden size, batch,
learning rate and step count (``gatedrnn.toolkit.compare``), on one CPU thread each, and reports
the headline test metric, parameters and training time. The newer cells get exactly the LSTM's and
GRU's budget, so their columns compare accuracy, parameters and time on equal terms; only the LSTM
gets chrono initialisation on adding and copy. The step counts are modest on purpose, to keep the
table short on two cores: the numbers show what each cell learns in a short budget, not its best.
``--steps`` replaces every row's step count (e.g. ``--steps 20`` to check that the script runs).
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
CELLS = ("rnn", "lstm", "gru", "mingru", "minlstm", "slstm")
NAMES = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU", "mingru": "minGRU", "minlstm": "minLSTM",
         "slstm": "sLSTM"}


def _fmt(value: float, metric: str) -> str:
    return f"{100 * value:.1f}%" if metric.endswith("acc") else f"{value:.3g}"


def run_row(name: str, seed: int, cells: tuple[str, ...] = CELLS,
            steps: int | None = None) -> tuple[str, Task | None, str]:
    """One Markdown table row, the task, and a note (why it was skipped, or its settings)."""
    task_name, settings, published = ROWS[name]
    if steps is not None:
        settings = {**settings, "steps": steps}
    try:
        rows, task = compare(task_name, cells, seed=seed, progress=False, **settings)
    except FileNotFoundError as err:
        return "", None, (f"{name}: skipped, {str(err).split('. ')[0]} (set GATEDRNN_TS_DATA to the aeon "
                          "wheel or a folder of .ts files; see gatedrnn.toolkit.tsfile).")
    by_cell = {r.cell: r for r in rows}
    columns = []
    for cell in cells:
        r = by_cell[cell]
        columns.append(f"{_fmt(r.metrics[task.metric], task.metric)} · {r.parameters / 1000:.1f}k · "
                     f"{r.seconds:.{1 if r.seconds < 10 else 0}f} s" + (" ✓" if r.solved else ""))
    args = ", ".join(f"{k}={v}" for k, v in task.config().items()
                     if k not in ("vocab", "test_size", "data") and v is not None)
    label = f"{task.name}" + (f" ({args})" if args else "")
    baseline = _fmt(task.baseline, task.metric)
    line = f"| {label} | {task.metric} | {' | '.join(columns)} | {baseline} | {published} |"
    used = {**GENERIC_DEFAULTS, **TASK_DEFAULTS.get(task_name, {}), **settings}
    note = (f"{label}: hidden {used['hidden']}, batch {used['batch']}, lr {used['lr']:g}, "
            f"{used['steps']} steps; solved = {task.solved_rule}")
    return line, task, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {list(ROWS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the table to this Markdown file")
    parser.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated, from {list(CELLS)}")
    parser.add_argument("--steps", type=int, default=None,
                        help="every row's training steps (default: each row's own)")
    args = parser.parse_args(argv)
    cells = tuple(c.strip().lower() for c in args.cells.split(",") if c.strip())
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    bad = [c for c in cells if c not in CELLS] + [r for r in rows if r not in ROWS]
    if bad or not cells or not rows or (args.steps is not None and args.steps < 1):
        parser.error(f"unknown or empty --cells/--rows, or --steps < 1: {bad}")
    torch.set_num_threads(1)  # see gatedrnn.cli._threads: one thread is as fast here and robust
    start = time.perf_counter()
    lines = ["| task | metric | " + " | ".join(NAMES[c] for c in cells) + " | baseline | published |",
             "|---|---|" + "---|" * len(cells) + "---|---|"]
    notes = []
    for name in rows:
        t = time.perf_counter()
        line, _, note = run_row(name, args.seed, cells, args.steps)
        if line:
            lines.append(line)
        notes.append(note)
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
    total = time.perf_counter() - start
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + (
        "\n- Each cell: test metric · parameters · training seconds (one CPU thread; evaluation "
        "excluded); ✓ = solved. Adam, gradient clipping at 1, the same settings for every "
        "cell of a row; the LSTM uses init='chrono' on adding and copy (see gatedrnn.toolkit.compare)."
        f"\n- Seed {args.seed}; whole table {total / 60:.1f} min; `python benchmarks/results.py`.")
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
