"""Measure every engine against torch.nn and check the rule of ``engine="auto"`` (gatedrnn.engines.dispatch).

For each configuration (cell, shape T,B,I,H, dtype, inference or training, packed or not, proj_size)
the engines reference, fused and native run interleaved in one process with torch.nn as the peer,
each round in a shuffled order; the fastest of ``--repeats`` rounds counts (a call under ~2 ms is
timed up to ten times a round). The markdown table gives the milliseconds, the fastest
gatedrnn engine, the engine ``auto`` picked for that call (``module.last_engine``), and "<<" where
the two disagree by more than ``--slack`` (the pick slower than the fastest by that fraction).
Move the rows of ``gatedrnn.engines.dispatch.TABLE`` where the flags say so, on a quiet machine.

Usage: python benchmarks/dispatch.py [--quick] [--repeats N] [--threads N] [--slack F]
                                     [--cells lstm,gru,rnn] [--dtypes float32,float64,bfloat16]
                                     [--shapes T,B,I,H;...] [--small] [--calls N] [--out FILE]
                                     [--plan]

``auto`` follows the shipped rules alone (GATEDRNN_PLAN=off) unless ``--plan`` asks for this
machine's tuned plan (``gatedrnn tune``); the report says which.

``--out`` also writes the table, a summary (geomean and worst of torch.nn's time over the time of
the engine ``auto`` picked, and over the fused engine's, per cell, dtype, mode and input kind), the
command and the machine to a Markdown file, which the results page includes.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.utils.rnn import pack_padded_sequence

import gatedrnn
from gatedrnn.engines import dispatch
from gatedrnn.toolkit.bench_common import machine

SHAPES = [(200, 1, 64, 128), (100, 16, 128, 128), (100, 32, 128, 128), (100, 64, 256, 256),
          (50, 256, 128, 256)]
QUICK_SHAPES = [(20, 1, 16, 32), (20, 32, 32, 32)]
# Small calls, where the fixed cost per call decides; the work T·B·H is what
# dispatch.Row.max_work bounds. Timed as loops of calls (see --calls), float32, not packed.
SMALL_SHAPES = [(1, 1, 16, 32), (5, 4, 32, 64), (20, 8, 64, 128), (1, 8, 64, 128),
                (50, 1, 64, 128), (20, 16, 64, 128), (50, 8, 64, 128)]
ENGINES = ("reference", "fused", "native")


def _modules(cell: str, I: int, H: int, dtype: torch.dtype, proj: int) -> dict:  # noqa: E741
    """One module per engine plus torch.nn's, all with the same weights."""
    cls = {"lstm": gatedrnn.LSTM, "gru": gatedrnn.GRU, "rnn": gatedrnn.RNN}[cell]
    kw = {"proj_size": proj} if proj else {}
    torch.manual_seed(0)
    auto = cls(I, H, dtype=dtype, **kw)
    out = {"auto": auto}
    for engine in ENGINES:
        out[engine] = cls(I, H, dtype=dtype, engine=engine, **kw)
        out[engine].load_state_dict(auto.state_dict())
    out["torch.nn"] = getattr(torch.nn, cell.upper())(I, H, dtype=dtype, **kw)
    out["torch.nn"].load_state_dict(auto.state_dict())
    return out


def _call(module: torch.nn.Module, x, training: bool) -> Callable[[], None]:
    def run() -> None:
        if training:
            out = module(x)[0]
            (out.data if hasattr(out, "batch_sizes") else out).float().sum().backward()
        else:
            with torch.no_grad():
                module(x)
    return run


CALLS = 1  # calls per timing (--calls); a timing is their mean


