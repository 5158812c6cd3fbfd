"""Compile every Triton kernel of the engine for real GPUs, without a GPU.

The interpreter runs a kernel's Python; it does not type-check it as the compiler does (loop-carried
types, constexpr branches, pointer arithmetic). triton ships the whole compiler, ptxas included,
so each kernel can be lowered to a cubin for an sm_80 (A100) and an sm_90 (H100/H200) target here.
Run as a script with TRITON_INTERPRET unset (``tests/test_triton_engine.py`` does); prints one
line per kernel and "compiled N kernels" last.
"""

from __future__ import annotations

import os
import sys
import warnings

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("run without TRITON_INTERPRET=1: the interpreter has no compiler")
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from gatedrnn.engines.triton import common, gru, lstm, minrnn, slstm, slstm_heads  # noqa: E402

INTS, FLOATS, INT_POINTERS = {"H", "T", "B", "n_chunks"}, {"eps"}, {"LEN"}
ON = dict.fromkeys(("PEEP", "LN", "ZONE_H", "ZONE_C", "HAS_BH"), True)
OFF = dict.fromkeys(ON, False)


def flags(fn, values: dict) -> dict:
    return {k: v for k, v in values.items() if k in fn.arg_names}


def kernels() -> list:
    """(kernel, constexprs) pairs: every kernel with its variants all on and all off."""
    out = []
    for fn in (lstm._step, lstm._step_back, gru._step_after, gru._step_after_back, gru._step_n,
               gru._step_n_back):
        for v in (ON, OFF):
            out.append((fn, {**flags(fn, v), "BLOCK": 64}))
    for fn in (gru._step_rz, gru._step_rz_back, slstm._step, slstm._step_back):
        out.append((fn, {"BLOCK": 64}))
    for fn in (minrnn._scan, minrnn._scan_back):
        for kind, gates in ((0, 2), (1, 3)):
            out.append((fn, {"KIND": kind, "GATES": gates, "CHUNK": 64, "BLOCK": 64}))
    for fn in (slstm_heads._loop, slstm_heads._loop_back):
        for reverse, prec, d in ((False, "ieee", 16), (True, "tf32", 64)):
            out.append((fn, {"REVERSE": reverse, "PREC": prec, "D": d, "BB": 16}))
    return out


def compile_one(fn, constexprs: dict, target: GPUTarget) -> int:
    names = fn.arg_names
    signature = {}
    for n in names:
        signature[n] = ("constexpr" if n in constexprs else "i32" if n in INTS else
                        "fp32" if n in FLOATS else "*i32" if n in INT_POINTERS else "*fp32")
    src = ASTSource(fn=fn, signature=signature,
                    constexprs={(names.index(k),): v for k, v in constexprs.items()})
    return len(triton.compile(src, target=target, options=dict(common.LAUNCH)).asm["cubin"])


def main() -> None:
    warnings.simplefilter("error")
    n = 0
    for arch in (80, 90):
        for fn, constexprs in kernels():
            size = compile_one(fn, constexprs, GPUTarget("cuda", arch, 32))
            print(f"sm_{arch} {fn.__name__} {constexprs}: cubin {size} bytes")
            n += 1
    print(f"compiled {n} kernels")


if __name__ == "__main__":
    main()
