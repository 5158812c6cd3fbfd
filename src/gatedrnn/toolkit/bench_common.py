"""Timing and model building shared by the tables of ``gatedrnn bench`` (see ``toolkit.bench``).

Every table times its contenders the same way (``fastest``): one warm-up call of each (numba
compiles, oneDNN builds its primitives), then ``repeats`` rounds in which each contender runs once
in turn (interleaved, so that a drift in the shared machine's load hits all of them alike), and
each contender's fastest round counts: the noise on a shared machine only ever adds time.

Example:
    >>> from gatedrnn.toolkit import bench_common
    >>> best = bench_common.fastest({"a": lambda: sum(range(100)), "b": lambda: None}, repeats=2)
    >>> sorted(best), all(t > 0 for t in best.values())
    (['a', 'b'], True)
"""

from __future__ import annotations

import math
import platform
import random
import time
from collections.abc import Callable
from typing import Any

import torch

from .. import __version__

# cell -> (gatedrnn class, torch.nn peer, gate blocks of W_ih, has a recurrent product W_hh·h).
# The newer cells have no torch.nn counterpart: their peer is the torch.nn cell of the same
# (input, hidden) they descend from (minGRU: GRU; minLSTM and sLSTM: LSTM).
CELLS: dict[str, tuple[str, str, int, bool]] = {
    "lstm": ("LSTM", "LSTM", 4, True), "gru": ("GRU", "GRU", 3, True),
    "mingru": ("MinGRU", "GRU", 2, False), "minlstm": ("MinLSTM", "LSTM", 3, False),
    "slstm": ("SLSTM", "LSTM", 4, True),
}
# The engines timed per cell, besides torch.nn (and ONNX Runtime for inference).
ENGINES: dict[str, tuple[str, ...]] = {
    "lstm": ("auto", "fused", "native"), "gru": ("auto", "fused", "native"),
    "mingru": ("auto", "fused", "scan"), "minlstm": ("auto", "fused", "scan"),
    "slstm": ("auto", "fused"),
}


def fastest(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Seconds per contender: the fastest of ``repeats`` interleaved rounds, after one warm-up.

    Each round runs the contenders in a shuffled order (a fixed seed, so a rerun repeats it):
    after a parallel torch op, torch's OpenMP workers keep spinning for ~10 ms, and whatever runs
    next pays for it. A rotation of one fixed order (the rule before) starts each round one
    contender later but keeps every contender's predecessor: with five contenders engine="auto"
    followed torch.nn in every round and measured 1.05 ms for the GRU at (200, 1, 64, 128) where
    engine="fused", the same kernel, measured 0.82. Shuffled, each contender has other
    predecessors in some rounds, and its fastest round counts.
    """
    for fn in fns.values():
        fn()
    rng = random.Random(0)
    order = list(fns)
    best = dict.fromkeys(fns, math.inf)
    for _ in range(max(1, repeats)):
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def build(cell: str, I: int, H: int, engine: str = "fused", **options: Any) -> torch.nn.Module:
    """gatedrnn's module for ``cell`` (a key of CELLS) with the given engine and options."""
    import gatedrnn

    return getattr(gatedrnn, CELLS[cell][0])(I, H, engine=engine, **options)


def peer(cell: str, I: int, H: int, like: torch.nn.Module | None = None) -> torch.nn.Module:
    """torch.nn's module for ``cell``; with ``like`` (an LSTM or GRU of gatedrnn) its weights."""
    from ..modules.patch import TORCH_CLASSES  # torch's own, also under gatedrnn.patch_torch()

    nn = TORCH_CLASSES[CELLS[cell][1]](I, H)
    if like is not None and CELLS[cell][0] == CELLS[cell][1]:
        nn.load_state_dict(like.state_dict(), strict=False)
    return nn


def step(model: torch.nn.Module, x: torch.Tensor, mode: str) -> Callable[[], object]:
    """One call of ``model`` on ``x``: a no_grad forward ("inference"), or forward + backward to
    the input and every weight ("training")."""
    if mode == "inference":
        def run() -> object:
            with torch.no_grad():
                return model(x)
        return run

    def train() -> None:
        x.grad = None
        model.zero_grad(set_to_none=True)
        model(x)[0].sum().backward()
    return train


def flops(cell: str, T: int, B: int, I: int, H: int, mode: str, heads: int = 1) -> float:
    """The GEMM flops of one layer: 2·T·B·G·H·(I + H/heads) (no H term without recurrence), three
    times that for training (the forward GEMMs, and two of the same size in the backward)."""
    _, _, G, recurrent = CELLS[cell]
    f = 2.0 * T * B * G * H * (I + (H // heads if recurrent else 0))
    return 3 * f if mode == "training" else f


def mm_rate(B: int, H: int, G: int, repeats: int) -> float:
    """GFLOP/s of torch.mm on the per-step product (B, H) · (H, G·H), the fastest of ``repeats``."""
    a, b = torch.randn(B, H), torch.randn(H, G * H)
    out = torch.empty(B, G * H)
    # ~0.2 GFLOP per timing, but at most 5000 calls: at toy shapes (tests, --quick) that many
    # tiny products take minutes when torch's threads contend for a busy machine's cores.
    n = max(1, min(5000, int(2e8 / (2 * B * H * G * H))))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * B * H * G * H * n / best / 1e9


def geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else math.nan


def cell_text(seconds: float, reference: float) -> str:
    """A table cell "ms (ratio)", ratio = reference / seconds (> 1: faster than the reference)."""
    if not math.isfinite(seconds):
        return "n/a"
    return f"{seconds * 1e3:.2f} ({reference / seconds:.2f})"


def one_shape(text: str) -> tuple[int, int, int, int]:
    """Parse "T,B,I,H" into a shape of four positive integers (argparse ``type``)."""
    import argparse

    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not T,B,I,H (four positive integers)")
    return dims[0], dims[1], dims[2], dims[3]


def shape_arg(text: str) -> list[tuple[int, int, int, int]]:
    """Parse "T,B,I,H[;T,B,I,H...]" into shapes of positive integers (argparse ``type``)."""
    return [one_shape(part) for part in text.split(";")]


def machine() -> str:
    """The CPU, and the versions the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
        flags = next(line.split(":", 1)[1].split() for line in info if line.startswith("flags"))
        simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
        cpu += f" ({', '.join(simd) or 'no AVX2'})"
    except (OSError, StopIteration):
        pass
    return (f"{cpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"gatedrnn {__version__}")
