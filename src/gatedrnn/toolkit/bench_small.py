"""The ``small`` table of ``gatedrnn bench``: small calls against torch.nn.

Small calls are where a fixed cost per call decides: an RL policy stepping at B = 1, a decoder
stepping a cell under autograd, a short sequence in forecasting. The table times, in float32 with
``engine="auto"`` and torch.nn's weights:

- modules at (T, B, I, H) in ``MODULES``: (1, 1, 16, 32), (5, 4, 32, 64), (20, 8, 64, 128), for
  LSTM, GRU and RNN (tanh); ``hx`` not given;
- cells (LSTMCell, GRUCell, RNNCell) at B in {1, 2, 8}, I = 32, H = 64, the state given;

each in training (forward, then backward from the sum of every output to the input, the state and
every weight) and in inference (``torch.no_grad``). A timing is a loop of ``calls`` calls; the
contenders run interleaved and each one's fastest of ``repeats`` rounds counts
(``bench_common.fastest``). The ratio is torch.nn's time over gatedrnn's (> 1: gatedrnn faster).
Targets: no ratio below 0.95, geomean >= 1.3, cells in inference >= 3.

Example:
    >>> from gatedrnn.toolkit import bench_small
    >>> rows = bench_small.rows(repeats=1, calls=1, quick=True)
    >>> rows[0].startswith("| call |")
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .bench_common import fastest, geomean

MODULES: tuple[tuple[str, tuple[int, int, int, int]], ...] = tuple(
    (cell, shape) for shape in ((1, 1, 16, 32), (5, 4, 32, 64), (20, 8, 64, 128))
    for cell in ("LSTM", "GRU", "RNN"))
CELLS: tuple[tuple[str, int], ...] = tuple(
    (cell, B) for cell in ("LSTMCell", "GRUCell", "RNNCell") for B in (1, 2, 8))
CELL_I, CELL_H = 32, 64
MODES = ("training", "inference")


def _pair(name: str, I: int, H: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """gatedrnn's module (engine "auto") and torch.nn's, with the same weights."""
    import gatedrnn

    ours = getattr(gatedrnn, name)(I, H)
    nn = getattr(torch.nn, name)(I, H)
    nn.load_state_dict(ours.state_dict())
    return ours, nn


def _total(out: Any) -> torch.Tensor:
    """The sum of every tensor in a module's or cell's result (the loss of a training call)."""
    if isinstance(out, torch.Tensor):
        return out.sum()
    return sum((_total(o) for o in out), torch.zeros(()))


def _call(model: torch.nn.Module, args: tuple, mode: str, calls: int) -> Callable[[], object]:
    """``calls`` calls of ``model(*args)``: under no_grad, or each followed by its backward."""
    params = list(model.parameters())
    leaves = [a for a in args for a in (a if isinstance(a, tuple) else (a,))]

    if mode == "inference":
        def infer() -> object:
            with torch.no_grad():
                for _ in range(calls):
                    out = model(*args)
            return out
        return infer

    def train() -> None:
        for _ in range(calls):
            for p in params + leaves:
                p.grad = None
            _total(model(*args)).backward()
    return train


def _args(name: str, shape: tuple[int, ...], mode: str) -> tuple:
    grad = mode == "training"
    if name.endswith("Cell"):
        B, I, H = shape
        x = torch.randn(B, I, requires_grad=grad)
        h = torch.randn(B, H, requires_grad=grad)
        return (x, (h, torch.randn(B, H, requires_grad=grad)) if name == "LSTMCell" else h)
    T, B, I, _ = shape
    return (torch.randn(T, B, I, requires_grad=grad),)


def measure(name: str, shape: tuple[int, ...], mode: str, repeats: int, calls: int
            ) -> tuple[float, float, str]:
    """(torch.nn seconds per call, gatedrnn seconds per call, the engine gatedrnn ran)."""
    torch.manual_seed(0)
    I, H = (shape[1], shape[2]) if name.endswith("Cell") else (shape[2], shape[3])
    ours, nn = _pair(name, I, H)
    args = _args(name, shape, mode)
    t = fastest({"nn": _call(nn, args, mode, calls), "ours": _call(ours, args, mode, calls)},
                repeats)
    return t["nn"] / calls, t["ours"] / calls, str(getattr(ours, "last_engine", ""))


def rows(repeats: int, calls: int, quick: bool = False) -> list[str]:
    """The table in Markdown: per call and mode, µs and the ratio torch.nn / gatedrnn; then the
    geomean and the worst ratio against the targets."""
    calls_of = (lambda us: calls) if quick else (lambda us: max(calls, int(600 / max(us, 1.0))))
    out = ["| call | mode | torch.nn µs | gatedrnn µs | torch.nn / gatedrnn | gatedrnn ran |",
           "|---|---|---:|---:|---:|---|"]
    ratios: dict[str, list[float]] = {"training": [], "inference": [], "cells, inference": []}
    cases = [(n, s) for n, s in MODULES] + [(n, (B, CELL_I, CELL_H)) for n, B in CELLS]
    if quick:
        cases = cases[:1] + cases[-1:]
    for name, shape in cases:
        for mode in MODES:
            # a first, short measurement sizes the loop to ~0.6 ms a round (short rounds: on a
            # shared machine the fastest of many short rounds is the least disturbed)
            t_nn, _, _ = measure(name, shape, mode, 1, 1)
            t_nn, t_ours, engine = measure(name, shape, mode, repeats, calls_of(t_nn * 1e6))
            r = t_nn / t_ours
            ratios[mode].append(r)
            if name.endswith("Cell") and mode == "inference":
                ratios["cells, inference"].append(r)
            label = (f"{name} B={shape[0]}" if name.endswith("Cell")
                     else f"{name} ({', '.join(map(str, shape))})")
            out.append(f"| {label} | {mode} | {t_nn * 1e6:.1f} | {t_ours * 1e6:.1f} | {r:.2f} | "
                       f"{engine} |")
    every = ratios["training"] + ratios["inference"]
    out += ["", "| over | geomean | worst | target |", "|---|---:|---:|---|"]
    for key, goal in (("training", "worst >= 0.95"), ("inference", "worst >= 0.95"),
                      ("cells, inference", "worst >= 3")):
        out.append(f"| {key} | {geomean(ratios[key]):.2f} | {min(ratios[key]):.2f} | {goal} |")
    out.append(f"| every call | {geomean(every):.2f} | {min(every):.2f} | geomean >= 1.3, "
               "worst >= 0.95 |")
    return out


def _each(fns: dict[str, Callable[[], object]], repeats: int, calls: int) -> dict[str, float]:
    """µs per call of each function: the fastest of ``repeats`` interleaved loops of ``calls``."""
    def loop(f: Callable[[], object]) -> Callable[[], object]:
        return lambda: [f() for _ in range(calls)]

    loops = {k: loop(f) for k, f in fns.items()}
    return {k: v / calls * 1e6 for k, v in fastest(loops, repeats).items()}


def profile_rows(repeats: int = 5, calls: int = 300) -> list[str]:
    """The fixed cost of a small call, piece by piece (µs per call, I = 16, H = 32, B = 1, float32):
    what each path pays besides its arithmetic. Measured in this process, fastest of interleaved
    loops."""
    import numpy as np

    import gatedrnn
    from gatedrnn.engines import dispatch, lean_path, one_step, step_grad
    from gatedrnn.engines.kernels import step, threads

    torch.manual_seed(0)
    I, H = 16, 32
    cell, gru = gatedrnn.GRUCell(I, H), gatedrnn.GRU(I, H)
    nn_cell, nn_gru = torch.nn.GRUCell(I, H), torch.nn.GRU(I, H)
    x, h = torch.randn(1, I), torch.randn(1, H)
    xg = x.clone().requires_grad_()
    xs = torch.randn(1, 1, I)
    p = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    out = torch.empty(1, H)
    run, flag = step.kernel("gru", True)
    like = step.LIKE[torch.float32]
    kw: dict[str, Any] = dict(torch_op=True, simple=True, training=True, batch=1)
    copy = tuple(list(dispatch.TABLE))  # the same rows, not the cached table

    class Nothing(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a):  # type: ignore[override]
            return a.clone()

        @staticmethod
        def backward(ctx, g):  # type: ignore[override]
            return g

    def nothing() -> None:
        Nothing.apply(xg).sum().backward()

    def plain_backward() -> None:
        xg.clone().sum().backward()

    def no_grad(f: Callable[[], object]) -> Callable[[], object]:
        def run_() -> object:
            with torch.no_grad():
                return f()
        return run_

    pieces: dict[str, Callable[[], object]] = {
        "walk the dispatch table (dispatch.choose, uncached)":
            lambda: dispatch.choose("cpu", "GRUCell", "float32", table=copy, **kw),
        "dispatch.choose, cached": lambda: dispatch.choose("cpu", "GRUCell", "float32", **kw),
        "the streaming path's checks, declining a call under autograd (one_step.cell_call)":
            lambda: one_step.cell_call(cell, xg, h),
        "the GRU step kernel alone (numba dispatch and a GEMV)":
            lambda: run(like, x.data_ptr(), h.data_ptr(), 0, *(t.data_ptr() for t in p), 1, I, H,
                        out.data_ptr(), H, 0, 0, flag),
        "an output buffer, torch.empty": lambda: torch.empty(1, H),
        "an output buffer, numpy + from_numpy": lambda: torch.from_numpy(np.empty((1, H), np.float32)),
        "a forward + backward through an empty autograd.Function (minus a clone's)": nothing,
        "  (the clone's forward + backward)": plain_backward,
        "the two-thread split's team entry, no work (threads.split_rows at B = 64)":
            lambda: threads.split_rows(64, lambda *a: None, 64, 2),
        "GRUCell inference: torch.nn": no_grad(lambda: nn_cell(x, h)),
        "GRUCell inference: gatedrnn (streaming step kernel)": no_grad(lambda: cell(x, h)),
        "GRUCell forward under autograd: torch.nn": lambda: nn_cell(xg, h),
        "GRUCell forward under autograd: gatedrnn (step_grad)": lambda: cell(xg, h),
        "GRUCell forward under autograd: step_grad._Step.apply alone":
            lambda: step_grad._Step.apply("gru", xg, h, None, *p),
        "GRU (1, 1) inference: torch.nn": no_grad(lambda: nn_gru(xs)),
        "GRU (1, 1) inference: gatedrnn (streaming step kernel, hx = None)": no_grad(lambda: gru(xs)),
        "GRU (1, 1) inference: gatedrnn's lean path": no_grad(
            lambda: lean_path.module_call(gru, xs, None, False)),
        "GRU (1, 1) inference: gatedrnn's general fused path (module._forward)": no_grad(
            lambda: gru._forward(xs, None, False)),
    }
    t = _each(pieces, repeats, calls)
    t["a forward + backward through an empty autograd.Function (minus a clone's)"] -= \
        t["  (the clone's forward + backward)"]
    return ["| piece of a small call (float32, B = 1, I = 16, H = 32) | µs |", "|---|---:|"] + [
        f"| {k} | {v:.1f} |" for k, v in t.items()]
