"""The Triton engine on one GPU: a correctness gate, then timings against the other engines.

One run of at most about 6 minutes on an H200-class GPU (torch >= 2.4 and triton from the image;
both versions are printed). First every Triton cell is checked against the reference engine
(float32 IEEE, then the TF32 and bfloat16 paths with their own tolerances); then medians of
forward and forward+backward at T = 256, B in {16, 64}, H in {256, 1024}, in float32 and bfloat16:

- LSTM, GRU: torch.nn (cuDNN) against gatedrnn's native engine (the same op);
- layer-norm LSTM, zoneout GRU, Cho's GRU: reference against triton against a torch.compile'd
  reference step;
- LSTM and GRU with 4 heads, sLSTM with 4 heads: reference against triton;
- minGRU, minLSTM: the log-space scan against triton.

Every timing is one layer and one direction through each engine's ``run`` (the same weights), so
the figures compare engines, not module overheads; whether ``gatedrnn.LSTM(engine="triton")`` is
wired is reported in the header. With $OUT set, a CSV and a Markdown table are written there. The
last line printed is the summary.

``--smoke`` runs the same code on tiny shapes on the CPU through Triton's interpreter (it sets
TRITON_INTERPRET=1 itself); its figures mean nothing, it only keeps this script from rotting.

Usage: python benchmarks/gpu.py [--smoke] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import torch  # noqa: E402
import triton  # noqa: E402

import gatedrnn  # noqa: E402
from gatedrnn.engines.triton import common, gru, lstm, minrnn, slstm  # noqa: E402
from gatedrnn.equations import cells, reference, scan  # noqa: E402
from gatedrnn.equations.cells import CellOptions  # noqa: E402

G = {"lstm": 4, "gru": 3, "slstm": 4, "mingru": 2, "minlstm": 3}
# name: (cell, options, num_heads, the engines timed)
CASES = {
    "lstm": ("lstm", CellOptions("lstm"), 1, ("torch.nn", "native")),
    "gru": ("gru", CellOptions("gru"), 1, ("torch.nn", "native")),
    "ln_lstm": ("lstm", CellOptions("lstm", layer_norm=True), 1, ("reference", "triton", "compiled")),
    "zoneout_gru": ("gru", CellOptions("gru", zoneout=0.1, training=True), 1,
                    ("reference", "triton", "compiled")),
    "cho_gru": ("gru", CellOptions("gru", reset_after=False), 1, ("reference", "triton", "compiled")),
    "lstm_4heads": ("lstm", CellOptions("lstm"), 4, ("reference", "triton")),
    "gru_4heads": ("gru", CellOptions("gru"), 4, ("reference", "triton")),
    "slstm_4heads": ("slstm", CellOptions("slstm"), 4, ("reference", "triton")),
    "mingru": ("mingru", CellOptions("mingru"), 1, ("scan", "triton")),
    "minlstm": ("minlstm", CellOptions("minlstm"), 1, ("scan", "triton")),
}
COMPILED: dict[str, Callable] = {}  # one torch.compile per cell; dynamo recompiles per shape
TARGET = (256, 64, 1024)  # (T, B, H) of the targets; timed first, and the only compiled shape
TRITON_RUN = {"lstm": lstm.run, "gru": gru.run, "slstm": slstm.run, "mingru": minrnn.run,
              "minlstm": minrnn.run}


def layer(cell: str, opts: CellOptions, heads: int, T: int, B: int, H: int, dtype, device,
          seed: int = 0):
    """(x, state, w, masks) of one layer and direction, input size H."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int, scale: float = H ** -0.5):
        return (torch.randn(*shape, generator=g) * scale).to(device, dtype).requires_grad_()

    w = {"w_ih": r(G[cell] * H, H), "b_ih": r(G[cell] * H)}
    if cell not in ("mingru", "minlstm"):
        d = H // heads
        w["w_hh"] = r(heads, G[cell] * d, d) if heads > 1 else r(G[cell] * H, H)
        w["b_hh"] = r(G[cell] * H)
    if opts.layer_norm:
        for k, n in (("x", G[cell] * H), ("h", G[cell] * H), ("c", H)):
            w[f"ln_{k}_w"] = (1 + torch.zeros(n)).to(device, dtype).requires_grad_()
            w[f"ln_{k}_b"] = r(n)
    x = r(T, B, H, scale=1.0)
    n_state = {"lstm": 2, "slstm": 4}.get(cell, 1)
    state = tuple(torch.zeros(B, H, device=device, dtype=dtype) for _ in range(n_state))
    masks = {}
    if opts.zoneout:
        masks["zoneout_h"] = torch.bernoulli(torch.full((T, B, H), opts.zoneout)).to(device, dtype)
    return x, state, w, masks


