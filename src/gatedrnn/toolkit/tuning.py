"""``gatedrnn tune``: write, show and clear this machine's tuned plan (``gatedrnn.tune``).

    gatedrnn tune                      time the engines over the default grid, save the plan
    gatedrnn tune --show               where the plan is, whether this process would use it, its entries
    gatedrnn tune --show --cell lstm --shape 100,32,128,128 --mode training
                                       which engine auto takes for that call, and which row says so
    gatedrnn tune --clear              remove the plan

Example:
    >>> from gatedrnn.toolkit import tuning
    >>> "plan" in tuning.status()
    True
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from ..engines import dispatch, plan
from ..engines.rows import MACHINES, Row
from .arguments import POSITIVE
from .bench_common import one_shape


def status() -> str:
    """Where the plan is and whether this process uses it (and why not)."""
    file = plan.path()
    head = (f"CPU: {dispatch.CPU.describe()} (flags key {dispatch.CPU.key()}); "
            f"{torch.get_num_threads()} torch thread(s); torch {torch.__version__}")
    if file is None:
        return head + f"\nplan: off ({plan.ENV}=off): engine='auto' follows the shipped rules"
    if not file.exists():
        return head + f"\nplan: none at {file}: engine='auto' follows the shipped rules"
    found = plan.read(file)
    if found is None:
        return head + f"\nplan: {file} cannot be read: ignored"
    used = found.key == plan.machine_key(dispatch.TABLE, dispatch.CPU)
    why = "used" if used else "NOT used: measured on another machine or build (run `gatedrnn tune`)"
    return head + f"\nplan: {file}, {len(found.entries)} entries, {why}"


def _borders(r: Row) -> str:
    work = f"work {r.min_work}-{r.max_work if r.max_work is not None else 'inf'}"
    batch = f"batch {r.min_batch}-{r.max_batch if r.max_batch is not None else 'inf'}"
    hidden = ("" if not r.min_hidden and r.max_hidden is None else
              f"hidden {r.min_hidden}-{r.max_hidden if r.max_hidden is not None else 'inf'}, ")
    form = "plain" if r.simple else "proj" if r.proj else "packed"
    mode = "training" if r.training else "inference"
    return (f"{r.kind} {r.dtype} {form} {mode}, {batch}, {hidden}{work}, {r.min_threads} "
            f"thread(s) -> {r.engine}")


def entries() -> list[str]:
    """One line per entry of the plan file, with what was measured."""
    file = plan.path()
    found = plan.read(file) if file is not None and file.exists() else None
    if found is None:
        return []
    return [f"{i}: {_borders(r)}  [{note}]" for i, (r, note) in enumerate(found.entries)]


def explain_call(cell: str, shape: tuple[int, int, int, int], dtype: str, training: bool) -> str:
    """Build the module, run one call of that shape (T, B, I, H; a cell's T is ignored) and say
    which engine ran and which plan entry or table row chose it."""
    import gatedrnn

    T, B, I, H = shape
    cls = {c.lower(): c for c in ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell")}[cell]
    model = getattr(gatedrnn, cls)(I, H, dtype=getattr(torch, dtype))
    x = torch.randn((B, I) if cls.endswith("Cell") else (T, B, I)).to(getattr(torch, dtype))
    with torch.set_grad_enabled(training):
        why = dispatch.explain(model, x)
    return str(why)


def run(repeats: int = 3, progress: bool = True) -> str:
    """Tune over the default grid with a progress bar on stderr; returns the summary."""
    from tqdm import tqdm

    bar = tqdm(total=1, file=sys.stderr, dynamic_ncols=True, disable=not progress, desc="tune")

    def report(done: int, total: int, what: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(what[:60], refresh=True)

    start = time.perf_counter()
    try:
        result = gatedrnn_tune(repeats=repeats, progress=report)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    engines: dict[str, int] = {}
    for r, _ in result.entries:
        engines[r.engine] = engines.get(r.engine, 0) + 1
    return (f"wrote {result.path}: {len(result.entries)} entries "
            f"({', '.join(f'{n} {e}' for e, n in sorted(engines.items()))}) in {seconds:.0f} s "
            f"at {torch.get_num_threads()} thread(s); measured on: {MACHINES['tuned']}")


def gatedrnn_tune(**kwargs: Any) -> plan.Plan:
    import gatedrnn

    return gatedrnn.tune(**kwargs)


def clear() -> str:
    file = plan.path() or plan.default_path()
    return f"removed {file}" if plan.clear(file) else f"no plan at {file}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gatedrnn tune", description="Time the engines over a grid of shapes, dtypes and "
        "modes on this machine and save a plan that engine='auto' follows (gatedrnn.tune; "
        f"{plan.ENV} names the file, {plan.ENV}=off ignores it).")
    p.add_argument("--show", action="store_true",
                   help="say where the plan is, whether it is used, its entries; with --shape, "
                        "which engine auto takes for that call and why")
    p.add_argument("--clear", action="store_true", help="remove the plan")
    p.add_argument("--cell", choices=["lstm", "gru", "rnn", "lstmcell", "grucell", "rnncell"],
                   default="lstm", help="with --show --shape: the module")
    p.add_argument("--shape", type=one_shape, help="with --show: the call's T,B,I,H")
    p.add_argument("--dtype", choices=["float32", "float64", "bfloat16"], default="float32",
                   help="with --show --shape: the call's dtype")
    p.add_argument("--mode", choices=["training", "inference"], default="inference",
                   help="with --show --shape: a call autograd records (training) or not")
    p.add_argument("--repeats", type=POSITIVE, default=3, help="interleaved rounds per point")
    p.add_argument("--threads", type=POSITIVE, default=None,
                   help="torch threads to tune (or show) for (default: torch's, as a program gets "
                        "them); a plan's entries apply at the thread count they were measured at")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def main(argv: list[str]) -> int:
    """``gatedrnn tune ...``: 0 on success, 2 on bad arguments, 1 on an error (one line)."""
    try:
        a = parser().parse_args(argv)
    except SystemExit as done:  # --help (0) or an argument error (2, already printed)
        return int(done.code or 0)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        if a.clear:
            print(clear())
        elif a.show:
            print(status())
            print(explain_call(a.cell, a.shape, a.dtype, a.mode == "training") if a.shape
                  else "\n".join(entries()))
        else:  # a bar only on a terminal: redirected to a file, its redraws would bury the rest
            print(run(a.repeats, not a.no_progress and sys.stderr.isatty()))
    except (OSError, ValueError) as err:
        print(f"gatedrnn tune: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    return 0
