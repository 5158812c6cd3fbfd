"""The fused engine against torch's own kernel (engine="native") alone, two contenders per shape.

The full benchmark (``benchmarks/speed.py``) interleaves five contenders; this one times only the
two engines ``gatedrnn.engines.dispatch.TABLE`` chooses between, to check a row of the table.
``--peer`` adds torch.nn (same weights) and reports torch.nn's time over each engine's, as the
table's rows quote them.

Usage: python benchmarks/fused_vs_native.py [--cell lstm] [--mode training] [--repeats 7]
                                            [--shapes "100,32,128,128;100,64,256,256"]
                                            [--threads 2] [--peer]
                                            [--packed-gemm off|inference|always]
"""

from __future__ import annotations

import argparse

import torch

import gatedrnn
from gatedrnn.engines.kernels import packed
from gatedrnn.toolkit.bench_common import fastest, peer, step

SHAPES = "100,32,128,128;100,64,256,256;100,128,256,256;100,64,512,512;50,256,128,256"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--mode", choices=["inference", "training"], default="training")
    p.add_argument("--shapes", default=SHAPES, help="T,B,I,H[;T,B,I,H...]")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--peer", action="store_true", help="time torch.nn too (ratios against it)")
    p.add_argument("--packed-gemm", choices=packed.MODES, default=None,
                   help="where the fused engine runs the per-step product on a packed W_hh "
                        "(kernels.packed.MODE; default: the shipped setting)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.packed_gemm is not None:
        packed.MODE = a.packed_gemm
    if a.peer:
        print("| T, B, I, H | torch.nn ms | torch.nn / fused | torch.nn / native |\n"
              "|---|---:|---:|---:|")
    else:
        print("| T, B, I, H | fused ms | native ms | native / fused |\n|---|---:|---:|---:|")
    for spec in a.shapes.split(";"):
        T, B, I, H = (int(v) for v in spec.split(","))
        torch.manual_seed(0)
        cls = getattr(gatedrnn, a.cell.upper())
        fused, native = cls(I, H, engine="fused"), cls(I, H, engine="native")
        native.load_state_dict(fused.state_dict())
        x = torch.randn(T, B, I)
        fns = {"fused": step(fused, x, a.mode), "native": step(native, x, a.mode)}
        if a.peer:
            fns["torch.nn"] = step(peer(a.cell, I, H, like=fused), x, a.mode)
        t = fastest(fns, a.repeats)
        if a.peer:
            print(f"| {T}, {B}, {I}, {H} | {t['torch.nn'] * 1e3:.3f} | "
                  f"{t['torch.nn'] / t['fused']:.2f} | {t['torch.nn'] / t['native']:.2f} |", flush=True)
        else:
            print(f"| {T}, {B}, {I}, {H} | {t['fused'] * 1e3:.1f} | {t['native'] * 1e3:.1f} | "
                  f"{t['native'] / t['fused']:.2f} |", flush=True)

if __name__ == "__main__":
    main()
