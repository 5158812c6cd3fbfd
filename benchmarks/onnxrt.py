"""Inference against ONNX Runtime on the ONNX files gatedrnn exports.

For each cell and shape, one process times, interleaved and on the same weights:
- ONNX Runtime (CPU, MLAS; the graph gatedrnn exports: ONNX's own LSTM/GRU operator, whose
  weights ORT prepacks once per session), with ``session.intra_op.allow_spinning = "0"`` so that
  its thread pool does not spin after a run and steal the cores from torch;
- gatedrnn with each engine: auto, fused, native (torch's own op on our parameters);
- torch.nn, the drop-in's peer.
Each side's time is the fastest of ``--repeats`` interleaved runs; ratio = ORT time / ours, so
above 1 means gatedrnn is faster. Threads: torch.set_num_threads(n) and ORT's intra_op n, for
each n in ``--threads``.

The export and the session are ``gatedrnn.toolkit.bench_ort``'s, the timing
``gatedrnn.toolkit.bench_common.fastest``: the same as the ONNX Runtime column of ``gatedrnn bench``
(``--modes inference --cells lstm,gru --threads 1,2``), which also has torch.nn's ratios.

Usage: python benchmarks/onnxrt.py [--quick] [--threads 1,2] [--cells lstm,gru]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch

import gatedrnn
from gatedrnn.toolkit.bench_common import fastest
from gatedrnn.toolkit.bench_ort import runner

SHAPES = [(200, 1, 64, 128), (100, 32, 128, 128), (100, 64, 256, 256)]
ENGINES = ("auto", "fused", "native")


def measure(cell: str, shape: tuple[int, int, int, int], threads: int,
            repeats: int) -> dict[str, float]:
    T, B, I, H = shape
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cls = getattr(gatedrnn, cell.upper())
    ours = {e: cls(I, H).eval() for e in ENGINES}
    peer = getattr(torch.nn, cell.upper())(I, H).eval()
    for e, m in ours.items():
        m.load_state_dict(peer.state_dict())
        m.engine = e
    x = torch.randn(T, B, I)
    ort_run = runner(ours["fused"], x, threads)  # checked against the module's output

    def run(m: torch.nn.Module) -> Callable[[], object]:
        def go() -> object:
            with torch.no_grad():
                return m(x)
        return go

    fns: dict[str, Callable[[], object]] = {"onnxruntime": ort_run, "torch.nn": run(peer)}
    fns.update({e: run(m) for e, m in ours.items()})
    return fastest(fns, repeats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="two repeats, the first shape only")
    p.add_argument("--threads", default="1,2", help="comma list of thread counts")
    p.add_argument("--cells", default="lstm,gru")
    p.add_argument("--repeats", type=int, default=15)
    a = p.parse_args(argv)
    shapes = SHAPES[:1] if a.quick else SHAPES
    repeats = 2 if a.quick else a.repeats
    cols = ["onnxruntime", "torch.nn", *ENGINES]
    print("| cell | threads | T, B, I, H | " + " | ".join(f"{c} ms" for c in cols)
          + " | ORT / auto | ORT / fused |")
    print("|---|---|---|" + "---:|" * (len(cols) + 2))
    ratios: dict[tuple[str, int], list[float]] = {}
    for n in (int(t) for t in a.threads.split(",")):
        for cell in a.cells.split(","):
            for shape in shapes:
                t = measure(cell, shape, n, repeats)
                r_auto = t["onnxruntime"] / t["auto"]
                ratios.setdefault((cell, n), []).append(r_auto)
                ms = " | ".join(f"{t[c] * 1e3:.2f}" for c in cols)
                print(f"| {cell.upper()} | {n} | {', '.join(map(str, shape))} | {ms} | "
                      f"{r_auto:.2f} | {t['onnxruntime'] / t['fused']:.2f} |", flush=True)
    print("\n| cell | threads | geomean ORT / auto | worst |\n|---|---|---:|---:|")
    for (cell, n), rs in ratios.items():
        g = math.exp(sum(map(math.log, rs)) / len(rs))
        print(f"| {cell.upper()} | {n} | {g:.2f} | {min(rs):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
