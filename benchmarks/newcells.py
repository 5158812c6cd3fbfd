"""Training speed (forward + backward) of minGRU, minLSTM and sLSTM against their baselines.

Usage: python benchmarks/newcells.py [--quick] [--repeats N] [--threads N]

Groups (shape T, B, I, H), each timed interleaved, fastest of ``--repeats`` runs after a warm-up:
- min:   MinGRU, MinLSTM (fused; and MinGRU's log-space scan) vs gatedrnn.GRU(engine="fused") and
         torch.nn.GRU at (1000, 32, 256, 256)
- slstm: SLSTM fused vs its reference engine at (100, 32, 128, 128)
- heads: SLSTM fused, num_heads=4 vs num_heads=1 at (100, 32, 128, 128)
Issue 10's targets are printed next to the ratios they concern. ``--quick`` runs tiny shapes to
check that the script works; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

import gatedrnn

MIN_SHAPE, SLSTM_SHAPE = (1000, 32, 256, 256), (100, 32, 128, 128)
QUICK_MIN, QUICK_SLSTM = (20, 4, 8, 8), (10, 4, 8, 8)


def _train(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        x.grad = None
        model.zero_grad(set_to_none=True)
        model(x)[0].sum().backward()
    return run


def _fastest(runs: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Milliseconds per run: the fastest of ``repeats`` interleaved rounds, after a warm-up."""
    for fn in runs.values():
        fn()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], 1e3 * (time.perf_counter() - t0))
    return best


def _group(title: str, shape: tuple[int, int, int, int], models: dict[str, torch.nn.Module],
           repeats: int) -> dict[str, float]:
    T, B, I, H = shape
    x = torch.randn(T, B, I, requires_grad=True)
    times = _fastest({k: _train(m, x) for k, m in models.items()}, repeats)
    print(f"\n{title}  (T, B, I, H) = {shape}, training, ms (fastest of {repeats})")
    for name, ms in times.items():
        print(f"  {name:<28} {ms:9.2f}")
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 7)
    min_shape, slstm_shape = (QUICK_MIN, QUICK_SLSTM) if args.quick else (MIN_SHAPE, SLSTM_SHAPE)
    torch.manual_seed(0)

    I, H = min_shape[2], min_shape[3]
    t = _group("min", min_shape, {
        "MinGRU fused": gatedrnn.MinGRU(I, H, engine="fused"),
        "MinLSTM fused": gatedrnn.MinLSTM(I, H, engine="fused"),
        "MinGRU scan": gatedrnn.MinGRU(I, H, engine="scan"),
        "gatedrnn.GRU fused": gatedrnn.GRU(I, H, engine="fused"),
        "torch.nn.GRU": torch.nn.GRU(I, H),
    }, repeats)
    print(f"  GRU fused / MinGRU      {t['gatedrnn.GRU fused'] / t['MinGRU fused']:6.2f}x  (target >= 1.5)")
    print(f"  torch.nn.GRU / MinGRU   {t['torch.nn.GRU'] / t['MinGRU fused']:6.2f}x  (target >= 3)")
    print(f"  MinLSTM / MinGRU        {t['MinLSTM fused'] / t['MinGRU fused']:6.2f}x  (target <= 1.2)")

    I, H = slstm_shape[2], slstm_shape[3]
    t = _group("slstm", slstm_shape, {
        "SLSTM fused": gatedrnn.SLSTM(I, H, engine="fused"),
        "SLSTM reference": gatedrnn.SLSTM(I, H, engine="reference"),
    }, repeats)
    print(f"  reference / fused       {t['SLSTM reference'] / t['SLSTM fused']:6.2f}x  (target >= 3)")

    t = _group("heads", slstm_shape, {
        "SLSTM fused, 1 head": gatedrnn.SLSTM(I, H, engine="fused"),
        "SLSTM fused, 4 heads": gatedrnn.SLSTM(I, H, engine="fused", num_heads=4),
    }, repeats)
    print(f"  1 head / 4 heads        {t['SLSTM fused, 1 head'] / t['SLSTM fused, 4 heads']:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