def _time(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    for _ in range(CALLS):
        fn()
    return (time.perf_counter() - t0) * 1e3 / CALLS


def measure(cell: str, shape: tuple[int, int, int, int], dtype: torch.dtype, training: bool,
            packed: bool, proj: int, repeats: int) -> dict:
    T, B, I, H = shape  # noqa: E741
    mods = _modules(cell, I, H, dtype, proj)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, generator=g).to(dtype)
    if packed:
        lengths = torch.randint(max(1, T // 2), T + 1, (B,), generator=g)
        lengths[0] = T
        x = pack_padded_sequence(x, lengths, enforce_sorted=False)
    calls = {name: _call(m, x, training) for name, m in mods.items()}
    best = {name: float("inf") for name in calls}
    failed = set()
    loops = dict.fromkeys(calls, 1)
    names = list(calls)
    order = random.Random(0)
    for r in range(repeats + 1):  # the first round warms up (numba compiles, oneDNN primitives)
        # a shuffled order each round (seeded): a fixed one, or a rotation of it, keeps whoever
        # follows torch's op (its OpenMP workers spin for ~10 ms) in that place every round
        order.shuffle(names)
        for name in names:
            if name in failed:
                continue
            try:
                if not r:
                    calls[name]()  # (numba compiles at the first call: not timed)
                t = min(_time(calls[name]) for _ in range(loops[name]))
            except (RuntimeError, ValueError):
                failed.add(name)
                continue
            if r:
                best[name] = min(best[name], t)
            else:  # a call under ~2 ms is timed several times a round: one timing is noise
                loops[name] = max(1, min(10, int(2.0 / max(t, 1e-3))))
    return {"best": best, "failed": failed, "picked": mods["auto"].last_engine}


def rows(cells: list[str], shapes: list, dtypes: list[torch.dtype], repeats: int,
         plain: bool = False):
    for cell, shape, dtype, training, packed, proj in itertools.product(
            cells, shapes, dtypes, (False, True), (False, True), (False, True)):
        if (proj and cell != "lstm") or (plain and (packed or proj)):
            continue
        yield (cell, shape, dtype, training, packed, shape[3] // 2 if proj else 0), repeats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two small shapes, float32, two repeats")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slack", type=float, default=0.1)
    ap.add_argument("--cells", default="lstm,gru,rnn")
    ap.add_argument("--dtypes", default="float32,float64,bfloat16")
    ap.add_argument("--shapes", default=None, help="T,B,I,H;T,B,I,H;... (default: the grid above)")
    ap.add_argument("--small", action="store_true",
                    help="the small-call grid (SMALL_SHAPES, float32, neither packed nor proj_size)")
    ap.add_argument("--calls", type=int, default=None,
                    help="calls per timing (default 1; 50 with --small)")
    ap.add_argument("--out", default=None, help="also write the tables and the command to this file")
    ap.add_argument("--plan", action="store_true",
                    help="auto follows this machine's tuned plan (`gatedrnn tune`); by default the "
                         "shipped rules alone, as in the published tables")
    args = ap.parse_args(argv)
    rules = use_plan(args.plan)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    global CALLS
    CALLS = args.calls or (50 if args.small else 1)
    shapes, repeats = (QUICK_SHAPES, 2) if args.quick else (SHAPES, args.repeats)
    if args.small:
        shapes, args.dtypes = SMALL_SHAPES, "float32"
    if args.shapes:
        shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes.split(";")]
    dtypes = [getattr(torch, d) for d in ("float32",) if args.quick] or \
        [getattr(torch, d) for d in args.dtypes.split(",")]
    lines = ["| cell | T, B, I, H | dtype | mode | packed | proj | torch.nn ms | reference ms | "
             "fused ms | native ms | fastest | auto picked | |",
             "|---|---|---|---|---|---|---:|---:|---:|---:|---|---|---|"]
    print("\n".join(lines))
    disagreements, ratios = 0, {}
    for (cell, shape, dtype, training, packed, proj), reps in rows(
            args.cells.split(","), shapes, dtypes, repeats, args.small):
        r = measure(cell, shape, dtype, training, packed, proj, reps)
        best = r["best"]
        ours = {e: best[e] for e in ENGINES if e not in r["failed"]}
        fastest = min(ours, key=ours.get)
        picked = r["picked"] or "?"
        engine_of_pick = "fused" if picked.startswith("fused") else picked
        flag = ""
        if ours.get(engine_of_pick, float("inf")) > (1 + args.slack) * ours[fastest]:
            flag, disagreements = "<<", disagreements + 1
        ms = " | ".join("n/a" if e in r["failed"] else f"{best[e]:.3f}"
                        for e in ("torch.nn",) + ENGINES)
        lines.append(f"| {cell} | {', '.join(map(str, shape))} | {str(dtype)[6:]} | "
                     f"{'training' if training else 'inference'} | {packed} | {proj} | {ms} | {fastest} | "
                     f"{picked} | {flag} |")
        print(lines[-1], flush=True)
        kind = "+".join(k for k, on in (("packed", packed), ("proj", proj)) if on) or "plain"
        key = (cell, str(dtype)[6:], "training" if training else "inference", kind)
        if engine_of_pick in ours and "fused" in ours:
            ratios.setdefault(key, []).append((best["torch.nn"] / ours[engine_of_pick],
                                               best["torch.nn"] / ours["fused"], shape))
    lines.append(f"\n{disagreements} row(s) where auto's pick is more than {args.slack:.0%} slower "
                 "than the fastest engine\n")
    lines += summary(ratios)
    print("\n".join(lines[-len(ratios) - 4:]))
    if args.out:
        command = " ".join(["python benchmarks/dispatch.py", *(argv if argv is not None else sys.argv[1:])])
        lines.append(f"\n- Command: `{command}`; {(time.perf_counter() - start) / 60:.0f} min on "
                     f"{args.threads} threads of {machine()}; auto followed {rules}.")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


def use_plan(on: bool) -> str:
    """Follow the tuned plan (``on``) or the shipped rules alone (GATEDRNN_PLAN=off); returns
    what auto follows, for the report."""
    if not on:
        os.environ["GATEDRNN_PLAN"] = "off"
    dispatch.reload()
    return dispatch.rules_in_effect()


def summary(ratios: dict) -> list[str]:
    """Geomean and worst of torch.nn / auto's engine and torch.nn / fused, per (cell, dtype, mode,
    input kind), worst with its shape."""
    out = ["| cell | dtype | mode | input | shapes | auto geomean | auto worst | fused geomean "
           "| fused worst |",
           "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for (cell, dtype, mode, kind), rs in ratios.items():
        cols = []
        for i in (0, 1):
            geo = math.exp(sum(math.log(r[i]) for r in rs) / len(rs))
            worst = min(rs, key=lambda r: r[i])  # noqa: B023
            cols += [f"{geo:.2f}", f"{worst[i]:.2f} ({', '.join(map(str, worst[2]))})"]
        out.append(f"| {cell.upper()} | {dtype} | {mode} | {kind} | {len(rs)} | {' | '.join(cols)} |")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
