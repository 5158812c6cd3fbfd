"""The ``gatedrnn`` command: compare, train, sample, plot, bench, quantize, tune. A leaf: nothing imports it.

    gatedrnn compare                      tanh RNN vs LSTM vs GRU on the adding problem (the main job)
    gatedrnn train --task adding --cell gru --out runs/gru [--resume | --overwrite]
    gatedrnn sample runs/charlm --temperature 0.8
    gatedrnn plot runs/compare
    gatedrnn bench ...                    speed against torch.nn (gatedrnn.toolkit.bench)
    gatedrnn quantize runs/gru            the run's model in int8, test metrics before and after
    gatedrnn tune [--show | --clear]      time the engines here; engine="auto" follows the plan

Under ``torchrun`` ``gatedrnn train`` runs data-parallel (``python -m gatedrnn`` is this command).

Arguments are checked by their argparse types (sizes positive, probabilities in [0, 1), numbers
finite, devices present, files readable, run folders creatable); every expected failure, a bad
argument or a bad file, a full disk or a non-finite loss, is one line on stderr and exit status 2
(arguments) or 1 (the rest), never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .toolkit import arguments as arg
from .toolkit.arguments import Parser

CELLS = ("rnn", "lstm", "gru", "mingru", "minlstm", "slstm")
COMPARE_OUT = "runs/compare"  # `gatedrnn compare`'s report folder when no --out is given


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
    ("--recurrent-dropout", "recurrent_dropout", arg.PROBABILITY,
     "dropout on h inside the recurrence, one mask per sequence (LSTM, GRU)"),
    ("--zoneout", "zoneout", arg.PROBABILITY, "probability of keeping each unit of h (LSTM, GRU)"),
    ("--zoneout-cell", "zoneout_cell", arg.PROBABILITY, "zoneout's probability for c (LSTM)"),
    ("--weight-drop", "weight_drop", arg.PROBABILITY, "DropConnect on W_hh per forward pass (LSTM, GRU)"),
    ("--forget-bias", "forget_bias", arg.real(), "initial total bias of the forget (GRU: update) gate"),
    ("--chrono-max-len", "chrono_max_len", arg.POSITIVE,
     "longest dependency to expect, for --init chrono"),
    ("--dropout", "dropout", arg.PROBABILITY, "dropout between stacked layers (needs --layers > 1)"),
    ("--bidirectional", "bidirectional", None, "a second direction over the reversed sequence"),
    ("--proj-size", "proj_size", arg.COUNT, "project h to this size (LSTM; 0 = no projection)"),
]
# Task options, as (flag, keyword, type, help): passed to a task only if its constructor takes them.
TASK_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--length", "length", arg.POSITIVE, "sequence length (adding, copy, charlm)"),
    ("--text", "text", arg.readable_file, "text file to model (charlm)"),
    ("--data", "data", str, "data folder of a downloaded data set (uea, sunspots, ...)"),
    ("--problem", "problem", str, "which UEA problem (uea)"),
    ("--window", "window", arg.POSITIVE, "input window in steps (sunspots)"),
]


def _engines() -> tuple[str, ...]:
    """Every engine a float module takes: "auto", each engine a cell kind declares
    (``gatedrnn.equations.kinds``) but the int8 ones, which only ``gatedrnn.quantize``'s modules
    run, and torch's own ("native"); a newly declared one appears here."""
    from .equations import kinds

    return ("auto", *(e for e in kinds.all_engines() if e not in kinds.INT8_ENGINES), "native")


