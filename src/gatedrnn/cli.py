"""The ``gatedrnn`` command: compare, train, sample, plot, bench. A leaf: nothing imports it.

    gatedrnn compare                      tanh RNN vs LSTM vs GRU on the adding problem (the main job)
    gatedrnn train --task adding --cell gru --out runs/gru [--resume]
    gatedrnn sample runs/charlm --temperature 0.8
    gatedrnn plot runs/compare
    gatedrnn bench ...                    speed against torch.nn (gatedrnn.toolkit.bench)

Under ``torchrun`` ``gatedrnn train`` runs data-parallel (``python -m gatedrnn`` is this command).
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Sequence
from typing import Any

# Options of the recurrent module, as (flag, keyword, type); None means a store_true switch.
VARIANTS: list[tuple[str, str, Any]] = [
    ("--layer-norm", "layer_norm", None), ("--peephole", "peephole", None),
    ("--recurrent-dropout", "recurrent_dropout", float), ("--zoneout", "zoneout", float),
    ("--zoneout-cell", "zoneout_cell", float), ("--weight-drop", "weight_drop", float),
    ("--forget-bias", "forget_bias", float), ("--chrono-max-len", "chrono_max_len", int),
    ("--dropout", "dropout", float), ("--bidirectional", "bidirectional", None),
    ("--proj-size", "proj_size", int),
]
# Task options, as (flag, keyword, type): passed to a task only if its constructor takes them.
TASK_OPTIONS: list[tuple[str, str, Any]] = [
    ("--length", "length", int), ("--text", "text", str), ("--data", "data", str),
    ("--problem", "problem", str), ("--window", "window", int),
]


def _threads(value: int | None) -> None:
    import torch

    # One thread unless asked: the toolkit's models are small (H ~ 64), where a second thread bought
    # nothing here (17.0 vs 18.3 ms per LSTM step), while with one other busy process on the two
    # cores, two OpenMP threads made each step 30-90x slower (spinning on a taken core).
    torch.set_num_threads(value or 1)


def _task_args(task: str, args: argparse.Namespace) -> dict[str, Any]:
    from .toolkit.tasks import task_class

    accepted = set(inspect.signature(task_class(task).__init__).parameters)
    out = {}
    for flag, key, _ in TASK_OPTIONS:
        value = getattr(args, key, None)
        if value is None:
            continue
        if key not in accepted:
            raise ValueError(f"task {task!r} takes no {flag}")
        out[key] = value
    return out


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="adding", help="adding, copy, mnist1d, japanese-vowels, gunpoint, "
                   "uea, charlm, sunspots (default: adding)")
    for flag, key, kind in TASK_OPTIONS:
        p.add_argument(flag, dest=key, type=kind, default=None, help=f"task option {key}")
    p.add_argument("--hidden", type=int, help="hidden units")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--batch", type=int, help="sequences per step (per process under torchrun)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping (default 1)")
    p.add_argument("--eval-every", type=int, help="steps between evaluations and checkpoints")
    p.add_argument("--threads", type=int, help="torch threads per process (default 1; see cli._threads)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatedrnn", description="LSTM and GRU from their equations: "
                                     "train, compare and inspect recurrent networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    cmp = sub.add_parser("compare", help="tanh RNN vs LSTM vs GRU on one task (default: adding, T=100)")
    _add_common(cmp)
    cmp.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated (default rnn,lstm,gru)")
    cmp.add_argument("--lstm-init", choices=["chrono", "torch"], default="chrono",
                     help="LSTM init on adding/copy (default chrono; torch = torch.nn's)")
    cmp.add_argument("--out", default="runs/compare", help="report folder (default runs/compare)")

    tr = sub.add_parser("train", help="train one model on one task, with checkpoints")
    _add_common(tr)
    tr.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="gru")
    tr.add_argument("--out", help="run folder: metrics.jsonl, checkpoint.json, weights")
    tr.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    tr.add_argument("--device", default="cpu", help="cpu or cuda")
    tr.add_argument("--engine", choices=["auto", "reference", "fused"])
    tr.add_argument("--init", choices=["torch", "orthogonal", "chrono"])
    tr.add_argument("--reset-after", action=argparse.BooleanOptionalAction, default=None,
                    help="GRU form: reset-after (torch, default) or Cho et al.'s")
    for flag, key, kind in VARIANTS:
        if kind is None:
            tr.add_argument(flag, dest=key, action="store_true", default=None)
        else:
            tr.add_argument(flag, dest=key, type=kind)

    sm = sub.add_parser("sample", help="generate text from a char-LM checkpoint")
    sm.add_argument("folder", help="run folder of `gatedrnn train --task charlm`")
    sm.add_argument("--chars", type=int, default=500, help="characters to generate")
    sm.add_argument("--temperature", type=float, default=1.0)
    sm.add_argument("--prime", default="\n", help="text to start from")
    sm.add_argument("--seed", type=int, default=0)

    pl = sub.add_parser("plot", help="redraw the figures of a run or compare folder from its logs")
    pl.add_argument("folder")

    sub.add_parser("bench", help="speed against torch.nn (arguments go to gatedrnn.toolkit.bench)",
                   add_help=False)
    return parser


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("hidden", "layers", "steps", "lr", "batch", "clip", "eval_every")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _cmd_train(args: argparse.Namespace) -> int:
    from .toolkit.compare import GENERIC_DEFAULTS, TASK_DEFAULTS
    from .toolkit.train import TrainConfig, train

    defaults = {**GENERIC_DEFAULTS, **TASK_DEFAULTS.get(args.task, {})}
    settings = {**{k: v for k, v in defaults.items() if k != "task_args"}, **_settings(args)}
    settings.setdefault("eval_every", max(1, settings["steps"] // 20))
    task_args = {**defaults.get("task_args", {}), **_task_args(args.task, args)}
    keys = [key for _, key, _ in VARIANTS] + ["engine", "init", "reset_after"]
    options = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    cfg = TrainConfig(task=args.task, task_args=task_args, cell=args.cell, seed=args.seed, out=args.out,
                      resume=args.resume, progress=not args.no_progress, device=args.device,
                      options=options, **settings)
    result = train(cfg)
    if result.history and int(os.environ.get("RANK", "0")) == 0:
        final = {k: round(v, 6) if isinstance(v, float) else v for k, v in result.final.items()}
        print(f"{args.cell} on {args.task}: {result.parameters:,} parameters, "
              f"{result.seconds:.1f} s training; final {final}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .toolkit.compare import run_compare

    cells = tuple(c.strip() for c in args.cells.split(",") if c.strip())
    task_args = _task_args(args.task, args)
    kwargs = _settings(args)
    if task_args:
        from .toolkit.compare import TASK_DEFAULTS

        kwargs["task_args"] = {**TASK_DEFAULTS.get(args.task, {}).get("task_args", {}), **task_args}
    print(run_compare(task=args.task, cells=cells, out=args.out or None, seed=args.seed,
                      progress=not args.no_progress,
                      lstm_options={} if args.lstm_init == "torch" else None, **kwargs))
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from .toolkit.sample import sample_from

    sys.stdout.write(sample_from(args.folder, args.chars, args.temperature, args.prime, args.seed) + "\n")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .toolkit.plots import redraw

    for path in redraw(args.folder):
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 1 on a reported error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Imported here so that a missing or broken bench module never breaks the other commands.
        from .toolkit import bench

        return int(bench.main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    from .toolkit.checkpoint import CheckpointError
    from .toolkit.train import NonFiniteLossError

    _threads(getattr(args, "threads", None))
    commands = {"train": _cmd_train, "compare": _cmd_compare, "sample": _cmd_sample, "plot": _cmd_plot}
    try:
        return commands[args.command](args)
    # TypeError: the core's answer to an option the chosen cell does not take (RNN --layer-norm).
    except (NonFiniteLossError, CheckpointError, FileNotFoundError, ImportError, ValueError,
            TypeError) as err:
        print(f"gatedrnn {args.command}: error: {err}", file=sys.stderr)
        return 1
