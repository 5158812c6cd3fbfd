"""Training speed (forward + backward) of minGRU, minLSTM and sLSTM against their baselines, and of
head-wise recurrence: their speed targets. A thin script over ``gatedrnn bench --modes
targets,heads`` (``gatedrnn.toolkit.bench_cells``).

Usage: python benchmarks/cell_targets.py [--quick] [--repeats N] [--threads N] [--cells lstm,gru,slstm]

Groups (shape T, B, I, H), each timed interleaved, fastest of ``--repeats`` runs after a warm-up:
- MinGRU, MinLSTM (fused; and their log-space scan) vs gatedrnn.GRU(engine="fused") and
  torch.nn.GRU at (1000, 32, 256, 256);
- SLSTM fused vs its reference engine at (100, 32, 128, 128);
- heads: LSTM, GRU and SLSTM (fused), num_heads=1 vs num_heads=4 at (100, 64, 512, 512) (a cell
  whose module has no ``num_heads`` yet gets a row saying so).
The targets are printed next to the ratios they concern. ``--quick`` runs tiny shapes to
check that the script works; its figures mean nothing.
"""

from __future__ import annotations

import argparse

import torch

from gatedrnn.toolkit import bench_cells


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cells", default="lstm,gru,slstm", help="the cells of the heads table")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 7)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
          f"fastest of {repeats} interleaved runs\n")
    print("\n".join(bench_cells.target_rows(repeats, args.quick)) + "\n")
    cells = [c.strip() for c in args.cells.split(",") if c.strip() in ("lstm", "gru", "slstm")]
    print("\n".join(bench_cells.heads_rows(cells, repeats, args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