def _task_defaults() -> str:
    """The per-task defaults, printed under ``gatedrnn train --help`` and ``gatedrnn compare --help``."""
    from .toolkit.defaults import defaults_help

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
    p.add_argument("--hidden", type=arg.POSITIVE, help="hidden units (default: per task, below)")
    p.add_argument("--layers", type=arg.POSITIVE, default=1, help="stacked recurrent layers")
    p.add_argument("--block", choices=["plain", "conv"],
                   help="stack --layers residual blocks (pre-norm, cell, residual, gated "
                        "feed-forward; conv: a causal depthwise convolution first), as the minGRU "
                        "and xLSTM papers do (gatedrnn.toolkit.BlockStack); default: the bare cell")
    p.add_argument("--steps", type=arg.POSITIVE, help="optimizer steps (default: per task, below)")
    # Above 1e30, Adam's bias-corrected step overflows float32 inside torch (a RuntimeError).
    p.add_argument("--lr", type=arg.real(0, 1e30, open_low=True),
                   help="Adam's learning rate (default: per task, below)")
    p.add_argument("--batch", type=arg.POSITIVE, help="sequences per step, per process under torchrun "
                   "(default: per task, below)")
    p.add_argument("--decay-steps", type=arg.COUNT,
                   help="the learning rate falls linearly to 0 over the last N steps "
                        "(default: per task, below; 0 keeps it constant)")
    p.add_argument("--seed", type=arg.COUNT, default=0, help="seed of the weights and the data")
    p.add_argument("--clip", type=arg.POSITIVE_REAL, default=1.0, help="gradient norm clipping")
    p.add_argument("--eval-every", type=arg.POSITIVE,
                   help="steps between evaluations and checkpoints (default: --steps / 20)")
    p.add_argument("--select", action="store_true",
                   help="score the validation set at each evaluation too; the best evaluation's "
                        "weights are kept (best-STEP.safetensors) and reported")
    p.add_argument("--threads", type=arg.integer(1, 4096),
                   help="torch threads per process (default: 1, the fastest for the toolkit's "
                        "small models on a shared machine)")
    p.add_argument("--overwrite", action="store_true", help="replace the run (compare: the report) in "
                   "--out, its files deleted first; else an --out holding one is refused unless resumed")
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
    cmp.add_argument("--out", type=arg.folder, help=f"report folder (default: {COMPARE_OUT}, or the first "
                     f"of {COMPARE_OUT}-2, -3, ... that holds no report)")

    engines = _engines()
    tr = sub.add_parser("train", help="train one model on one task, with checkpoints",
                        description="Train one model on one task; with --out, checkpoints and "
                                    "metrics go there and --resume continues a run.")
    _add_common(tr)
    tr.add_argument("--cell", choices=CELLS, default="gru", help="the recurrent cell")
    tr.add_argument("--out", type=arg.folder, help="run folder: metrics.jsonl, checkpoint.json, weights")
    tr.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    tr.add_argument("--device", type=arg.device, default="cpu", help="cpu, cuda or cuda:N")
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
    sm.add_argument("--chars", type=arg.integer(0, 10**9), default=500, help="characters to generate")
    sm.add_argument("--temperature", type=arg.POSITIVE_REAL, default=1.0,
                    help="softmax temperature: lower is more conservative")
    sm.add_argument("--prime", default="\n", help="text to start from (default: a newline)")
    sm.add_argument("--seed", type=arg.COUNT, default=0, help="seed of the sampling")

    pl = sub.add_parser("plot", help="redraw the figures of a run or compare folder from its logs",
                        description="Redraw the figures of a run or compare folder from its logs.")
    pl.add_argument("folder", help="a `gatedrnn train --out` or `gatedrnn compare --out` folder")

    sub.add_parser("bench", help="speed against torch.nn and ONNX Runtime (`gatedrnn bench --help` "
                   "lists its options)", add_help=False)

    sub.add_parser("tune", help="time the engines here for engine='auto' (see --help)", add_help=False)

    qu = sub.add_parser("quantize", help="a trained run's model in int8, test metrics before and after",
                        description="Quantize the model of a `gatedrnn train` run folder to int8 "
                                    "(gatedrnn.quantize), score it on the task's test set before "
                                    "and after, and save it.")
    qu.add_argument("folder", help="a `gatedrnn train --out` run folder")
    qu.add_argument("--out", help="where the int8 model goes (default: FOLDER/model-int8.safetensors)")
    qu.add_argument("--linear", action="store_true",
                    help="quantize the nn.Linear layers (output, projections) too")
    qu.add_argument("--weights", choices=("best", "last"), default="best",
                    help="best: the best evaluation's weights where the run kept them (trained "
                         "with selection on a validation set), else the last step's (default); "
                         "last: the last step's")
    return parser


