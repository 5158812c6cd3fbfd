"""Chrono initialisation against torch's on the copy task at a long delay: cross-entropy per step.

Usage: python benchmarks/chrono.py [--length 200] [--steps 3000] [--cells lstm-chrono,lstm-torch]
                                   [--hidden 128] [--batch 32] [--lr 1e-3] [--seed 0]
                                   [--out-dir docs/results] [--figure docs/chrono.png]

Tallec & Ollivier 2018 ("Can recurrent neural networks warp time?",
https://openreview.net/forum?id=SJcKhk-Ab) derive the LSTM's gates from time warping and
initialise the forget-gate biases as log U(1, T_max - 1) and the input-gate biases as their
negatives (gatedrnn's ``init="chrono"``), which spreads the cells' memory times out to T_max. On
copy memory at T = 500 and 2000 their chrono LSTM learns the task while one with the usual
initialisation stays at the memoryless baseline 10·ln 8 / (T + 20). Here both LSTMs train on the
same batches (same seed) with Adam and gradient clipping at 1; ``gru`` and ``rnn`` can join on the
same axes. The figure plots the test cross-entropy against steps with the baseline drawn, and
``<out-dir>/chrono.md`` gives the table with the command, the settings, the machine and the time.
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

from gatedrnn.toolkit.tasks import CopyMemory  # noqa: E402
from gatedrnn.toolkit.train import TrainConfig, train  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from results import machine  # noqa: E402

RUNS: dict[str, tuple[str, str]] = {  # name -> (cell, label)
    "lstm-chrono": ("lstm", "LSTM, chrono init"), "lstm-torch": ("lstm", "LSTM, torch init"),
    "gru": ("gru", "GRU"), "rnn": ("rnn", "tanh RNN"),
}


def options_for(name: str, length: int) -> dict[str, Any]:
    """The LSTM's init: chrono with T_max the whole sequence, or torch.nn's."""
    return {"init": "chrono", "chrono_max_len": length + 20} if name == "lstm-chrono" else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=200, help="copy delay T (default 200)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--cells", default="lstm-chrono,lstm-torch", help=f"from {list(RUNS)}")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--out-dir", default="docs/results")
    parser.add_argument("--figure", default="docs/chrono.png")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.cells.split(",") if n.strip()]
    if not names or any(n not in RUNS for n in names):
        parser.error(f"--cells takes names from {list(RUNS)}")
    torch.set_num_threads(1)
    task = CopyMemory(length=args.length)
    start = time.perf_counter()
    curves: dict[str, list[dict[str, Any]]] = {}
    rows = []
    for name in names:
        cell = RUNS[name][0]
        cfg = TrainConfig(task="copy", task_args=task.config(), cell=cell, hidden=args.hidden,
                          batch=args.batch, lr=args.lr, steps=args.steps, seed=args.seed,
                          eval_every=args.eval_every, options=options_for(name, args.length),
                          progress=False)
        result = train(cfg, task)
        curves[name] = result.history
        final = result.final
        solved_at = next((r["step"] for r in result.history if task.solved(r)), None)
        rows.append(f"| {RUNS[name][1]} | {final['test_ce']:.4g} | {final['test_ce'] / task.baseline:.2f} | "
                    f"{100 * final['test_acc']:.1f}% | {solved_at or 'no'} | {result.seconds:.0f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    total = time.perf_counter() - start

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, history in curves.items():
        ax.plot([r["step"] for r in history], [r["test_ce"] for r in history], label=RUNS[name][1])
    ax.axhline(task.baseline, color="gray", linestyle="--",
               label=f"memoryless baseline 10·ln 8/(T+20) = {task.baseline:.3g}")
    ax.set(xlabel="training step", ylabel="test cross-entropy per step", yscale="log",
           title=f"Copy memory, T = {args.length} (seed {args.seed})")
    ax.legend()
    fig.tight_layout()
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)

    command = "python benchmarks/chrono.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        "| model | test cross-entropy | / baseline | recall accuracy | solved at step | train s |",
        "|---|---|---|---|---|---|", *rows, "",
        f"- Copy memory at T = {args.length} (sequences of {args.length + 20} steps); memoryless "
        f"baseline {task.baseline:.4g}; solved: {task.solved_rule}.",
        f"- Hidden {args.hidden}, batch {args.batch}, Adam lr {args.lr:g}, gradient clipping at 1, "
        f"{args.steps} steps, seed {args.seed}; test set of {task.test_size} sequences every "
        f"{args.eval_every} steps. Chrono: forget-gate biases log U(1, {args.length + 19}), "
        "input-gate biases their negatives.",
        f"- Command: `{command.strip()}`; {total / 60:.1f} min on one thread of {machine()}.",
    ]) + "\n"
    print(text)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    Path(args.out_dir, "chrono.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
