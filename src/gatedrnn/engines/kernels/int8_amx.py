"""The int8 product on AMX tiles (Intel's Advanced Matrix Extensions), for many rows at once.

``tdpbusd`` multiplies a tile of 16 rows × 64 u8 inputs by a tile of 16 groups of 4 s8 weights ×
16 units and adds the exact sums to a 16 × 16 int32 tile: 16,384 multiply-adds in one
instruction, 8x the 2,048 of one ``vpdpbusd`` at a throughput of one per 16 cycles. Its weight
tile is exactly 16 consecutive groups of ``int8_gemm.pack``'s layout (rows 256 bytes apart, 16
units × 4 bytes each), so AMX reads the same packed weights as the VNNI kernel, provided the
packed K is a multiple of 64 (``pack`` pads so where AMX is on).

The micro-kernel (``_micro``) keeps 2 × 2 result tiles (32 rows × 32 units) in tiles 0-3, the two
input tiles in 4-5 and two weight tiles in 6-7, over the whole K loop; fewer than 32 rows use
one input tile and the tile rows of a shorter last chunk are set in the tile configuration
(``configure``), so no tile reads or writes past the rows it was given. Linux hands a process
AMX state only on request (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``), made once
here at import; where it fails, or LLVM's target lacks amx-int8, ``AVAILABLE`` is False.
"""

from __future__ import annotations

import ctypes
import sys

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core.registry import cpu_target
from numba.extending import intrinsic

_I8, _I64 = ir.IntType(8), ir.IntType(64)
_P8 = _I8.as_pointer()
K_TILE = 64  # input bytes per tile row: the packed K must be a multiple of this
MIN_ROWS = 4  # from this many rows, a product runs on AMX (below it, VNNI: one row in 16 used)


def _request() -> bool:
    features = cpu_target.target_context.codegen()._tm_features
    if "+amx-int8" not in features or "+amx-tile" not in features or sys.platform != "linux":
        return False
    try:  # SYS_arch_prctl = 158, ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 (x86-64)
        return ctypes.CDLL(None, use_errno=True).syscall(158, 0x1023, 18) == 0
    except (OSError, AttributeError):
        return False


AVAILABLE = _request()


def _decl(module: ir.Module, name: str, args: list[ir.Type]) -> ir.Function:
    return module.globals.get(name) or ir.Function(module, ir.FunctionType(ir.VoidType(), args),
                                                   name)


def _micro(module: ir.Module, ma: int) -> ir.Function:
    """void f(u8* x, i64 x_stride, i8* w, i32* out, i64 out_stride, i64 k_tiles) (strides in
    bytes): out[r, u] = Σ x[r, k] · w (32 units: u < 16 from w, u ≥ 16 from w + 64 bytes) for the
    rows of ``ma`` input tiles (tile 4: rows 0-15, tile 5: rows 16-31)."""
    name = f"gatedrnn_int8_amx_{ma}x2"
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [_P8, _I64, _P8, _P8, _I64, _I64]),
                     name)
    fn.linkage = "linkonce_odr"
    x, xs, w, out, os_, kt = fn.args
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    zero = _decl(module, "llvm.x86.tilezero", [_I8])
    load = _decl(module, "llvm.x86.tileloadd64", [_I8, _P8, _I64])
    dot = _decl(module, "llvm.x86.tdpbusd", [_I8, _I8, _I8])
    store = _decl(module, "llvm.x86.tilestored64", [_I8, _P8, _I64])
    t8 = lambda v: ir.Constant(_I8, v)  # noqa: E731
    c = lambda v: ir.Constant(_I64, v)  # noqa: E731
    for r in range(ma):
        for q in range(2):
            b.call(zero, [t8(2 * r + q)])
    b.branch(loop)
    b.position_at_end(loop)
    k = b.phi(_I64)
    k.add_incoming(c(0), entry)
    for r in range(ma):
        b.call(load, [t8(4 + r), b.gep(x, [b.add(b.mul(c(r * 16), xs), b.mul(k, c(K_TILE)))]), xs])
    for q in range(2):  # 16 groups of 4 inputs per weight tile: 16 · 256 bytes of packed rows
        b.call(load, [t8(6 + q), b.gep(w, [b.add(b.mul(k, c(16 * 256)), c(q * 64))]), c(256)])
    for r in range(ma):
        for q in range(2):
            b.call(dot, [t8(2 * r + q), t8(4 + r), t8(6 + q)])
    k1 = b.add(k, c(1))
    k.add_incoming(k1, loop)
    b.cbranch(b.icmp_signed("<", k1, kt), loop, done)
    b.position_at_end(done)
    for r in range(ma):
        for q in range(2):
            b.call(store, [t8(2 * r + q), b.gep(out, [b.add(b.mul(c(r * 16), os_), c(q * 64))]),
                           os_])
    b.ret_void()
    return fn


