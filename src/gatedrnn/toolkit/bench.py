"""Speed benchmark: gatedrnn's engines against torch.nn and ONNX Runtime on the CPU (``gatedrnn bench``).

For each cell and shape (T, B, input, hidden), in float32 with ``torch.set_num_threads(n)`` for
each n of ``--threads``, the contenders run on the same input:

- inference: a no_grad forward; training: forward + backward to the input and every weight.
- columns: torch.nn; gatedrnn with engine "auto" (and the engine it ran, ``module.last_engine``),
  "fused", "native" (torch's own op on gatedrnn's parameters; LSTM and GRU) and "scan" (the
  log-space scan; minGRU and minLSTM); for inference, ONNX Runtime on the graph gatedrnn exports
  (``toolkit.bench_ort``: ORT threads = torch threads, allow_spinning "0"; LSTM and GRU, which
  export as ONNX's own operators, while the newer cells' graph is their loop unrolled for one
  length and is not timed; needs onnxruntime, the column is "-" without it). Each is shown as
  "ms (ratio)", ratio = torch.nn time / that time (> 1: faster than torch.nn).
- LSTM and GRU share torch.nn's weights. The newer cells have no torch.nn counterpart; their
  peer is the torch.nn cell they descend from at the same (I, H): GRU for minGRU, LSTM for
  minLSTM and sLSTM (named in the "peer" column).
- timing: the contenders run interleaved (torch.nn, auto, fused, ..., torch.nn, auto, ...) in one
  process, and each one's fastest of ``--repeats`` runs counts (not the median): the machine is
  shared, its load drifts, and noise only ever adds time.
- GFLOP/s: the GEMM flops of the layer (2·T·B·G·H·(I + H), three times that for training; no H
  term for minGRU and minLSTM, which have no recurrent product) over the fused engine's time, next
  to the rate torch.mm reaches on the per-step GEMM alone (B × H · H × G·H), which bounds any
  implementation of the recurrence.
- peak memory: the growth of the resident set (VmHWM − VmRSS before the call, after resetting
  the high-water mark) during one call, torch.nn and the fused engine, each in a fresh subprocess.
  It counts everything the process touches (torch tensors, oneDNN scratch, numba buffers) but is
  rounded to pages and includes allocator slack.
- streaming: one step at B = 1 with the state carried, gatedrnn's cells against torch.nn's.
- variants (training at (100, 64, 256, 256)): each LSTM and GRU option's cost against the plain
  fused run and against the reference engine (a Python loop over ``gatedrnn.equations.cells``).
- targets, heads: the speed targets of the newer cells and for head-wise recurrence
  (``toolkit.bench_cells``).
- small: the small calls (modules at (T, B) = (1, 1), (5, 4), (20, 8), cells at B = 1, 2,
  8; training and inference) against torch.nn (``toolkit.bench_small``).

Example:
    >>> from gatedrnn.toolkit import bench
    >>> bench.main(["--quick", "--shapes", "3,2,4,8", "--cells", "lstm", "--modes", "inference",
    ...             "--no-memory"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..modules.patch import TORCH_CLASSES
from . import bench_cells, bench_common, bench_ort, bench_small
from .bench_common import (
    CELLS,
    ENGINES,
    build,
    cell_text,
    fastest,
    flops,
    geomean,
    mm_rate,
    peer,
    shape_arg,
    step,
)

SHAPES = [(200, 1, 64, 128), (100, 32, 128, 128), (100, 64, 256, 256), (100, 64, 512, 512),
          (50, 256, 128, 256)]
MODES = ("inference", "training", "streaming", "variants", "targets", "heads", "small")
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "lstm": {"peephole": {"peephole": True}, "layer_norm": {"layer_norm": True},
             "recurrent_dropout": {"recurrent_dropout": 0.25},
             "zoneout": {"zoneout": 0.1, "zoneout_cell": 0.1}, "weight_drop": {"weight_drop": 0.3}},
    "gru": {"reset_after=False": {"reset_after": False}, "layer_norm": {"layer_norm": True},
            "recurrent_dropout": {"recurrent_dropout": 0.25}, "zoneout": {"zoneout": 0.1},
            "weight_drop": {"weight_drop": 0.3}},
}
COLUMNS = ("auto", "fused", "native", "scan", "onnxruntime")
# The cells ONNX has an operator for. The newer cells export as their reference loop unrolled for
# one length: tens of seconds to export at T = 200, and not the deployment path compared here.
ORT_CELLS = ("lstm", "gru")


def _peak_bytes(impl: str, cell: str, shape: tuple[int, ...], mode: str, threads: int) -> float:
    """Peak resident growth (bytes) of one call, in a fresh process (see the module docstring)."""
    args = [sys.executable, "-m", "gatedrnn.toolkit.bench", "--_probe",
            ",".join([impl, cell, mode, str(threads), *map(str, shape)])]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return math.nan


def _probe(spec: str) -> int:
    impl, cell, mode, threads, *dims = spec.split(",")
    T, B, I, H = map(int, dims)
    torch.set_num_threads(int(threads))
    model = peer(cell, I, H) if impl == "torch" else build(cell, I, H)
    step(model, torch.randn(2, 1, I, requires_grad=True), mode)()  # load code, not the shape
    fn = step(model, torch.randn(T, B, I, requires_grad=True), mode)

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = status("VmRSS:")
    fn()
    print(status("VmHWM:") - before)
    return 0


def _fmt_mb(b: float) -> str:
    return "n/a" if not math.isfinite(b) else f"{b / 2**20:.1f}"


def measure(cell: str, shape: tuple[int, int, int, int], mode: str, repeats: int,
            threads: int) -> tuple[dict[str, float], str]:
    """Seconds per column ("torch.nn", the cell's engines, "onnxruntime" for inference; a column
    that does not apply is absent) and the engine auto ran ("-" if the module does not say)."""
    T, B, I, H = shape
    torch.manual_seed(0)
    ours = {e: build(cell, I, H, e) for e in ENGINES[cell]}
    for m in ours.values():
        m.load_state_dict(ours["fused"].state_dict())
    nn = peer(cell, I, H, like=ours["fused"])
    x = torch.randn(T, B, I, requires_grad=mode == "training")
    fns: dict[str, Callable[[], object]] = {"torch.nn": step(nn, x, mode)}
    fns.update({e: step(m, x, mode) for e, m in ours.items()})
    if mode == "inference" and cell in ORT_CELLS and bench_ort.available():
        fns["onnxruntime"] = bench_ort.runner(ours["fused"].eval(), x, threads)
    best = fastest(fns, repeats)
    return best, str(getattr(ours["auto"], "last_engine", None) or "-")


def _shape_rows(cells: list[str], modes: list[str], shapes: list[tuple[int, int, int, int]],
                repeats: int, memory: bool, threads: int) -> list[str]:
    rows = ["| cell | peer | mode | T, B, I, H | torch.nn ms | auto ms (ratio) | auto ran | "
            "fused ms (ratio) | native ms (ratio) | scan ms (ratio) | ONNX Runtime ms (ratio) | "
            "fused GFLOP/s | torch.mm step GFLOP/s | peak MB torch.nn | peak MB fused |",
            "|---|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    summary = []
    for cell in cells:
        name, peer_name, G, recurrent = CELLS[cell]
        for mode in modes:
            ratios: dict[str, list[float]] = {c: [] for c in (*COLUMNS, "ORT/auto")}
            for shape in shapes:
                T, B, I, H = shape
                t, ran = measure(cell, shape, mode, repeats, threads)
                base = t["torch.nn"]
                for c in COLUMNS:
                    if c in t:
                        ratios[c].append(base / t[c])
                if "onnxruntime" in t:
                    ratios["ORT/auto"].append(t["onnxruntime"] / t["auto"])
                rate = flops(cell, T, B, I, H, mode) / t["fused"] / 1e9
                mm = f"{mm_rate(B, H, G, 3 if repeats < 5 else 7):.1f}" if recurrent else "-"
                mem = ((_peak_bytes("torch", cell, shape, mode, threads),
                        _peak_bytes("ours", cell, shape, mode, threads))
                       if memory else (math.nan, math.nan))
                cols = " | ".join(cell_text(t[c], base) if c in t else "-" for c in COLUMNS[1:])
                rows.append(f"| {name} | torch.nn.{peer_name} | {mode} | {T}, {B}, {I}, {H} | "
                            f"{base * 1e3:.2f} | {cell_text(t['auto'], base)} | {ran} | {cols} | "
                            f"{rate:.1f} | {mm} | {_fmt_mb(mem[0])} | {_fmt_mb(mem[1])} |")
            stats = [f"{geomean(r):.2f} / {min(r):.2f}" if r else "-" for r in ratios.values()]
            summary.append(f"| {name} | {mode} | " + " | ".join(stats) + " |")
    head = ("| cell | mode | " + " | ".join(f"torch.nn / {c}" for c in COLUMNS)
            + " | ONNX Runtime / auto |")
    return rows + ["", "Geomean / worst over the shapes:", "", head,
                   "|---|---|" + "---:|" * (len(COLUMNS) + 1)] + summary


def _stream(model: torch.nn.Module, xs: torch.Tensor, lstm: bool, module: bool) -> Callable[[], object]:
    """Feed xs (steps, 1, I) one step at a time, carrying the state: a cell call per step, or a
    module call on a (1, 1, I) slice with hx."""
    hidden = int(model.hidden_size)  # type: ignore[arg-type]

    def run() -> object:
        with torch.no_grad():
            shape = (1, 1, hidden) if module else (1, hidden)
            s: Any = (torch.zeros(shape), torch.zeros(shape)) if lstm else torch.zeros(shape)
            for x in xs:
                s = model(x[None], s)[1] if module else model(x, s)
        return s
    return run


def _streaming_rows(cells: list[str], repeats: int) -> list[str]:
    import gatedrnn

    rows = ["| streaming (B=1, one step, state carried), I=64, H=128 | torch.nn µs | "
            "gatedrnn µs | ratio |", "|---|---:|---:|---:|"]
    steps = 200
    xs = torch.randn(steps, 1, 64)
    for cell in cells:
        for module in (False, True):
            name = cell.upper() + ("" if module else "Cell")
            ours = getattr(gatedrnn, name)(64, 128).eval()
            nn = TORCH_CLASSES[name](64, 128).eval()
            nn.load_state_dict(ours.state_dict())
            lstm = cell == "lstm"
            t = fastest({"nn": _stream(nn, xs, lstm, module), "ours": _stream(ours, xs, lstm, module)},
                        repeats)
            label = f"{name}, module call on (1, 1, 64) with hx" if module else f"{name} call"
            rows.append(f"| {label} | {t['nn'] / steps * 1e6:.1f} | {t['ours'] / steps * 1e6:.1f} | "
                        f"{t['nn'] / t['ours']:.2f} |")
    return rows


def _variant_rows(cells: list[str], repeats: int, quick: bool) -> list[str]:
    T, B, I, H = (10, 4, 8, 8) if quick else (100, 64, 256, 256)
    rows = [f"| training at {T}, {B}, {I}, {H} | fused ms | × plain fused | reference ms | "
            "fused speed-up over reference |", "|---|---:|---:|---:|---:|"]
    x = torch.randn(T, B, I, requires_grad=True)
    for cell in cells:
        torch.manual_seed(0)
        plain = build(cell, I, H).train()
        t_plain = fastest({"plain": step(plain, x, "training")}, repeats)["plain"]
        rows.append(f"| {cell.upper()} plain | {t_plain * 1e3:.1f} | 1.00 | | |")
        for name, kw in VARIANTS[cell].items():
            fused = build(cell, I, H, **kw).train()
            ref = build(cell, I, H, "reference", **kw).train()
            ref.load_state_dict(fused.state_dict())
            t = fastest({"ref": step(ref, x, "training"), "fused": step(fused, x, "training")},
                        max(1, repeats // 2))
            rows.append(f"| {cell.upper()} {name} | {t['fused'] * 1e3:.1f} | "
                        f"{t['fused'] / t_plain:.2f} | {t['ref'] * 1e3:.1f} | {t['ref'] / t['fused']:.1f} |")
    return rows


def _list(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [v.strip().lower() for v in text.split(",") if v.strip()]
        bad = [v for v in items if v not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(choices)}")
        return items
    return parse


def _threads(text: str) -> list[int]:
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of positive integers")
    return counts


def _blocks(a: argparse.Namespace, old: list[str], repeats: int, threads: int) -> Iterator[list[str]]:
    """The tables the modes ask for, at the current thread count, each as soon as it is measured."""
    timed = [m for m in a.modes if m in ("inference", "training")]
    if timed:
        yield _shape_rows(a.cells, timed, a.shapes, repeats, not a.no_memory and not a.quick, threads)
    if "streaming" in a.modes and old:
        yield _streaming_rows(old, repeats)
    if "variants" in a.modes and old:
        yield _variant_rows(old, repeats, a.quick)
    if "targets" in a.modes:
        yield bench_cells.target_rows(repeats, a.quick)
    if "heads" in a.modes:
        yield bench_cells.heads_rows([c for c in a.cells if c in ("lstm", "gru", "slstm")], repeats,
                                     a.quick)
    if "small" in a.modes:
        yield bench_small.rows(repeats, calls=1 if a.quick else 20, quick=a.quick)


def main(argv: list[str] | None = None, shown: list[str] | None = None) -> int:
    """Run the benchmark and print Markdown tables; returns the exit status. ``shown``: the
    arguments to print as the command (a script's own flags included), by default ``argv``."""
    p = argparse.ArgumentParser(prog="gatedrnn bench", description=(__doc__ or "").split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="fewer repeats, no memory, tiny variants/targets/heads shapes (a smoke test)")
    p.add_argument("--modes", type=_list(MODES), default=list(MODES),
                   help=f"comma list of {', '.join(MODES)} (default: all)")
    p.add_argument("--cells", type=_list(tuple(CELLS)), default=list(CELLS),
                   help=f"comma list of {', '.join(CELLS)} (default: all)")
    p.add_argument("--shapes", type=shape_arg, default=SHAPES,
                   help="T,B,I,H[;T,B,I,H...] (default: the five standard shapes)")
    p.add_argument("--repeats", type=int, default=None,
                   help="interleaved runs per contender (default: 9, or 3 with --quick)")
    p.add_argument("--threads", type=_threads, default=[2], help="comma list of thread counts (default 2)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--out", default=None,
                   help="also write the tables, the command and the machine to this Markdown file")
    p.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._probe:
        return _probe(a._probe)
    repeats = max(1, a.repeats or (3 if a.quick else 9))
    old = [c for c in a.cells if c in VARIANTS]
    before, start, written = torch.get_num_threads(), time.perf_counter(), []
    try:
        for n in a.threads:
            torch.set_num_threads(n)
            head = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
                    f"fastest of {repeats} interleaved runs")
            print(head + "\n")
            written.append(f"**{n} thread{'s' if n > 1 else ''}** ({head}):\n")
            for block in _blocks(a, old, repeats, n):
                print("\n".join(block) + "\n", flush=True)
                written.append("\n".join(block) + "\n")
    finally:
        torch.set_num_threads(before)
    if a.out is not None:  # after the run, so an interrupted one leaves the old file whole
        from ..engines import dispatch

        args = shown if shown is not None else argv if argv is not None else sys.argv[1:]
        command = " ".join(["python benchmarks/speed.py", *args])
        written.append(f"- Command: `{command}`; {(time.perf_counter() - start) / 60:.0f} min on "
                       f"{bench_common.machine()}; engine='auto' followed "
                       f"{dispatch.rules_in_effect()}.\n")
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text("\n".join(written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
