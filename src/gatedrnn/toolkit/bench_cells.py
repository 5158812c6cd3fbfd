"""The ``targets`` and ``heads`` tables of ``gatedrnn bench``: the newer cells' speed targets.

- targets (training, forward + backward):
  - minGRU and minLSTM (fused, and the log-space ``scan`` engine) against gatedrnn.GRU (fused)
    and torch.nn.GRU at (T, B, I, H) = (1000, 32, 256, 256): targets GRU fused / minGRU >= 1.5,
    torch.nn.GRU / minGRU >= 3, minLSTM / minGRU <= 1.2;
  - sLSTM fused against its reference engine at (100, 32, 128, 128): reference / fused >= 3.
- heads (training at (100, 64, 512, 512)): LSTM, GRU and sLSTM (fused) with num_heads=1 against
  num_heads=4 (head-wise, block-diagonal recurrence), next to torch.nn's dense cell; target for
  the LSTM: 1 head / 4 heads >= 1.3. A cell whose module has no ``num_heads`` yet gets a row that
  says so.

Each group is timed with ``bench_common.fastest`` (fastest of interleaved runs). With ``quick``
the shapes are tiny: the tables then only show that the code runs, their figures mean nothing.

Example:
    >>> from gatedrnn.toolkit import bench_cells
    >>> rows = bench_cells.heads_rows(["slstm"], repeats=1, quick=True)
    >>> rows[2].startswith("| SLSTM |")
    True
"""

from __future__ import annotations

import torch

from .bench_common import build, fastest, peer, step

MIN_SHAPE, SLSTM_SHAPE, HEADS_SHAPE = (1000, 32, 256, 256), (100, 32, 128, 128), (100, 64, 512, 512)
QUICK_MIN, QUICK_SLSTM, QUICK_HEADS = (20, 4, 8, 8), (10, 4, 8, 8), (10, 4, 8, 8)
HEADS = 4


def _times(models: dict[str, torch.nn.Module], shape: tuple[int, int, int, int],
           repeats: int) -> dict[str, float]:
    T, B, I, _ = shape
    x = torch.randn(T, B, I, requires_grad=True)
    return fastest({k: step(m, x, "training") for k, m in models.items()}, repeats)


def _target(name: str, value: float, goal: str) -> str:
    bound = float(goal[3:])
    met = value >= bound if goal.startswith(">=") else value <= bound
    return f"| {name} | {value:.2f} | {goal} | {'yes' if met else 'no'} |"


def target_rows(repeats: int, quick: bool = False) -> list[str]:
    """The speed targets of the newer cells: the times, then the ratios against their goals."""
    min_shape, slstm_shape = (QUICK_MIN, QUICK_SLSTM) if quick else (MIN_SHAPE, SLSTM_SHAPE)
    torch.manual_seed(0)
    I, H = min_shape[2], min_shape[3]
    t = _times({"MinGRU fused": build("mingru", I, H), "MinLSTM fused": build("minlstm", I, H),
                "MinGRU scan": build("mingru", I, H, "scan"),
                "MinLSTM scan": build("minlstm", I, H, "scan"),
                "gatedrnn.GRU fused": build("gru", I, H), "torch.nn.GRU": peer("gru", I, H)},
               min_shape, repeats)
    I, H = slstm_shape[2], slstm_shape[3]
    s = _times({"SLSTM fused": build("slstm", I, H), "SLSTM reference": build("slstm", I, H, "reference")},
               slstm_shape, repeats)
    rows = ["| training, fastest of interleaved runs | T, B, I, H | ms |", "|---|---|---:|"]
    rows += [f"| {k} | {', '.join(map(str, min_shape))} | {v * 1e3:.2f} |" for k, v in t.items()]
    rows += [f"| {k} | {', '.join(map(str, slstm_shape))} | {v * 1e3:.2f} |" for k, v in s.items()]
    mg = t["MinGRU fused"]
    rows += ["", "| target | measured | goal | met |", "|---|---:|---|---|",
             _target("gatedrnn.GRU fused / MinGRU fused", t["gatedrnn.GRU fused"] / mg, ">= 1.5"),
             _target("torch.nn.GRU / MinGRU fused", t["torch.nn.GRU"] / mg, ">= 3"),
             _target("MinLSTM fused / MinGRU fused", t["MinLSTM fused"] / mg, "<= 1.2"),
             _target("SLSTM reference / SLSTM fused", s["SLSTM reference"] / s["SLSTM fused"], ">= 3")]
    return rows


def heads_rows(cells: list[str], repeats: int, quick: bool = False) -> list[str]:
    """num_heads=1 against num_heads=4 (fused, training) per cell, with torch.nn's dense peer."""
    T, B, I, H = shape = QUICK_HEADS if quick else HEADS_SHAPE
    rows = [f"| training at {T}, {B}, {I}, {H} | torch.nn ms | 1 head ms | {HEADS} heads ms | "
            f"1 head / {HEADS} heads | goal |", "|---|---:|---:|---:|---:|---|"]
    for cell in cells:
        torch.manual_seed(0)
        try:
            many = build(cell, I, H, num_heads=HEADS)
        except TypeError as err:  # the module has no num_heads (yet)
            rows.append(f"| {cell.upper()} | n/a: {' '.join(str(err).split())} |||||")
            continue
        t = _times({"torch.nn": peer(cell, I, H), "one": build(cell, I, H), "many": many}, shape,
                   repeats)
        goal = ">= 1.3" if cell == "lstm" else ""
        rows.append(f"| {cell.upper()} | {t['torch.nn'] * 1e3:.2f} | {t['one'] * 1e3:.2f} | "
                    f"{t['many'] * 1e3:.2f} | {t['one'] / t['many']:.2f} | {goal} |")
    return rows
