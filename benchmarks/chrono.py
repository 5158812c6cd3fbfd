"""Chrono initialisation against torch's on the copy task at a long delay: cross-entropy per step.

Usage: python benchmarks/chrono.py [--length 200] [--steps 10000] [--cells lstm-chrono,lstm-torch]
                                   [--hidden 256] [--batch 32] [--lr 5e-3] [--decay-steps 2000]
                                   [--seed 0] [--runs runs] [--logged NAME=FOLDER ...]
                                   [--out-dir docs/results] [--figure docs/chrono-T.png]

Tallec & Ollivier 2018 ("Can recurrent neural networks warp time?",
https://openreview.net/forum?id=SJcKhk-Ab) derive the LSTM's gates from time warping and
initialise the forget-gate biases as log U(1, T_max - 1) and the input-gate biases as their
negatives (gatedrnn's ``init="chrono"``), which spreads the cells' memory times out to T_max. On
copy memory at T = 500 and 2000 their chrono LSTM learns the task while one with the usual
initialisation stays at the memoryless baseline 10·ln 8 / (T + 20). Here both LSTMs train on the
same batches (same seed). The flags default to the copy task's defaults (``gatedrnn train --task
copy``: 256 units, batch 32, Adam 5e-3 falling to 0 over the last 2000 steps, gradient clipping
at 1). At T = 200 the published run uses 128 units (the paper's width), whose steps cost about a
third as much, so that 34000 steps fit in about 30 minutes of one thread: ``--length 200 --steps
34000 --hidden 128 --decay-steps 14000 --eval-every 500``. ``gru`` and ``rnn`` can join on the same
axes. Each run is saved under ``<runs>/`` (its metrics.jsonl; a rerun replaces an earlier
run there), and ``--logged NAME=FOLDER`` reads a run from such a folder instead of training it,
so runs can train in parallel processes and be drawn together. The figure plots the test
cross-entropy against steps with the baseline drawn (default ``docs/chrono-<T>.png``), and
``<out-dir>/chrono-<T>.md`` gives the table with the command, the settings, the machine and the
time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from gatedrnn.toolkit.bench_common import machine  # noqa: E402
from gatedrnn.toolkit.tasks import CopyMemory  # noqa: E402
from gatedrnn.toolkit.train import LOG_FILE, TrainConfig, read_log, train  # noqa: E402

RUNS: dict[str, tuple[str, str]] = {  # name -> (cell, label)
    "lstm-chrono": ("lstm", "LSTM, chrono init"), "lstm-torch": ("lstm", "LSTM, torch init"),
    "gru": ("gru", "GRU"), "rnn": ("rnn", "tanh RNN"),
}

# Runs that stay at the baseline overlap it: a thick line under a dotted one keeps both visible.
STYLE: dict[str, dict[str, Any]] = {"lstm-torch": {"linewidth": 4, "alpha": 0.6},
                                    "rnn": {"linestyle": ":", "linewidth": 2}}


def options_for(name: str, length: int) -> dict[str, Any]:
    """The LSTM's init: chrono with T_max the whole sequence, or torch.nn's."""
    return {"init": "chrono", "chrono_max_len": length + 20} if name == "lstm-chrono" else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=200, help="copy delay T (default 200)")
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--cells", default="lstm-chrono,lstm-torch", help=f"from {list(RUNS)}")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--decay-steps", type=int, default=2000)
    parser.add_argument("--runs", default="runs", help="parent of the run folders (default runs/)")
    parser.add_argument("--logged", action="append", default=[],
                        help="NAME=FOLDER: read this run from a folder trained earlier, do not train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--out-dir", default="docs/results")
    parser.add_argument("--figure", help="the figure (default docs/chrono-<T>.png)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.cells.split(",") if n.strip()]
    logged = dict(item.split("=", 1) for item in args.logged if "=" in item)
    if not names or any(n not in RUNS for n in names) or any(n not in names for n in logged) \
            or len(logged) < len(args.logged):
        parser.error(f"--cells takes names from {list(RUNS)}; --logged NAME=FOLDER names one of them")
    torch.set_num_threads(1)
    task = CopyMemory(length=args.length)
    start = time.perf_counter()
    curves: dict[str, list[dict[str, Any]]] = {}
    rows = []
    for name in names:
        cell = RUNS[name][0]
        folder = Path(logged.get(name, Path(args.runs) / f"chrono-T{args.length}-{name}"))
        if name not in logged:
            cfg = TrainConfig(task="copy", task_args=task.config(), cell=cell, hidden=args.hidden,
                              batch=args.batch, lr=args.lr, steps=args.steps, seed=args.seed,
                              decay_steps=args.decay_steps, eval_every=args.eval_every,
                              options=options_for(name, args.length), progress=False, out=str(folder),
                              overwrite=True)  # a rerun replaces the old run
            train(cfg, task)
        history = read_log(folder / LOG_FILE)
        curves[name] = history
        final = history[-1]
        solved_at = next((r["step"] for r in history if task.solved(r)), None)
        rows.append(f"| {RUNS[name][1]} | {final['test_ce']:.4g} | {final['test_ce'] / task.baseline:.3f} | "
                    f"{100 * final['test_acc']:.2f}% | {solved_at or 'no'} | {final['step']} | "
                    f"{final['time'] / 60:.1f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    total = time.perf_counter() - start

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, history in curves.items():
        ax.plot([r["step"] for r in history], [r["test_ce"] for r in history], label=RUNS[name][1],
                **STYLE.get(name, {}))
    ax.axhline(task.baseline, color="gray", linestyle="--",
               label=f"memoryless baseline 10·ln 8/(T+20) = {task.baseline:.3g}")
    ax.set(xlabel="training step", ylabel="test cross-entropy per step", yscale="log",
           title=f"Copy memory, T = {args.length} (seed {args.seed})")
    ax.legend()
    fig.tight_layout()
    figure = Path(args.figure or f"docs/chrono-{args.length}.png")
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=110)

    command = "python benchmarks/chrono.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        "| model | test cross-entropy | / baseline | recall accuracy | solved at step | steps | train min |",
        "|---|---|---|---|---|---|---|", *rows, "",
        f"- Copy memory at T = {args.length} (sequences of {args.length + 20} steps); memoryless "
        f"baseline {task.baseline:.4g}; solved: {task.solved_rule}.",
        f"- Hidden {args.hidden}, batch {args.batch}, Adam lr {args.lr:g} falling linearly to 0 over "
        f"the last {args.decay_steps} steps, gradient clipping at 1, "
        f"{args.steps} steps, seed {args.seed}; test set of {task.test_size} sequences every "
        f"{args.eval_every} steps. Chrono: forget-gate biases log U(1, {args.length + 19}), "
        "input-gate biases their negatives.",
        f"- Command: `{command.strip()}`; "
        + (f"{total / 60:.1f} min on " if len(logged) < len(names) else "")
        + f"one thread of {machine()}"
        + (f"; {', '.join(sorted(logged))} read from runs trained separately (each by this "
           "command with `--cells NAME` and without `--logged`, two at a time, one thread each), "
           "train min from their logs." if logged else "."),
    ]) + "\n"
    print(text)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    Path(args.out_dir, f"chrono-{args.length}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
