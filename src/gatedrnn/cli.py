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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with every option's default, "(default: ...)", where it has one; descriptions and
    epilogs as written (the per-task defaults are a table)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS
        if "(default" in text or unset or not action.option_strings:
            return text
        shown = ",".join(default) if isinstance(default, (tuple, list)) else "%(default)s"
        return f"{text} (default: {shown})"


class Parser(argparse.ArgumentParser):
    """argparse, except that an error is one line on stderr (no usage block) and exit status 2,
    and an epilog may be made only when the help is printed (``lazy_epilog``)."""

    lazy_epilog: Callable[[], str] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def format_help(self) -> str:
        if self.lazy_epilog is not None:
            self.epilog = self.lazy_epilog()
        return super().format_help()

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


# Options of the recurrent module, as (flag, keyword, type, help); type None is a store_true switch.
VARIANTS: list[tuple[str, str, Any, str]] = [
    ("--layer-norm", "layer_norm", None, "layer-normalise the gate pre-activations (LSTM, GRU)"),
    ("--peephole", "peephole", None, "peephole connections from c to the gates (LSTM)"),
    ("--recurrent-dropout", "recurrent_dropout", PROBABILITY,
     "dropout on h inside the recurrence, one mask per sequence (LSTM, GRU)"),
    ("--zoneout", "zoneout", PROBABILITY, "probability of keeping each unit of h (LSTM, GRU)"),
    ("--zoneout-cell", "zoneout_cell", PROBABILITY, "zoneout's probability for c (LSTM)"),
    ("--weight-drop", "weight_drop", PROBABILITY, "DropConnect on W_hh per forward pass (LSTM, GRU)"),
    ("--forget-bias", "forget_bias", real(), "initial total bias of the forget (GRU: update) gate"),
    ("--chrono-max-len", "chrono_max_len", POSITIVE,
     "longest dependency to expect, for --init chrono"),
    ("--dropout", "dropout", PROBABILITY, "dropout between stacked layers (needs --layers > 1)"),
    ("--bidirectional", "bidirectional", None, "a second direction over the reversed sequence"),
    ("--proj-size", "proj_size", COUNT, "project h to this size (LSTM; 0 = no projection)"),
]
# Task options, as (flag, keyword, type, help): passed to a task only if its constructor takes them.
TASK_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--length", "length", POSITIVE, "sequence length (adding, copy, charlm)"),
    ("--text", "text", readable_file, "text file to model (charlm)"),
    ("--data", "data", str, "data folder of a downloaded data set (uea, sunspots, ...)"),
    ("--problem", "problem", str, "which UEA problem (uea)"),
    ("--window", "window", POSITIVE, "input window in steps (sunspots)"),
]


def _engines() -> tuple[str, ...]:
    """Every engine some module takes: "auto", each engine a cell kind declares
    (``gatedrnn.equations.kinds``), and torch's own ("native"); a newly declared one appears here."""
    from .equations import kinds

    return ("auto", *kinds.all_engines(), "native")


def _task_defaults() -> str:
    """The per-task defaults, printed under ``gatedrnn train --help`` and ``gatedrnn compare --help``."""
    from .toolkit.compare import defaults_help

    return defaults_help()


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
    for flag, key, _, _ in TASK_OPTIONS:
        value = getattr(args, key, None)
        if value is None:
            continue
        if key not in accepted:
            raise ValueError(f"task {task!r} takes no {flag}")
        out[key] = value
    return out


