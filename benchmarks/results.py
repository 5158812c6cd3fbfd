"""The results tables: each cell on each built-in task, mean ± standard deviation over seeds.

Usage: python benchmarks/results.py [--rows adding-100,copy,...] [--seeds 0,1,2]
                                    [--cells rnn,lstm,gru,mingru,minlstm,slstm] [--steps N]
                                    [--out-dir docs/results]

Every row trains the chosen cells (``--cells``, default the row's own) with the same hidden size,
batch, learning rate and step count (``gatedrnn.toolkit.compare``), on one CPU thread, once per
seed. Each run is scored on the validation set (synthetic tasks: a fixed draw other than the test
set; real data: 10% of the training set held out) at every evaluation, and the table reports the
test metric of the evaluation with the best validation score: model selection never sees the test
set. Rows ending in ``-blocks`` stack the cells in residual blocks (``gatedrnn.toolkit.blocks``).

Each row is written to ``<out-dir>/<row>.md`` (default ``docs/results/``), with the command, the
settings, the machine and the time it took; the documentation pages include those files, so every
number on them comes from this script. ``--steps`` replaces every row's step count (a quick check
that the script runs; with it nothing is written unless ``--out-dir`` is given). The published
column comes from the literature; its settings differ, as each file says. JapaneseVowels needs
aeon's .ts files (GATEDRNN_TS_DATA or an installed aeon) and is skipped with a note when they are
absent.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from gatedrnn.toolkit.bench_common import machine
from gatedrnn.toolkit.compare import GENERIC_DEFAULTS, TASK_DEFAULTS, Row, compare, model_options
from gatedrnn.toolkit.tasks import Task

ALL = ("rnn", "lstm", "gru", "mingru", "minlstm", "slstm")
GATED = ("lstm", "gru", "mingru", "minlstm", "slstm")
BAI = "Bai, Kolter & Koltun 2018"
# name -> (task, settings, default cells, published numbers with their source)
ROWS: dict[str, tuple[str, dict[str, Any], tuple[str, ...], str]] = {
    "adding-100": ("adding", {"task_args": {"length": 100}, "steps": 2000}, ALL,
                   f"T = 600: LSTM 0.164, GRU 5.3e-5, tanh RNN 0.177 ({BAI})"),
    "copy-50": ("copy", {"task_args": {"length": 50}, "hidden": 64, "batch": 32, "lr": 3e-3,
                         "steps": 2000}, ALL,
                f"T = 1000: LSTM 0.0204, GRU 0.0197, tanh RNN 0.0202, all at the baseline ({BAI})"),
    "mnist1d": ("mnist1d", {"steps": 2000}, ALL,
                "GRU 91%, CNN 94%, MLP 68% (Greydanus 2020; the GRU bidirectional, 6 hidden units)"),
    "japanese-vowels": ("japanese-vowels", {}, ALL,
                        "MLP 97.6%, FCN 99.3% (Fawaz et al. 2019); LSTM-FCN 99% (Karim et al. 2019)"),
    "mnist1d-blocks": ("mnist1d", {"block": "conv", "layers": 3, "hidden": 32, "steps": 1500}, GATED,
                       "GRU 91%, CNN 94% (Greydanus 2020)"),
    "selective-copy-blocks": ("selective-copy", {"block": "conv", "layers": 3, "hidden": 32,
                                                 "batch": 64, "lr": 3e-3, "steps": 1500}, GATED,
                              "Gu & Dao 2023: length 4096, 16 symbols; S4 18.3%, Mamba 99.8% (2 layers)"),
}
NAMES = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU", "mingru": "minGRU", "minlstm": "minLSTM",
         "slstm": "sLSTM"}
LINKS = {BAI: "https://arxiv.org/abs/1803.01271", "Greydanus 2020": "https://arxiv.org/abs/2011.14439",
         "Fawaz et al. 2019": "https://arxiv.org/abs/1809.04356",
         "Karim et al. 2019": "https://arxiv.org/abs/1801.04503",
         "Gu & Dao 2023": "https://arxiv.org/abs/2312.00752"}


def fmt(value: float, metric: str) -> str:
    """A metric as the tables print it: accuracies in percent, the rest with 3 significant digits."""
    return f"{100 * value:.1f}%" if metric.endswith("acc") else f"{value:.3g}"


def mean_std(values: list[float], metric: str) -> str:
    """'mean ± std' (sample standard deviation; just the value for one seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return fmt(mean, metric)
    std = statistics.stdev(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}%" if metric.endswith("acc") else f"{mean:.3g} ± {std:.2g}"


def _cite(text: str) -> str:
    for name, url in LINKS.items():
        text = text.replace(name, f"[{name}]({url})")
    return text


def _options(task: str, cells: tuple[str, ...], task_args: dict[str, Any], block: str | None) -> str:
    """The module options each cell ran with (``model_options``), as '; LSTM: init chrono, ...'."""
    parts = []
    for cell in cells:
        options = model_options(task, cell, task_args, block=block)
        if options:
            parts.append(f"{NAMES[cell]}: " + ", ".join(f"{k} {v}" for k, v in options.items()))
    return "".join(f"; {p}" for p in parts)


def run_row(name: str, seeds: list[int], cells: tuple[str, ...] | None = None,
            steps: int | None = None) -> str:
    """One row's Markdown (a table of cells, and its settings), or a note why it was skipped."""
    task_name, settings, default_cells, published = ROWS[name]
    cells = cells or default_cells
    if steps is not None:
        settings = {**settings, "steps": steps}
    start = time.perf_counter()
    runs: dict[str, list[Row]] = {c: [] for c in cells}
    task: Task | None = None
    for seed in seeds:
        try:
            rows, task = compare(task_name, cells, seed=seed, progress=False, select=True, **settings)
        except FileNotFoundError as err:
            return (f"{name}: skipped, {str(err).split('. ')[0]} (set GATEDRNN_TS_DATA to the aeon "
                    "wheel or a folder of .ts files; see gatedrnn.toolkit.tsfile).\n")
        for r in rows:
            runs[r.cell].append(r)
    assert task is not None
    metric = task.metric
    # the other half of a per-step task's score: cross-entropy next to accuracy, recall next to it
    extra = {"test_acc": "test_ce", "test_ce": "test_acc"}.get(metric) if task.per_step else None
    head = ["cell", f"{metric}, mean ± std", "per seed"] + ([extra] if extra else []) + \
        ["parameters", "train s", "solved"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cell in cells:
        rs = runs[cell]
        values = [r.metrics[metric] for r in rs]
        cols = [NAMES[cell], mean_std(values, metric), ", ".join(fmt(v, metric) for v in values)]
        if extra:
            cols.append(mean_std([r.metrics[extra] for r in rs], extra))
        cols += [f"{rs[0].parameters / 1000:.1f}k", f"{statistics.fmean(r.seconds for r in rs):.0f}",
                 f"{sum(r.solved for r in rs)}/{len(rs)}"]
        lines.append("| " + " | ".join(cols) + " |")
    used = {**GENERIC_DEFAULTS, **TASK_DEFAULTS.get(task_name, {}), **settings}
    args = ", ".join(f"{k}={v}" for k, v in task.config().items()
                     if k not in ("vocab", "test_size", "data") and v is not None)
    model = (f"{used['layers']} residual blocks ({used['block']}) of width {used['hidden']}"
             if used.get("block") else f"one layer of {used['hidden']} units")
    chosen = {c: [r.steps for r in runs[c]] for c in cells}
    command = f"python benchmarks/results.py --rows {name} --seeds {','.join(map(str, seeds))}"
    if cells != default_cells:
        command += f" --cells {','.join(cells)}"
    if steps is not None:
        command += f" --steps {steps}"
    notes = [
        f"Task: {task.name} ({args}); baseline {fmt(task.baseline, metric)}; solved: {task.solved_rule}.",
        f"Model: {model}; Adam lr {used['lr']:g}, batch {used['batch']}, {used['steps']} steps"
        + (f" (the rate falling linearly to 0 over the last {used['decay_steps']})"
           if used.get("decay_steps") else "")
        + f", gradient clipping at {used.get('clip', 1.0):g}"
        + _options(task_name, cells, task.config(), used.get("block")) + ".",
        "Each seed's model is the evaluation with the best validation score (steps chosen: "
        + "; ".join(f"{NAMES[c]} {', '.join(map(str, s))}" for c, s in chosen.items()) + ").",
        f"Published: {_cite(published)}.",
        f"Command: `{command}`; {time.perf_counter() - start:.0f} s on one thread of {machine()}.",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {list(ROWS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    parser.add_argument("--cells", help=f"comma-separated, from {list(ALL)} (default: each row's own)")
    parser.add_argument("--steps", type=int, default=None,
                        help="every row's training steps (default: each row's own)")
    parser.add_argument("--out-dir", help="write each row to OUT_DIR/<row>.md "
                        "(default docs/results, unless --steps is given)")
    args = parser.parse_args(argv)
    cells = tuple(c.strip().lower() for c in args.cells.split(",") if c.strip()) if args.cells else None
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds takes integers, got {args.seeds!r}")
    bad = [c for c in cells or () if c not in ALL] + [r for r in rows if r not in ROWS]
    if bad or cells == () or not rows or not seeds or (args.steps is not None and args.steps < 1):
        parser.error(f"unknown or empty --cells/--rows/--seeds, or --steps < 1: {bad}")
    out_dir = args.out_dir or (None if args.steps is not None else "docs/results")
    torch.set_num_threads(1)  # see gatedrnn.cli._threads: one thread is as fast here and robust
    for name in rows:
        t = time.perf_counter()
        text = run_row(name, seeds, cells, args.steps)
        print(f"## {name}\n\n{text}", flush=True)
        if out_dir is not None:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            Path(out_dir, f"{name}.md").write_text(text)
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