@intrinsic
def _amx(typingctx, x, xs, w, out, os_, kt, ma):
    """Call ``_micro(ma)`` on addresses (intp); ma a literal 1 or 2."""
    if not isinstance(ma, types.IntegerLiteral):
        return None

    def codegen(context, builder, signature, args):
        fn = _micro(builder.module, signature.args[6].literal_value)
        builder.call(fn, [builder.inttoptr(args[0], _P8), args[1], builder.inttoptr(args[2], _P8),
                          builder.inttoptr(args[3], _P8), args[4], args[5]])
    return types.void(x, xs, w, out, os_, kt, ma), codegen


@intrinsic
def _load_config(typingctx, cfg):
    def codegen(context, builder, signature, args):
        builder.call(_decl(builder.module, "llvm.x86.ldtilecfg", [_P8]),
                     [builder.inttoptr(args[0], _P8)])
    return types.void(cfg), codegen


@intrinsic
def _release(typingctx):
    def codegen(context, builder, signature, args):
        builder.call(_decl(builder.module, "llvm.x86.tilerelease", []), [])
    return types.void(), codegen


@numba.njit(inline="always", nogil=True, cache=True)
def configure(cfg, m1, m2):
    """Load a tile configuration: palette 1, every tile 64 bytes wide; input and result tiles of
    the first 16 rows m1 rows high, of the second 16 rows m2 (0: unused), weight tiles 16."""
    cfg[:] = 0
    cfg[0] = 1
    for t in range(8):
        cfg[16 + 2 * t] = 64
    rows = (m1, m1, m2, m2, m1, m2, 16, 16)  # tiles 0-3 results, 4-5 inputs, 6-7 weights
    for t in range(8):
        cfg[48 + t] = max(rows[t], 1)
    _load_config(cfg.ctypes.data)


@numba.njit(inline="always", nogil=True, cache=True)
def gemm(xu, lo, hi, wp, acc):
    """``int8_gemm.qgemm`` on AMX (same arguments, K a multiple of 64): blocks outer, 32-row
    chunks inner, two calls of 32 units per 64-unit block."""
    nblk, groups = wp.shape[0], wp.shape[1]
    xs, os_ = xu.shape[1], acc.shape[1] * 4
    bs, kt = groups * 256, groups // 16
    xp, wpp, op = xu.ctypes.data, wp.ctypes.data, acc.ctypes.data
    cfg = np.empty(64, np.uint8)
    full = hi - lo - (hi - lo) % 32  # rows in whole 32-row chunks
    if full:
        configure(cfg, 16, 16)
        for j in range(nblk):
            for r in range(lo, lo + full, 32):
                for q in range(2):
                    _amx(xp + r * xs, xs, wpp + j * bs + q * 128, op + r * os_ + j * 256 + q * 128,
                         os_, kt, 2)
    m = hi - lo - full
    if m:
        r = lo + full
        configure(cfg, min(m, 16), max(m - 16, 0))
        for j in range(nblk):
            for q in range(2):
                if m > 16:
                    _amx(xp + r * xs, xs, wpp + j * bs + q * 128,
                         op + r * os_ + j * 256 + q * 128, os_, kt, 2)
                else:
                    _amx(xp + r * xs, xs, wpp + j * bs + q * 128,
                         op + r * os_ + j * 256 + q * 128, os_, kt, 1)
    _release()
