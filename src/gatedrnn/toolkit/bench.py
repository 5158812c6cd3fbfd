"""Speed benchmark: gatedrnn's fused engine against torch.nn on the CPU (``gatedrnn bench``).

For each cell (LSTM, GRU) and shape (T, B, input, hidden) it times torch.nn and gatedrnn
(``engine="fused"``, through the public modules) with identical weights, in float32 with
``torch.set_num_threads(2)``:

- inference: a no_grad forward; training: forward + backward to the input and every weight.
- Runs are interleaved (peer, ours, peer, ours, ...) and each side's median is taken, because
  the machine is shared and its load drifts; ratio = torch.nn time / gatedrnn time (> 1: faster).
- GFLOP/s: the GEMM flops of the layer (2·T·B·G·H·(I + H_out), three times that for training)
  over gatedrnn's time, next to the rate torch.mm reaches on the per-step GEMM alone
  (B × H_out · H_out × G·H), which bounds any implementation of the recurrence.
- peak memory: the growth of the resident set (VmHWM − VmRSS before the call, after resetting
  the high-water mark) during one call, measured in a fresh subprocess per configuration. It
  counts everything the process touches (torch tensors, oneDNN scratch, numba buffers) but is
  rounded to pages and includes allocator slack.
- streaming: one step at B = 1 with the state carried, gatedrnn's cells against torch.nn's.
- variants (training at (100, 64, 256, 256)): each LSTM and GRU option's cost against the plain
  fused run and against the reference engine (a Python loop over ``gatedrnn.cells``).

Example:
    >>> from gatedrnn.toolkit import bench
    >>> bench.main(["--quick", "--shapes", "3,2,4,8", "--cells", "lstm", "--modes", "inference",
    ...             "--no-memory"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

SHAPES = [(200, 1, 64, 128), (100, 32, 128, 128), (100, 64, 256, 256), (100, 64, 512, 512),
          (50, 256, 128, 256)]
GATES = {"lstm": 4, "gru": 3}
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "lstm": {"peephole": {"peephole": True}, "layer_norm": {"layer_norm": True},
             "recurrent_dropout": {"recurrent_dropout": 0.25},
             "zoneout": {"zoneout": 0.1, "zoneout_cell": 0.1}, "weight_drop": {"weight_drop": 0.3}},
    "gru": {"reset_after=False": {"reset_after": False}, "layer_norm": {"layer_norm": True},
            "recurrent_dropout": {"recurrent_dropout": 0.25}, "zoneout": {"zoneout": 0.1},
            "weight_drop": {"weight_drop": 0.3}},
}


def _pair(peer: Callable[[], object], ours: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of each side over interleaved runs, after one warm-up of each."""
    peer()
    ours()
    tp: list[float] = []
    to: list[float] = []
    for _ in range(repeats):
        for fn, acc in ((peer, tp), (ours, to)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    return statistics.median(tp), statistics.median(to)


def _models(cell: str, I: int, H: int, **extra) -> tuple[torch.nn.Module, torch.nn.Module]:
    import gatedrnn

    ours = getattr(gatedrnn, cell.upper())(I, H, engine="fused", **extra)
    peer = getattr(torch.nn, cell.upper())(I, H)
    peer.load_state_dict(ours.state_dict(), strict=False)
    return peer, ours


def _step(model: torch.nn.Module, x: torch.Tensor, mode: str) -> Callable[[], object]:
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


def _flops(cell: str, T: int, B: int, I: int, H: int, mode: str) -> float:
    f = 2.0 * T * B * GATES[cell] * H * (I + H)
    return 3 * f if mode == "training" else f


def _mm_rate(B: int, H: int, G: int, repeats: int) -> float:
    """GFLOP/s of torch.mm on the per-step product (B, H) · (H, G·H)."""
    a, b = torch.randn(B, H), torch.randn(H, G * H)
    out = torch.empty(B, G * H)
    n = max(1, int(2e8 / (2 * B * H * G * H)))  # ~0.2 GFLOP per timing
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            torch.mm(a, b, out=out)
        ts.append(time.perf_counter() - t0)
    return 2.0 * B * H * G * H * n / statistics.median(ts) / 1e9


def _peak_bytes(impl: str, cell: str, shape: tuple[int, ...], mode: str) -> float:
    """Peak resident growth (bytes) of one call, in a fresh process (see the module docstring)."""
    args = [sys.executable, "-m", "gatedrnn.toolkit.bench", "--_probe",
            ",".join([impl, cell, mode, *map(str, shape)])]
    out = subprocess.run(args, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return math.nan


def _probe(spec: str) -> int:
    impl, cell, mode, *dims = spec.split(",")
    T, B, I, H = map(int, dims)
    torch.set_num_threads(2)
    peer, ours = _models(cell, I, H)
    model = peer if impl == "torch" else ours
    _step(model, torch.randn(2, 1, I, requires_grad=True), mode)()  # load code, not the shape
    x = torch.randn(T, B, I, requires_grad=True)
    fn = _step(model, x, mode)

    def status(key: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = status("VmRSS:")
    fn()
    print(status("VmHWM:") - before)
    return 0


def _geomean(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else math.nan


def _fmt_mb(b: float) -> str:
    return "n/a" if not math.isfinite(b) else f"{b / 2**20:.1f}"


def _shape_rows(cells, modes, shapes, repeats, memory) -> list[str]:
    rows = ["| cell | mode | T, B, I, H | torch.nn ms | gatedrnn ms | ratio | gatedrnn GFLOP/s | "
            "torch.mm step GFLOP/s | peak MB torch.nn | peak MB gatedrnn |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    summary = []
    for cell in cells:
        for mode in modes:
            ratios = []
            for shape in shapes:
                T, B, I, H = shape
                torch.manual_seed(0)
                try:
                    peer, ours = _models(cell, I, H)
                    x = torch.randn(T, B, I, requires_grad=True)
                    tp, to = _pair(_step(peer, x, mode), _step(ours, x, mode), repeats)
                except ImportError as e:  # e.g. a kernel not written yet
                    rows.append(f"| {cell.upper()} | {mode} | {shape} | n/a ({e}) |||||||")
                    continue
                ratios.append(tp / to)
                rate = _flops(cell, T, B, I, H, mode) / to / 1e9
                mm = _mm_rate(B, H, GATES[cell], 3 if repeats < 5 else 7)
                mem = ((_peak_bytes("torch", cell, shape, mode), _peak_bytes("ours", cell, shape, mode))
                       if memory else (math.nan, math.nan))
                rows.append(f"| {cell.upper()} | {mode} | {T}, {B}, {I}, {H} | {tp * 1e3:.2f} | "
                            f"{to * 1e3:.2f} | {tp / to:.2f} | {rate:.1f} | {mm:.1f} | "
                            f"{_fmt_mb(mem[0])} | {_fmt_mb(mem[1])} |")
            summary.append(f"| {cell.upper()} | {mode} | {_geomean(ratios):.2f} | "
                           f"{min(ratios, default=math.nan):.2f} |")
    return rows + ["", "| cell | mode | geomean ratio | worst ratio |", "|---|---|---:|---:|"] + summary


def _stream(model: torch.nn.RNNBase | torch.nn.RNNCellBase, xs: torch.Tensor, lstm: bool,
            module: bool) -> Callable[[], object]:
    """Feed xs (steps, 1, I) one step at a time, carrying the state: a cell call per step, or a
    module call on a (1, 1, I) slice with hx."""
    def run() -> object:
        with torch.no_grad():
            shape = (1, 1, model.hidden_size) if module else (1, model.hidden_size)
            s = (torch.zeros(shape), torch.zeros(shape)) if lstm else torch.zeros(shape)
            for x in xs:
                s = model(x[None], s)[1] if module else model(x, s)
        return s
    return run


def _streaming_rows(cells, repeats) -> list[str]:
    import gatedrnn

    rows = ["| streaming (B=1, one step, state carried), I=64, H=128 | torch.nn µs | "
            "gatedrnn µs | ratio |", "|---|---:|---:|---:|"]
    steps = 200
    xs = torch.randn(steps, 1, 64)
    for cell in cells:
        for module in (False, True):
            name = cell.upper() + ("" if module else "Cell")
            ours = getattr(gatedrnn, name)(64, 128).eval()
            peer = getattr(torch.nn, name)(64, 128).eval()
            peer.load_state_dict(ours.state_dict())
            lstm = cell == "lstm"
            tp, to = _pair(_stream(peer, xs, lstm, module), _stream(ours, xs, lstm, module), repeats)
            label = f"{name}, module call on (1, 1, 64) with hx" if module else f"{name} call"
            rows.append(f"| {label} | {tp / steps * 1e6:.1f} | {to / steps * 1e6:.1f} | "
                        f"{tp / to:.2f} |")
    return rows


def _variant_rows(cells, repeats) -> list[str]:
    import gatedrnn

    T, B, I, H = 100, 64, 256, 256
    rows = [f"| training at {T}, {B}, {I}, {H} | fused ms | × plain fused | reference ms | "
            "fused speed-up over reference |", "|---|---:|---:|---:|---:|"]
    x = torch.randn(T, B, I, requires_grad=True)
    for cell in cells:
        cls = getattr(gatedrnn, cell.upper())
        torch.manual_seed(0)
        plain = cls(I, H, engine="fused").train()
        t_plain = _pair(_step(plain, x, "training"), _step(plain, x, "training"), repeats)[1]
        rows.append(f"| {cell.upper()} plain | {t_plain * 1e3:.1f} | 1.00 | | |")
        for name, kw in VARIANTS[cell].items():
            fused = cls(I, H, engine="fused", **kw).train()
            ref = cls(I, H, engine="reference", **kw).train()
            ref.load_state_dict(fused.state_dict())
            t_ref, t_fused = _pair(_step(ref, x, "training"), _step(fused, x, "training"),
                                   max(1, repeats // 2))
            rows.append(f"| {cell.upper()} {name} | {t_fused * 1e3:.1f} | {t_fused / t_plain:.2f} | "
                        f"{t_ref * 1e3:.1f} | {t_ref / t_fused:.1f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print Markdown tables; returns the exit status."""
    p = argparse.ArgumentParser(prog="gatedrnn bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke test)")
    p.add_argument("--modes", default="inference,training,streaming,variants",
                   help="comma list of inference, training, streaming, variants")
    p.add_argument("--cells", default="lstm,gru", help="comma list of lstm, gru")
    p.add_argument("--shapes", default=None,
                   help="T,B,I,H[;T,B,I,H...] (default: the five standard shapes)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved runs per side")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._probe:
        return _probe(a._probe)
    torch.set_num_threads(a.threads)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    cells = [c.strip().lower() for c in a.cells.split(",") if c.strip()]
    shapes = SHAPES if a.shapes is None else [
        tuple(int(v) for v in s.split(",")) for s in a.shapes.split(";")]
    repeats = a.repeats or (3 if a.quick else 9)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          f"median of {repeats} interleaved runs\n")
    timed = [m for m in modes if m in ("inference", "training")]
    if timed:
        print("\n".join(_shape_rows(cells, timed, shapes, repeats, not a.no_memory and not a.quick)))
        print()
    if "streaming" in modes:
        print("\n".join(_streaming_rows(cells, repeats)))
        print()
    if "variants" in modes:
        print("\n".join(_variant_rows(cells, repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
