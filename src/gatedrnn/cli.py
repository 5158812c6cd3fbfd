"""The ``gatedrnn`` command: compare, train, sample, plot, bench. A leaf: nothing imports it.

    gatedrnn compare                      tanh RNN vs LSTM vs GRU on the adding problem (the main job)
    gatedrnn train --task adding --cell gru --out runs/gru [--resume]
    gatedrnn sample runs/charlm --temperature 0.8
    gatedrnn plot runs/compare
    gatedrnn bench ...                    speed against torch.nn (gatedrnn.toolkit.bench)

Under ``torchrun`` ``gatedrnn train`` runs data-parallel (``python -m gatedrnn`` is this command).

Arguments are checked by their argparse types (sizes positive, probabilities in [0, 1), numbers
finite, devices present, files readable, run folders creatable); every expected failure, a bad
argument or a bad file, a full disk or a non-finite loss, is one line on stderr and exit status 2
(arguments) or 1 (the rest), never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

MAX_INT = 2**63 - 1  # torch's sizes and seeds are int64
CELLS = ("rnn", "lstm", "gru", "mingru", "minlstm", "slstm")


class Parser(argparse.ArgumentParser):
    """argparse, except that an error is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def integer(low: int, high: int = MAX_INT) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {text}")
        return value
    parse.__name__ = "integer"
    return parse


