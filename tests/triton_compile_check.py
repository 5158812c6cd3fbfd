"""Compile every Triton kernel of the engine for real GPUs, without a GPU, and count its registers.

The interpreter runs a kernel's Python; it does not type-check it as the compiler does (loop-carried
types, constexpr branches, pointer arithmetic). triton ships the whole compiler, ptxas included,
so each kernel is lowered here to a cubin for an sm_80 (A100) and an sm_90 (H100/H200) target, with
the launch options the engine uses (warps by width), at the widest shapes it takes: rows of
H = 1024, scans of 32 × 32, heads of 16 and 64 units. For sm_90, ptxas -v then reports registers
and spills; a kernel spilling more than SPILL_LIMIT bytes fails. Run as a script with
TRITON_INTERPRET unset (``tests/test_triton_engine.py`` does); the last line is "compiled N kernels".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("run without TRITON_INTERPRET=1: the interpreter has no compiler")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from gatedrnn.engines.triton import (  # noqa: E402
    common,
    gru,
    gru_heads,
    lstm,
    lstm_heads,
    minrnn,
    slstm,
    slstm_heads,
)

INTS, FLOATS, INT_POINTERS = {"H", "T", "B", "n_chunks"}, {"eps"}, {"LEN", "SIZES"}
ON = dict.fromkeys(("MASK", "PEEP", "LN", "ZONE_H", "ZONE_C", "HAS_BH"), True)
OFF = dict.fromkeys(ON, False)
SPILL_LIMIT = 64  # bytes: the head-wise sLSTM at d = 64 spills 32 (its weights fill the registers)
# The ptxas that reads triton 3.9's PTX (9.x); triton's own "ptxas" is older.
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas-blackwell"


def flags(fn, values: dict) -> dict:
    return {k: v for k, v in values.items() if k in fn.arg_names}


def kernels() -> list:
    """(kernel, constexprs, launch options): every kernel with its variants all on and all off."""
    out = []
    row = {k: v for k, v in common.row_launch(1024).items() if k != "BLOCK"}
    for fn in (lstm._step, lstm._step_back, gru._step_after, gru._step_after_back, gru._step_n,
               gru._step_n_back):
        for v in (ON, OFF):
            out.append((fn, {**flags(fn, v), "BLOCK": 1024}, row))
    for fn in (gru._step_rz, gru._step_rz_back, slstm._step, slstm._step_back):
        out.append((fn, {"BLOCK": 1024}, row))
    chunk, blk = minrnn._launch_shape(1000, 1024)
    for fn in (minrnn._scan, minrnn._scan_back):
        for kind, gates in ((0, 2), (1, 3)):
            out.append((fn, {"KIND": kind, "GATES": gates, "CHUNK": chunk, "BLOCK": blk},
                        common.LAUNCH))
    for fn in (slstm_heads._loop, slstm_heads._loop_back, lstm_heads._loop, lstm_heads._loop_back,
               gru_heads._loop, gru_heads._loop_back):
        for v, reverse, prec, d in ((ON, False, "ieee", 16), (OFF, True, "tf32", 64)):
            out.append((fn, {**flags(fn, v), "REVERSE": reverse, "PREC": prec, "D": d,
                             "BB": common.HEAD_ROWS}, common.head_launch(d)))
    return out


def compile_one(fn, constexprs: dict, options: dict, target: GPUTarget):
    names = fn.arg_names
    signature = {}
    for n in names:
        signature[n] = ("constexpr" if n in constexprs else "i32" if n in INTS else
                        "fp32" if n in FLOATS else "*i32" if n in INT_POINTERS else "*fp32")
    src = ASTSource(fn=fn, signature=signature,
                    constexprs={(names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(src, target=target, options=dict(options))


def registers(ptx: str) -> tuple[int, int]:
    """(registers, spilled bytes) of a kernel's PTX for sm_90a, by ptxas -v."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.ptx"
        path.write_text(ptx)
        out = subprocess.run([str(PTXAS), "-v", "--gpu-name", "sm_90a", str(path), "-o",
                              str(path.with_suffix(".o"))], capture_output=True, text=True)
    text = out.stdout + out.stderr
    used = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores", text)
    if used is None or spill is None:
        raise RuntimeError(f"ptxas -v said:\n{text}")
    return int(used.group(1)), int(spill.group(1))


def main() -> None:
    warnings.simplefilter("error")
    n, heavy = 0, []
    for arch in (80, 90):
        for fn, constexprs, options in kernels():
            k = compile_one(fn, constexprs, options, GPUTarget("cuda", arch, 32))
            line = f"sm_{arch} {fn.__name__} {constexprs} warps={options.get('num_warps', 4)}"
            if arch == 90 and PTXAS.exists():
                regs, spilled = registers(k.asm["ptx"])
                line += f": {regs} registers, {spilled} bytes spilled"
                if spilled > SPILL_LIMIT:
                    heavy.append(line)
            print(line)
            n += 1
    if heavy:
        sys.exit("spills past the limit:\n" + "\n".join(heavy))
    print(f"compiled {n} kernels")


if __name__ == "__main__":
    main()