def _progress(args: argparse.Namespace) -> bool:
    # A bar only on a terminal: redirected to a file, its redraws would bury the messages.
    return not args.no_progress and sys.stderr.isatty()


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("hidden", "layers", "block", "steps", "lr", "batch", "decay_steps", "clip", "eval_every")
    settings = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    return {**settings, "select": True} if getattr(args, "select", False) else settings


def _cmd_train(args: argparse.Namespace) -> int:
    from .toolkit.checkpoint import check_run_folder
    from .toolkit.defaults import options_with, task_args_with
    from .toolkit.train import TrainConfig, train

    # A flag not given stays None, the task's default (toolkit.defaults, as for train() from
    # Python); task arguments and module options given go over the task's, --init drops chrono.
    given_args = _task_args(args.task, args)
    task_args = task_args_with(args.task, given_args)
    keys = [key for _, key, _, _ in VARIANTS] + ["engine", "init", "reset_after"]
    given = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    options = options_with(args.task, args.cell, task_args, args.block, given) if given else None
    cfg = TrainConfig(task=args.task, task_args=task_args if given_args else None, cell=args.cell,
                      seed=args.seed, out=args.out, resume=args.resume, overwrite=args.overwrite,
                      progress=_progress(args),
                      device=args.device, options=options, **_settings(args))
    if args.out is not None:
        check_run_folder(args.out, resume=args.resume, overwrite=args.overwrite, cli=True)
        _writable(args.out)
    result = train(cfg)
    if result.history and int(os.environ.get("RANK", "0")) == 0:
        final = {k: round(v, 6) if isinstance(v, float) else v for k, v in result.final.items()}
        print(f"{args.cell} on {args.task}: {result.parameters:,} parameters, "
              f"{result.seconds:.1f} s training; final {final}")
        if cfg.select:
            best = {k: round(v, 6) if isinstance(v, float) else v for k, v in result.selected.items()}
            print(f"best on the validation set: {best}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .toolkit.checkpoint import check_run_folder, unused_folder
    from .toolkit.compare import run_compare
    from .toolkit.defaults import task_args_with

    out = args.out
    if out is None:  # the main job never replaces an earlier report unasked: it numbers the next
        out = str(COMPARE_OUT if args.overwrite else unused_folder(COMPARE_OUT, report=True))
        if out != COMPARE_OUT:
            print(f"{COMPARE_OUT} holds an earlier report: writing to {out} (--overwrite replaces it)",
                  file=sys.stderr)
    if out:  # --out "" writes no report
        check_run_folder(out, overwrite=args.overwrite, report=True, cli=True)
        _writable(out)
    task_args = _task_args(args.task, args)
    kwargs = _settings(args)
    if task_args:
        kwargs["task_args"] = task_args_with(args.task, task_args)
    print(run_compare(task=args.task, cells=args.cells, out=out or None, seed=args.seed,
                      progress=_progress(args), overwrite=args.overwrite,
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


def _cmd_quantize(args: argparse.Namespace) -> int:
    from .toolkit.quantize import describe, quantize_run

    print(describe(quantize_run(args.folder, args.out, args.linear, args.weights)))
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
    if argv[:1] in (["bench"], ["tune"]):
        # Imported here so that a missing or broken bench module never breaks the other commands.
        from .toolkit import bench, tuning

        try:
            return int({"bench": bench, "tune": tuning}[argv[0]].main(argv[1:]) or 0)
        except SystemExit as done:  # --help (0) or an argument error (2, already printed)
            return int(done.code or 0)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or an argument error (2, already printed)
        return int(done.code or 0)
    from .toolkit.checkpoint import CheckpointError
    from .toolkit.train import NonFiniteLossError

    _threads(getattr(args, "threads", None))
    commands = {"train": _cmd_train, "compare": _cmd_compare, "sample": _cmd_sample, "plot": _cmd_plot,
                "quantize": _cmd_quantize}
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
