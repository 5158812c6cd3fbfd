"""Small calls against torch.nn, written to docs/results/small_calls.md.

Runs ``gatedrnn.toolkit.bench_small`` (the table of ratios and the fixed cost of a call, piece by
piece) at 2 threads and writes the page; the figures in it come from this script only.

Usage: python benchmarks/small_calls.py [--repeats N] [--calls N] [--out PATH] [--quick] [--plan]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform

import torch

from gatedrnn.engines import dispatch
from gatedrnn.toolkit import bench_small

OUT = os.path.join(os.path.dirname(__file__), "..", "docs", "results", "small_calls.md")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21, help="interleaved rounds (fastest counts)")
    ap.add_argument("--calls", type=int, default=2, help="least calls per round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--quick", action="store_true", help="a smoke test: two calls, one round")
    ap.add_argument("--plan", action="store_true",
                    help="auto follows this machine's tuned plan (default: the shipped rules alone)")
    a = ap.parse_args(argv)
    if not a.plan:  # the published page measures the shipped rules, whatever `gatedrnn tune` wrote
        os.environ["GATEDRNN_PLAN"] = "off"
    dispatch.reload()
    torch.set_num_threads(a.threads)
    table = bench_small.rows(1 if a.quick else a.repeats, 1 if a.quick else a.calls, a.quick)
    profile = bench_small.profile_rows(1 if a.quick else a.repeats, 5 if a.quick else 300)
    text = "\n".join([
        "# Small calls against torch.nn", "",
        f"Written by `python benchmarks/small_calls.py` on {datetime.date.today()} "
        f"({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{a.threads} threads, float32, `engine=\"auto\"` following {dispatch.rules_in_effect()}, "
        "torch.nn's weights). Each figure is the "
        f"fastest of {a.repeats} interleaved rounds of at least {a.calls} calls; the ratio is "
        "torch.nn's time over gatedrnn's (> 1: gatedrnn is faster). The machine is shared: "
        "the ratios, measured in one process with the contenders interleaved, are what to read.",
        "", "## The calls", "", *table, "",
        "## The fixed cost of a small call, piece by piece", "",
        "Each piece timed alone (1 thread for the kernels, this process's threads otherwise); "
        "the Engines page (Cost of a small call) says what each path pays.", "",
        *profile, ""])
    print(text)
    if not a.quick:
        with open(a.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