def engine_call(name: str, cell: str, opts: CellOptions) -> Callable:
    """The ``run`` of one engine with the unified signature."""
    if name == "triton":
        return TRITON_RUN[cell]
    if name == "scan":
        return lambda x, s, w, bs, rev, o, m, rec: scan.run(x, s, w, bs, rev, o, m, rec)
    if name == "compiled":
        step = COMPILED.setdefault(cell, torch.compile(cells.STEPS[cell]))

        def compiled(x, s, w, bs, rev, o, m, rec):
            ys = []
            for t in range(x.shape[0]):
                zh = m.get("zoneout_h")
                s, _ = step(x[t], s, w, o, zoneout_h=None if zh is None else zh[t])
                ys.append(s[0])
            return torch.stack(ys), s, None
        return compiled
    return reference.run  # one contract for every cell kind (opts.mode names it)


def module_pair(cell: str, H: int, dtype, device):
    """torch.nn's module and gatedrnn's native one, with the same weights."""
    ours = getattr(gatedrnn, cell.upper())(H, H, engine="native", device=device, dtype=dtype)
    peer = getattr(torch.nn, cell.upper())(H, H, device=device, dtype=dtype)
    peer.load_state_dict(ours.state_dict())
    return {"torch.nn": peer, "native": ours}


