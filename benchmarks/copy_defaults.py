"""Copy memory at T = 100 with `gatedrnn train`'s defaults alone: one run per cell, timed.

Usage: python benchmarks/copy_defaults.py [--cells gru,lstm] [--seed 0] [--out-dir docs/results]
                                          [--logged CELL=FOLDER ...]

Runs ``gatedrnn train --task copy --length 100 --cell CELL --seed SEED --out runs/copy-CELL
--overwrite`` (an earlier run there is replaced; nothing else on the command line: the settings
are the per-cell defaults in ``gatedrnn.toolkit.defaults``), then writes ``<out-dir>/copy-100.md``:
wall time, final test cross-entropy against the memoryless baseline, recall accuracy, and the step
at which the run first counted as solved (recall accuracy >= 0.99 and cross-entropy < 5% of the
baseline).
``--logged CELL=FOLDER`` reads a cell's row from a run folder trained earlier with the same
settings (for a run that was stopped and continued with ``--resume``) instead of training it; its
wall time is then not known and the row says so.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gatedrnn import cli
from gatedrnn.toolkit.bench_common import machine
from gatedrnn.toolkit.compare import model_options, train_defaults
from gatedrnn.toolkit.tasks import CopyMemory
from gatedrnn.toolkit.train import LOG_FILE, read_log

NAMES = {"gru": "GRU", "lstm": "LSTM", "rnn": "tanh RNN", "mingru": "minGRU", "minlstm": "minLSTM",
         "slstm": "sLSTM"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="gru,lstm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="runs", help="parent of the run folders (default runs/)")
    parser.add_argument("--out-dir", default="docs/results")
    parser.add_argument("--logged", action="append", default=[], help="CELL=FOLDER: read, do not train")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.logged):
        parser.error("--logged takes CELL=FOLDER")
    logged = dict(item.split("=", 1) for item in args.logged)
    task = CopyMemory(length=100)
    rows, commands = [], []
    for cell in [c.strip() for c in args.cells.split(",") if c.strip()]:
        folder = Path(args.runs) / f"copy-{cell}"
        command = ["train", "--task", "copy", "--length", "100", "--cell", cell, "--seed", str(args.seed),
                   "--out", str(folder), "--overwrite", "--no-progress"]  # a rerun replaces the old run
        start = time.perf_counter()
        if cell in logged:
            folder = Path(logged[cell])
        elif cli.main(command) != 0:
            return 1
        wall = time.perf_counter() - start if cell not in logged else None
        history = read_log(folder / LOG_FILE)
        final = history[-1]
        solved_at = next((r["step"] for r in history if task.solved(r)), None)
        used = {**train_defaults("copy", cell), **model_options("copy", cell, task.config())}
        settings = ", ".join(f"{k} {v}" for k, v in used.items() if k not in ("task_args",))
        share = 100 * final["test_ce"] / task.baseline
        rows.append(f"| {NAMES[cell]} | {final['test_ce']:.4g} | {share:.1f}% | "
                    f"{100 * final['test_acc']:.2f}% | {solved_at or 'no'} | {final['step']} | "
                    f"{final['time'] / 60:.1f} | {'-' if wall is None else f'{wall / 60:.1f}'} |")
        how = " (read from an earlier run of these settings, stopped and resumed)" if cell in logged else ""
        commands.append(f"`gatedrnn train {' '.join(command[1:-4])}` ({settings}){how}")
        print(rows[-1], file=sys.stderr, flush=True)
    text = "\n".join([
        "| cell | test cross-entropy | of the baseline | recall accuracy | solved at step | steps | "
        "train min | wall min |", "|---|---|---|---|---|---|---|---|", *rows, "",
        f"- Copy memory at T = 100: memoryless baseline 10·ln 8 / 120 = {task.baseline:.4g}; solved: "
        f"{task.solved_rule}. Test set: {task.test_size} sequences.",
        *[f"- {c}." for c in commands],
        "- train min: training alone; wall min: the whole command, evaluations and checkpoints included.",
        f"- `python benchmarks/copy_defaults.py --seed {args.seed}"
        + "".join(f" --logged {c}=FOLDER" for c in logged) + f"`, on one thread of {machine()}.",
    ]) + "\n"
    print(text)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    Path(args.out_dir, "copy-100.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