def real(low: float = -math.inf, high: float = math.inf, *, open_low: bool = False,
         open_high: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in the interval from low to high (ends open or closed)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = low < value if open_low else low <= value
        inside = above and (value < high if open_high else value <= high)
        if not math.isfinite(value) or not inside:
            span = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
            raise argparse.ArgumentTypeError(f"must be a finite number in {span}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


POSITIVE, COUNT = integer(1), integer(0)
PROBABILITY = real(0, 1, open_high=True)
POSITIVE_REAL = real(0, open_low=True)


def device(text: str) -> str:
    """An argparse type: "cpu", or a CUDA device that this machine has."""
    from .interop.io import CheckpointError, check_device

    try:
        check_device("device", text)
    except CheckpointError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("device: ")) from None
    return text


def readable_file(text: str) -> str:
    """An argparse type: a file that exists and can be read."""
    path = Path(text)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not a readable file")
    return text


def folder(text: str) -> str:
    """An argparse type: a folder that exists or can be created (nothing on the way is a file)."""
    path = Path(text)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise argparse.ArgumentTypeError(f"{text!r} cannot be a folder: {str(part)!r} is a file")
            if not os.access(part, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"{str(part)!r} is not writable")
            break
    return text


def cell_list(text: str) -> tuple[str, ...]:
    """An argparse type: a comma-separated, non-empty list of distinct cells, or ``all``."""
    if text.strip() == "all":
        return CELLS
    cells = tuple(c.strip() for c in text.split(","))
    if not text.strip() or not all(c in CELLS for c in cells) or len(set(cells)) != len(cells):
        raise argparse.ArgumentTypeError(f"expected distinct cells from {','.join(CELLS)} separated "
                                         f"by commas, got {text!r}")
    return cells


def _writable(path: str) -> None:
    """Create the folder ``path`` and prove it takes a file (a read-only or full disk fails here,
    before any training time is spent)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    probe = Path(path) / f".gatedrnn-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
    finally:
        probe.unlink(missing_ok=True)


# Options of the recurrent module, as (flag, keyword, type); None means a store_true switch.
VARIANTS: list[tuple[str, str, Any]] = [
    ("--layer-norm", "layer_norm", None), ("--peephole", "peephole", None),
    ("--recurrent-dropout", "recurrent_dropout", PROBABILITY), ("--zoneout", "zoneout", PROBABILITY),
    ("--zoneout-cell", "zoneout_cell", PROBABILITY), ("--weight-drop", "weight_drop", PROBABILITY),
    ("--forget-bias", "forget_bias", real()), ("--chrono-max-len", "chrono_max_len", POSITIVE),
    ("--dropout", "dropout", PROBABILITY), ("--bidirectional", "bidirectional", None),
    ("--proj-size", "proj_size", COUNT),
]
# Task options, as (flag, keyword, type): passed to a task only if its constructor takes them.
TASK_OPTIONS: list[tuple[str, str, Any]] = [
    ("--length", "length", POSITIVE), ("--text", "text", readable_file), ("--data", "data", str),
    ("--problem", "problem", str), ("--window", "window", POSITIVE),
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
    p.add_argument("--task", default="adding", help="adding, copy, selective-copy, mnist1d, "
                   "japanese-vowels, gunpoint, uea, charlm, sunspots (default: adding)")
    for flag, key, kind in TASK_OPTIONS:
        p.add_argument(flag, dest=key, type=kind, default=None, help=f"task option {key}")
    p.add_argument("--hidden", type=POSITIVE, help="hidden units")
    p.add_argument("--layers", type=POSITIVE, default=1)
    p.add_argument("--block", choices=["plain", "conv"],
                   help="stack --layers residual blocks (pre-norm, cell, residual, gated feed-forward; "
                        "conv: a causal depthwise convolution first), as the minGRU and xLSTM papers do "
                        "(gatedrnn.toolkit.blocks); default: the bare cell")
    p.add_argument("--steps", type=POSITIVE, help="optimizer steps")
    # Above 1e30, Adam's bias-corrected step overflows float32 inside torch (a RuntimeError).
    p.add_argument("--lr", type=real(0, 1e30, open_low=True), help="Adam learning rate")
    p.add_argument("--batch", type=POSITIVE, help="sequences per step (per process under torchrun)")
    p.add_argument("--decay-steps", type=COUNT,
                   help="the learning rate falls linearly to 0 over the last N steps (default 0: constant)")
    p.add_argument("--seed", type=COUNT, default=0)
    p.add_argument("--clip", type=POSITIVE_REAL, default=1.0, help="gradient norm clipping (default 1)")
    p.add_argument("--eval-every", type=POSITIVE, help="steps between evaluations and checkpoints")
    p.add_argument("--threads", type=integer(1, 4096),
                   help="torch threads per process (default 1; see cli._threads)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar on stderr (there is none unless stderr is a terminal)")


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gatedrnn", description="LSTM and GRU from their equations: "
                                     "train, compare and inspect recurrent networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    cmp = sub.add_parser("compare", help="tanh RNN vs LSTM vs GRU on one task (default: adding, T=100)")
    _add_common(cmp)
    cmp.add_argument("--cells", type=cell_list, default=("rnn", "lstm", "gru"),
                     help="comma-separated, or all (default rnn,lstm,gru)")
    cmp.add_argument("--lstm-init", choices=["chrono", "torch"], default="chrono",
                     help="LSTM init on adding/copy (default chrono; torch = torch.nn's)")
    cmp.add_argument("--out", type=folder, default="runs/compare",
                     help="report folder (default runs/compare)")

    tr = sub.add_parser("train", help="train one model on one task, with checkpoints")
    _add_common(tr)
    tr.add_argument("--cell", choices=CELLS, default="gru")
    tr.add_argument("--out", type=folder, help="run folder: metrics.jsonl, checkpoint.json, weights")
    tr.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    tr.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    tr.add_argument("--engine", choices=["auto", "reference", "fused"])
    tr.add_argument("--init", choices=["torch", "orthogonal", "chrono"],
                    help="weight init (the LSTM on adding and copy defaults to chrono, elsewhere torch)")
    tr.add_argument("--reset-after", action=argparse.BooleanOptionalAction, default=None,
                    help="GRU form: reset-after (torch, default) or Cho et al.'s")
    for flag, key, kind in VARIANTS:
        if kind is None:
            tr.add_argument(flag, dest=key, action="store_true", default=None)
        else:
            tr.add_argument(flag, dest=key, type=kind)

    sm = sub.add_parser("sample", help="generate text from a char-LM checkpoint")
    sm.add_argument("folder", help="run folder of `gatedrnn train --task charlm`")
    sm.add_argument("--chars", type=integer(0, 10**9), default=500, help="characters to generate")
    sm.add_argument("--temperature", type=POSITIVE_REAL, default=1.0)
    sm.add_argument("--prime", default="\n", help="text to start from")
    sm.add_argument("--seed", type=COUNT, default=0)

    pl = sub.add_parser("plot", help="redraw the figures of a run or compare folder from its logs")
    pl.add_argument("folder")

    sub.add_parser("bench", help="speed against torch.nn (arguments go to gatedrnn.toolkit.bench)",
                   add_help=False)
    return parser


def _progress(args: argparse.Namespace) -> bool:
    # A bar only on a terminal: redirected to a file, its redraws would bury the messages.
    return not args.no_progress and sys.stderr.isatty()


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("hidden", "layers", "block", "steps", "lr", "batch", "decay_steps", "clip", "eval_every")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _cmd_train(args: argparse.Namespace) -> int:
    from .toolkit.compare import lstm_options_for, train_defaults
    from .toolkit.train import TrainConfig, train

    defaults = train_defaults(args.task, args.cell)
    settings = {**{k: v for k, v in defaults.items() if k != "task_args"}, **_settings(args)}
    settings.setdefault("eval_every", max(1, settings["steps"] // 20))
    task_args = {**defaults.get("task_args", {}), **_task_args(args.task, args)}
    keys = [key for _, key, _ in VARIANTS] + ["engine", "init", "reset_after"]
    options = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    if args.cell == "lstm" and "init" not in options:  # chrono on adding and copy, as compare does
        options = {**lstm_options_for(args.task, task_args), **options}
    cfg = TrainConfig(task=args.task, task_args=task_args, cell=args.cell, seed=args.seed, out=args.out,
                      resume=args.resume, progress=_progress(args), device=args.device,
                      options=options, **settings)
    if args.out is not None:
        _writable(args.out)
    result = train(cfg)
    if result.history and int(os.environ.get("RANK", "0")) == 0:
        final = {k: round(v, 6) if isinstance(v, float) else v for k, v in result.final.items()}
        print(f"{args.cell} on {args.task}: {result.parameters:,} parameters, "
              f"{result.seconds:.1f} s training; final {final}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .toolkit.compare import run_compare

    cells = args.cells
    _writable(args.out)
    task_args = _task_args(args.task, args)
    kwargs = _settings(args)
    if task_args:
        from .toolkit.compare import TASK_DEFAULTS

        kwargs["task_args"] = {**TASK_DEFAULTS.get(args.task, {}).get("task_args", {}), **task_args}
    print(run_compare(task=args.task, cells=cells, out=args.out or None, seed=args.seed,
                      progress=_progress(args),
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


def _one_line(err: BaseException) -> str:
    """An exception as one line: OSErrors as their reason and file, the rest as their message."""
    if isinstance(err, OSError) and err.strerror:
        text = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status: 0 on success, 1 on a reported error, 2 on
    bad arguments, 130 when interrupted. Every expected failure is one line on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # Imported here so that a missing or broken bench module never breaks the other commands.
        from .toolkit import bench

        try:
            return int(bench.main(argv[1:]) or 0)
        except SystemExit as done:  # --help (0) or an argument error (2, already printed)
            return int(done.code or 0)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or an argument error (2, already printed)
        return int(done.code or 0)
    from .toolkit.checkpoint import CheckpointError
    from .toolkit.train import NonFiniteLossError

    _threads(getattr(args, "threads", None))
    commands = {"train": _cmd_train, "compare": _cmd_compare, "sample": _cmd_sample, "plot": _cmd_plot}
    try:
        return commands[args.command](args)
    # TypeError: the core's answer to an option the chosen cell does not take (RNN --layer-norm).
    # OSError: unreadable inputs, a read-only or full disk. MemoryError and torch's allocation
    # RuntimeError: sizes beyond this machine.
    except (NonFiniteLossError, CheckpointError, OSError, ImportError, ValueError, TypeError,
            MemoryError, OverflowError) as err:
        message = _one_line(err)
    except RuntimeError as err:
        if "allocat" not in str(err):
            raise
        message = f"not enough memory ({_one_line(err)[:200]})"
    except KeyboardInterrupt:
        message, status = "interrupted", 130
        print(f"gatedrnn {args.command}: {message}", file=sys.stderr)
        return status
    print(f"gatedrnn {args.command}: error: {message}", file=sys.stderr)
    return 1
