"""The main job's runs for the documentation: `gatedrnn compare`, its tables and its figures.

Usage: python benchmarks/compare_runs.py [--runs runs] [--out-dir docs/results] [--figures docs]

Runs ``gatedrnn compare --out RUNS/compare`` (a tanh RNN, an LSTM and a GRU on the adding problem,
the main job's defaults) and ``gatedrnn compare --cells mingru,minlstm,slstm --out
RUNS/compare-newer-cells``, one thread each, each with ``--overwrite`` (an earlier report there is
replaced, its figures included), and writes each report's table to
``<out-dir>/compare-adding.md`` and ``<out-dir>/compare-newer-cells.md`` under a line that names the
command, the date and the machine. The first run's figures (learning curves, gradient norms, the
gates of the LSTM and the GRU) are copied to ``<figures>/``, where the README and the results page
show them.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from pathlib import Path

from gatedrnn import cli
from gatedrnn.toolkit.bench_common import machine

# results file -> (report folder under --runs, the flags of `gatedrnn compare`)
RUNS = {"compare-adding": ("compare", []),
        "compare-newer-cells": ("compare-newer-cells", ["--cells", "mingru,minlstm,slstm"])}
FIGURES = ("learning_curves.png", "gradient_norms.png", "gates_lstm.png", "gates_gru.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs", help="parent of the report folders (default runs/)")
    parser.add_argument("--out-dir", default="docs/results")
    parser.add_argument("--figures", default="docs", help="where the first run's figures go")
    args = parser.parse_args(argv)
    for name, (run, flags) in RUNS.items():
        folder = Path(args.runs) / run
        # --overwrite: this script rewrites the published reports (and drops their stale figures)
        if cli.main(["compare", *flags, "--out", str(folder), "--overwrite", "--no-progress"]) != 0:
            return 1
        command = " ".join(["gatedrnn compare", *flags])
        text = (f"Written by `{command}` (its report's results.md, unchanged below) on "
                f"{datetime.date.today()}: one thread of {machine()}, seed 0.\n\n"
                + (folder / "results.md").read_text())
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        Path(args.out_dir, f"{name}.md").write_text(text)
        if name == "compare-adding":
            for figure in FIGURES:
                shutil.copyfile(folder / figure, Path(args.figures) / figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