def bench(fn: Callable[[], object], smoke: bool) -> float:
    """Median milliseconds of fn."""
    if torch.cuda.is_available() and not smoke:
        return float(triton.testing.do_bench(fn, warmup=5, rep=40, return_mode="median"))
    times = []
    for _ in range(1 if smoke else 3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def check(device, smoke: bool) -> list[tuple[str, str, float, float]]:
    """The correctness gate: (case, path, max error, tolerance) per Triton cell and path."""
    T, B, H = (3, 2, 64) if smoke else (16, 8, 64)  # heads of 16: the persistent sLSTM
    paths = [("float32", torch.float32, False, 1e-4), ("bfloat16", torch.bfloat16, False, 5e-2)]
    if device.type == "cuda":
        paths.insert(1, ("tf32", torch.float32, True, 2e-2))
    rows = []
    for name, (cell, opts, heads, _) in CASES.items():
        for path, dtype, tf32, tol in paths:
            x, state, w, masks = layer(cell, opts, heads, T, B, H, dtype, device)
            common.TF32 = tf32
            try:
                y, final, _ = TRITON_RUN[cell](x, state, w, None, False, opts, masks, False)
                (y.float().square().sum() + final[0].float().sum()).backward()
            finally:
                common.TF32 = False
            got = [y, *final, x.grad, *(v.grad for v in w.values())]
            x32, state32 = x.detach().float().requires_grad_(), tuple(s.float() for s in state)
            w32 = {k: v.detach().float().requires_grad_() for k, v in w.items()}
            y32, f32, _ = engine_call("reference", cell, opts)(
                x32, state32, w32, None, False, opts, {k: v.float() for k, v in masks.items()}, False)
            (y32.square().sum() + f32[0].sum()).backward()
            want = [y32, *f32, x32.grad, *(v.grad for v in w32.values())]
            err = max(((a.float() - b).abs().max() / (1 + b.abs().max())).item()
                      for a, b in zip(got, want) if b is not None)
            rows.append((name, path, err, tol))
    return rows


def time_rows(device, smoke: bool, budget: float, start: float) -> list[dict]:
    shapes = [(3, 2, 8)] if smoke else [TARGET, (256, 16, 1024), (256, 64, 256), (256, 16, 256)]
    dtypes = [torch.float32, torch.bfloat16]
    rows = []
    for (T, B, H), dtype, (name, (cell, opts, heads, engines)) in (
            (s, d, c) for s in shapes for d in dtypes for c in CASES.items()):
        for mode in ("forward", "forward+backward"):
            row = {"case": name, "T": T, "B": B, "H": H, "dtype": str(dtype)[6:], "mode": mode}
            for engine in engines:
                if time.perf_counter() - start > budget:
                    row[engine] = "over budget"
                    continue
                if engine == "compiled" and (smoke or (T, B, H) != TARGET):
                    # compiling takes far longer than the run: once per cell and dtype
                    row[engine] = "skipped (smoke)" if smoke else "skipped (not the target shape)"
                    continue
                row[engine] = _time_one(engine, cell, opts, heads, T, B, H, dtype, device, mode,
                                        smoke)
            rows.append(row)
    return rows


def _time_one(engine, cell, opts, heads, T, B, H, dtype, device, mode, smoke) -> str:
    train = mode == "forward+backward"
    if engine in ("torch.nn", "native"):
        module = module_pair(cell, H, dtype, device)[engine]
        x = torch.randn(T, B, H, device=device, dtype=dtype)

        def fn():
            with torch.set_grad_enabled(train):
                y = module(x)[0]
                if train:
                    y.float().sum().backward()
    else:
        x, state, w, masks = layer(cell, opts, heads, T, B, H, dtype, device)
        run = engine_call(engine, cell, opts)

        def fn():
            with torch.set_grad_enabled(train):
                y, _, _ = run(x, state, w, None, False, opts, masks, False)
                if train:
                    y.float().sum().backward()
    try:
        return f"{bench(fn, smoke):.3f}"
    except Exception as e:  # a row that cannot run says why and the others go on
        return f"error: {type(e).__name__}"


def module_wired(device) -> str:
    """Whether the modules take engine="triton" yet."""
    try:
        m = gatedrnn.LSTM(4, 4, engine="triton", device=device)
        m(torch.zeros(2, 1, 4, device=device))
        return f"yes (last_engine={m.last_engine})"
    except Exception as e:
        return f"no ({type(e).__name__}); timings call the engines' run functions"


def _ratio(rows: list[dict], num: tuple[str, str], den: tuple[str, str]) -> str:
    """time(num) / time(den), (case, engine) each, float32 training at the target shape
    (T, B, H) = (256, 64, 1024), or at the only shape under --smoke."""
    target = [r for r in rows if (r["T"], r["B"], r["H"]) == TARGET] or rows
    pick = {(r["case"], e): r.get(e) for r in target
            if r["mode"] == "forward+backward" and r["dtype"] == "float32" for e in r}
    try:
        return f"{float(pick[num]) / float(pick[den]):.2f}x"
    except (KeyError, TypeError, ValueError):
        return "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, CPU, interpreter")
    parser.add_argument("--budget", type=float, default=330.0, help="seconds for the timings")
    args = parser.parse_args()
    start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (Triton interpreter)"
    print(f"torch {torch.__version__}, triton {triton.__version__}, gatedrnn "
          f"{getattr(gatedrnn, '__version__', '?')}, device {name}")
    print(f"engine='triton' wired into the modules: {module_wired(device)}")
    checks = check(device, args.smoke)
    failed = [c for c in checks if not c[2] <= c[3]]
    for case, path, err, tol in checks:
        print(f"check {case:14s} {path:9s} error {err:.2e} (tolerance {tol:.0e})"
              f"{'' if err <= tol else '  FAILED'}")
    rows = time_rows(device, args.smoke, args.budget, start)
    columns = ["case", "T", "B", "H", "dtype", "mode", "torch.nn", "native", "reference",
               "triton", "compiled", "scan"]
    table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    table += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    print("\n".join(table))
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        with open(Path(out) / "gpu.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        (Path(out) / "gpu.md").write_text(f"Device: {name}\n\n" + "\n".join(table) + "\n")
    ln = ("ln_lstm", "triton")
    print(f"summary: checks {len(checks) - len(failed)}/{len(checks)} passed; training speed-ups "
          f"(targets): ln_lstm reference/triton {_ratio(rows, ('ln_lstm', 'reference'), ln)} "
          f"(>= 5x), ln_lstm triton/cuDNN lstm {_ratio(rows, ln, ('lstm', 'torch.nn'))} (<= 2x), "
          f"slstm_4heads reference/triton "
          f"{_ratio(rows, ('slstm_4heads', 'reference'), ('slstm_4heads', 'triton'))} (>= 10x), "
          f"mingru scan/triton {_ratio(rows, ('mingru', 'scan'), ('mingru', 'triton'))} (>= 1x); "
          f"{len(rows)} rows in {time.perf_counter() - start:.0f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
