"""How fast could any engine built on the same GEMM libraries be? A profile for the speed targets.

For each benchmark shape this times torch.nn's whole inference forward and, in the same process,
the GEMMs that every engine of this design must do: the input projection over all steps and T
per-step recurrent products, each with the faster of MKL (torch.mm) and oneDNN
(torch.ops.mkldnn._linear_pointwise). torch.nn time / GEMM time is then an upper bound on the
speed-up of an engine that calls these libraries (gate math and per-call overhead cost nothing in
it). At B = 1 the per-step torch call overhead dominates the GEMM column, so read that row as a
rough figure only (the fused engine's GEMV runs inside numba without it).

The last two columns time the fused engine's own per-step product, T steps of (B, H) @ (H, G·H)
inside one numba loop with a one-thread MKL, as sgemm_ (``common.gemm``) and on a W_hh packed
once (``packed.packed_prod``), at B rows and at the B/2 rows of each half when the engine splits
the batch over two threads (``threads.split_rows``). Pin the process to one core
(``taskset -c 0``) for these.

Usage: python benchmarks/gemm_bound.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numba
import numpy as np
import torch

from gatedrnn.engines.kernels import common, packed, threads

SHAPES = [(200, 1, 64, 128), (100, 32, 128, 128), (100, 64, 256, 256), (100, 64, 512, 512),
          (50, 256, 128, 256)]


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def onednn(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(a, w, b, "none", [], "")


@numba.njit(**common.JIT)
def _steps(h, w, wp, c, scratch):
    """T products h @ w^T into c[t] (beta = 1), on the packed wp when it is not empty."""
    for t in range(c.shape[0]):
        if wp.shape[0] > 0:
            packed.packed_prod(h, wp, w, c[t], 1.0, scratch)
        else:
            common.gemm(h, w, c[t], False, True, 1.0, scratch)


def per_step(G: int, T: int, rows: int, H: int, repeats: int) -> tuple[float, float]:
    """Microseconds a step for sgemm_ and for the packed product, one MKL thread, interleaved."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((G * H, H)).astype(np.float32)
    h = rng.standard_normal((rows, H)).astype(np.float32)
    c = np.zeros((T, rows, G * H), np.float32)
    empty = np.empty(0, np.float32)
    old = threads._mkl_local(1) if threads._mkl_local is not None else None
    try:
        wp = packed.pack_weight(w, T, rows, keep=False)
        best = [float("inf"), float("inf")]
        for _ in range(repeats):
            for k, p in enumerate((empty, wp)):
                best[k] = min(best[k], median_seconds(
                    lambda p=p: _steps(h, w, p, c, common.gemm_scratch(np.float32)), 1))
    finally:
        if old is not None:
            threads._mkl_local(old)
    return best[0] / T * 1e6, (best[1] / T * 1e6 if wp.size else float("nan"))


def row(name: str, G: int, T: int, B: int, I: int, H: int, repeats: int) -> str:  # noqa: E741
    model = getattr(torch.nn, name)(I, H).eval()
    x = torch.randn(T, B, I)
    w_ih, w_hh = torch.randn(G * H, I), torch.randn(G * H, H)
    bias, h = torch.randn(G * H), torch.randn(B, H)
    x2 = x.view(T * B, I)
    with torch.no_grad():
        whole = median_seconds(lambda: model(x), repeats)
        proj = min(median_seconds(lambda: torch.addmm(bias, x2, w_ih.t()), repeats),
                   median_seconds(lambda: onednn(x2, w_ih, bias), repeats))
        steps = min(median_seconds(lambda: [torch.mm(h, w_hh.t()) for _ in range(T)], repeats),
                    median_seconds(lambda: [onednn(h, w_hh, None) for _ in range(T)], repeats))
    cells = []
    for rows in sorted({B, (B + 1) // 2}, reverse=True):
        plain, fast = per_step(G, T, rows, H, repeats)
        cells.append(f"{rows}: {plain:.1f} / {fast:.1f}")
    return (f"| {name} | {T}, {B}, {I}, {H} | {whole * 1e3:.2f} | {(proj + steps) * 1e3:.2f} | "
            f"{whole / (proj + steps):.2f} | {'; '.join(cells)} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=9)
    repeats = p.parse_args().repeats
    torch.set_num_threads(2)
    print("| cell | T, B, I, H | torch.nn inference ms | GEMMs alone, best library, ms | bound "
          "| per-step product µs, rows: sgemm_ / packed |")
    print("|---|---|---:|---:|---:|---|")
    for name, G in (("LSTM", 4), ("GRU", 3)):
        for shape in SHAPES:
            print(row(name, G, *shape, repeats))


if __name__ == "__main__":
    main()