def _add_common(p: Parser) -> None:
    from .toolkit.tasks import task_names

    p.lazy_epilog = _task_defaults
    p.add_argument("--task", default="adding", help=f"the task: {', '.join(task_names())}")
    for flag, key, kind, text in TASK_OPTIONS:
        p.add_argument(flag, dest=key, type=kind, default=None, help=f"task option: {text}")
    p.add_argument("--hidden", type=POSITIVE, help="hidden units (default: per task, below)")
    p.add_argument("--layers", type=POSITIVE, default=1, help="stacked recurrent layers")
    p.add_argument("--block", choices=["plain", "conv"],
                   help="stack --layers residual blocks (pre-norm, cell, residual, gated "
                        "feed-forward; conv: a causal depthwise convolution first), as the minGRU "
                        "and xLSTM papers do (gatedrnn.toolkit.BlockStack); default: the bare cell")
    p.add_argument("--steps", type=POSITIVE, help="optimizer steps (default: per task, below)")
    # Above 1e30, Adam's bias-corrected step overflows float32 inside torch (a RuntimeError).
    p.add_argument("--lr", type=real(0, 1e30, open_low=True),
                   help="Adam's learning rate (default: per task, below)")
    p.add_argument("--batch", type=POSITIVE, help="sequences per step, per process under torchrun "
                   "(default: per task, below)")
    p.add_argument("--decay-steps", type=COUNT,
                   help="the learning rate falls linearly to 0 over the last N steps "
                        "(default: per task, below; 0 keeps it constant)")
    p.add_argument("--seed", type=COUNT, default=0, help="seed of the weights and the data")
    p.add_argument("--clip", type=POSITIVE_REAL, default=1.0, help="gradient norm clipping")
    p.add_argument("--eval-every", type=POSITIVE,
                   help="steps between evaluations and checkpoints (default: --steps / 20)")
    p.add_argument("--threads", type=integer(1, 4096),
                   help="torch threads per process (default: 1, the fastest for the toolkit's "
                        "small models on a shared machine)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar on stderr (there is none unless stderr is a terminal)")


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(prog="gatedrnn", description="LSTM and GRU from their equations: "
                                     "train, compare and inspect recurrent networks.")
    parser.add_argument("--version", action="version", version=f"gatedrnn {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=Parser,
                                help="`gatedrnn COMMAND --help` describes each command")

    cmp = sub.add_parser("compare", help="tanh RNN vs LSTM vs GRU on one task (default: adding, T=100)",
                         description="Train each cell on one task with the same budget and write a "
                                     "report (table, learning curves, gates) to --out.")
    _add_common(cmp)
    cmp.add_argument("--cells", type=cell_list, default=("rnn", "lstm", "gru"),
                     help=f"comma-separated cells from {','.join(CELLS)}, or all")
    cmp.add_argument("--lstm-init", choices=["chrono", "torch"], default="chrono",
                     help="the LSTM's init on adding and copy (torch = torch.nn's)")
    cmp.add_argument("--out", type=folder, default="runs/compare", help="report folder")

    engines = _engines()
    tr = sub.add_parser("train", help="train one model on one task, with checkpoints",
                        description="Train one model on one task; with --out, checkpoints and "
                                    "metrics go there and --resume continues a run.")
    _add_common(tr)
    tr.add_argument("--cell", choices=CELLS, default="gru", help="the recurrent cell")
    tr.add_argument("--out", type=folder, help="run folder: metrics.jsonl, checkpoint.json, weights")
    tr.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    tr.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N")
    tr.add_argument("--engine", choices=engines,
                    help=f"the module's engine: {', '.join(engines)} (default: auto; each cell "
                         "takes the ones it has, see the Engines page)")
    tr.add_argument("--init", choices=["torch", "orthogonal", "chrono"],
                    help="initialisation (default: torch.nn's U(-1/sqrt(H), 1/sqrt(H)); chrono "
                         "for an LSTM on the tasks with a known lag: adding, copy)")
    tr.add_argument("--reset-after", action=argparse.BooleanOptionalAction, default=None,
                    help="GRU form: reset after W_hh h (torch.nn's, the default) or before it "
                         "(Cho et al.'s, --no-reset-after)")
    for flag, key, kind, text in VARIANTS:
        if kind is None:  # --no-FLAG turns off what a task's defaults switch on
            tr.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=None,
                            help=text)
        else:
            tr.add_argument(flag, dest=key, type=kind, help=text)

    sm = sub.add_parser("sample", help="generate text from a char-LM checkpoint",
                        description="Generate text from the model of a `gatedrnn train --task "
                                    "charlm` run folder.")
    sm.add_argument("folder", help="run folder of `gatedrnn train --task charlm`")
    sm.add_argument("--chars", type=integer(0, 10**9), default=500, help="characters to generate")
    sm.add_argument("--temperature", type=POSITIVE_REAL, default=1.0,
                    help="softmax temperature: lower is more conservative")
    sm.add_argument("--prime", default="\n", help="text to start from (default: a newline)")
    sm.add_argument("--seed", type=COUNT, default=0, help="seed of the sampling")

    pl = sub.add_parser("plot", help="redraw the figures of a run or compare folder from its logs",
                        description="Redraw the figures of a run or compare folder from its logs.")
    pl.add_argument("folder", help="a `gatedrnn train --out` or `gatedrnn compare --out` folder")

    sub.add_parser("bench", help="speed against torch.nn and ONNX Runtime (`gatedrnn bench --help` "
                   "lists its options)", add_help=False)
    return parser


def _progress(args: argparse.Namespace) -> bool:
    # A bar only on a terminal: redirected to a file, its redraws would bury the messages.
    return not args.no_progress and sys.stderr.isatty()


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("hidden", "layers", "block", "steps", "lr", "batch", "decay_steps", "clip", "eval_every")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _cmd_train(args: argparse.Namespace) -> int:
    from .toolkit.compare import model_options, train_defaults
    from .toolkit.train import TrainConfig, train

    defaults = train_defaults(args.task, args.cell)
    settings = {**{k: v for k, v in defaults.items() if k != "task_args"}, **_settings(args)}
    settings.setdefault("eval_every", max(1, settings["steps"] // 20))
    task_args = {**defaults.get("task_args", {}), **_task_args(args.task, args)}
    keys = [key for _, key, _, _ in VARIANTS] + ["engine", "init", "reset_after"]
    options = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    # The task's options as compare uses them (chrono for the LSTM on adding and copy, both
    # directions on JapaneseVowels, ...); an option on the command line wins, and --init drops chrono.
    options = {**model_options(args.task, args.cell, task_args, {} if "init" in options else None,
                               settings.get("block")), **options}
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
