"""The int8 product of the int8 engine: u8 × s8 dot products on the CPU's VNNI instructions.

Every product of the int8 engine (the input projection of a whole sequence and the recurrent
product of each step) is one call of ``qgemm``::

    acc[r, j] = Σ_k xu[r, k] · w[j, k]          xu = xq + 128 (uint8), w int8, acc int32

from which the caller takes the exact signed sum Σ_k xq·w = acc − comp[j], with
comp[j] = 128 Σ_k w[j, k] computed once by ``pack``. The unsigned × signed form is what the
instruction computes: ``vpdpbusd`` (AVX-512 VNNI, and AVX-VNNI's 256-bit form) multiplies 4
unsigned bytes by 4 signed bytes and adds the four products to a 32-bit lane without saturation,
so the sums are exact for every K this package meets (|acc| < 2^31 while K < 65,000).

numba has no VNNI intrinsic, and LLVM does not vectorise a plain int8 dot loop into it (measured:
the loop became ``vpdpwssd``, the 16-bit form, at 8x the time), so the micro-kernel is written in
LLVM IR (``_micro``) and called through a numba intrinsic. Layout (``pack``): W (N, K) is padded
to (Np, Kp), Np a multiple of 64 units, Kp of 4 (64 where AMX is on), in blocks of 64 units::

    packed[blk, kg, u, q] = W[64·blk + u, 4·kg + q]      (nblk, Kp/4, 64, 4) int8

so that for each group of 4 inputs a block is 256 contiguous bytes: 4 zmm registers holding 16
units each, multiplied against the 4 input bytes broadcast to all lanes. The micro-kernel
computes ``mr`` rows × ``nb`` blocks at once (accumulators in registers over the whole K loop):
4 rows × 1 block for several rows (16 accumulators, each weight load reused by 4 rows), 1 row ×
4 blocks for a single row (16 independent accumulator chains hide vpdpbusd's latency). Measured
on a Xeon (Sapphire Rapids class, one core, shared machine): (1600 × 512) @ (512 × 4096) at
160-174 GMAC/s; one row against (2048 × 512) in 11-18 µs, the speed of streaming 1 MB of
weights from L2. Blocks are the outer loop and rows the inner one, so a block's weights are read
from memory once per call and reused from L1 by every row.

ISA (``ISA``, chosen once from the features numba compiles for, never from the running CPU's
name): 3 = AMX (``int8_amx``: from ``amx.MIN_ROWS`` rows, on tiles; fewer rows on AVX-512 VNNI),
1 = AVX-512 VNNI (16 lanes), 2 = AVX-VNNI (8 lanes, VEX), 0 = generic LLVM vector code
(zero/sign-extend, multiply, add four lanes; correct on any CPU, LLVM picks the instructions).
Measured (one core, shared machine, CPU time): 32 rows × (1024 × 256) 37 µs on VNNI, 20 µs on
AMX; 32 rows × (4096 × 1024) 513 against 208 µs; one row × (2048 × 512) 10 µs (VNNI).
``GATEDRNN_INT8_ISA=0`` (or 1, 2, 3) forces one, for testing. The kernels take the ISA as a token,
an empty array whose dtype names it (``token(isa)``: numba's literal ints would send every call
through the dispatcher's slow path, ~0.7 s), so each ISA compiles (and is cached) as its own
specialisation and the tests run the generic path on this CPU too.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.core.registry import cpu_target
from numba.extending import intrinsic, overload

from . import int8_amx as amx

UNITS = 64  # units per packed block
KG = 4  # inputs per group (one 32-bit lane of vpdpbusd)
_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)


def _target_isa() -> int:
    features = cpu_target.target_context.codegen()._tm_features  # what numba compiles for
    if "+avx512vnni" in features and "+avx512bw" in features:
        return 3 if amx.AVAILABLE else 1
    if "+avxvnni" in features:
        return 2
    return 0


ISA_NAMES = {0: "generic", 1: "avx512_vnni", 2: "avx_vnni", 3: "amx_int8+avx512_vnni"}
TARGET_ISA = _target_isa()
ISA = int(os.environ.get("GATEDRNN_INT8_ISA", TARGET_ISA))
if ISA not in ISA_NAMES or (ISA == 3 and TARGET_ISA != 3) or (ISA == 1 and TARGET_ISA not in (1, 3)) \
        or (ISA == 2 and TARGET_ISA == 0):
    raise RuntimeError(f"GATEDRNN_INT8_ISA={ISA} is not available here (target: {TARGET_ISA})")


_TOKEN_DTYPES = (np.uint8, np.uint16, np.uint32, np.uint64)  # index = ISA


def token(isa: int) -> np.ndarray:
    """The ISA as the kernels take it: an empty array of the dtype ``_TOKEN_DTYPES[isa]``."""
    return np.empty(0, _TOKEN_DTYPES[isa])


def _isa_of(tok: types.Type) -> int:
    return [numba.from_dtype(np.dtype(d)) for d in _TOKEN_DTYPES].index(tok.dtype)


def _dot4(b: ir.IRBuilder, module: ir.Module, isa: int, acc: ir.Value, xu: ir.Value,
          w: ir.Value, lanes: int) -> ir.Value:
    """acc + the sums of 4 u8 × s8 products per 32-bit lane (vpdpbusd's semantics)."""
    V = ir.VectorType(_I32, lanes)
    if isa:
        name = f"llvm.x86.avx512.vpdpbusd.{32 * lanes}"
        fn = module.globals.get(name) or ir.Function(module, ir.FunctionType(V, [V, V, V]), name)
        return b.call(fn, [acc, xu, w])
    B, W = ir.VectorType(_I8, 4 * lanes), ir.VectorType(_I32, 4 * lanes)
    prod = b.mul(b.zext(b.bitcast(xu, B), W), b.sext(b.bitcast(w, B), W))
    for q in range(4):  # lane i of part q is product 4·i + q
        part = b.shuffle_vector(prod, ir.Constant(W, ir.Undefined),
                                ir.Constant(V, [4 * i + q for i in range(lanes)]))
        acc = b.add(acc, part)
    return acc


def _many_rows(xu, lo, hi, wp, acc, isa):
    """Run the product on AMX and return True where ``isa`` is AMX and K fits its tiles."""


@overload(_many_rows, inline="always", jit_options=dict(nogil=True))
def _many_rows_impl(xu, lo, hi, wp, acc, isa):
    if _isa_of(isa) != 3:  # chosen while typing: no AMX instruction reaches other targets
        return lambda xu, lo, hi, wp, acc, isa: False

    def on_tiles(xu, lo, hi, wp, acc, isa):
        if wp.shape[1] % (amx.K_TILE // KG):
            return False
        amx.gemm(xu, lo, hi, wp, acc)
        return True
    return on_tiles


def _micro(module: ir.Module, mr: int, nb: int, isa: int) -> ir.Function:
    """void f(u8* x, i64 x_row_stride, i8* w, i64 w_block_stride, i32* out, i64 out_row_stride,
    i64 groups): out[r, 64·j + u] = Σ_kg Σ_q x[r, 4·kg + q] · w[j, kg, u, q] for r < mr, j < nb
    (strides in elements; out overwritten)."""
    isa = 1 if isa == 3 else isa  # AMX's rows below amx.MIN_ROWS run on AVX-512 VNNI
    name = f"gatedrnn_int8_u8s8_{ISA_NAMES[isa]}_{mr}x{nb}"
    if name in module.globals:
        return module.globals[name]
    lanes = 8 if isa == 2 else 16
    nv = UNITS // lanes  # vectors per block
    V = ir.VectorType(_I32, lanes)
    p8 = _I8.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [p8, _I64, p8, _I64, _I32.as_pointer(),
                                                             _I64, _I64]), name)
    fn.linkage = "linkonce_odr"  # defined in every module that uses it; the linker keeps one
    x, xs, w, ws, out, os_, groups = fn.args
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    kg = b.phi(_I64)
    kg.add_incoming(ir.Constant(_I64, 0), entry)
    accs = [b.phi(V) for _ in range(mr * nb * nv)]
    for a in accs:
        a.add_incoming(ir.Constant(V, None), entry)

    def at(base: ir.Value, off: ir.Value, ty: ir.Type) -> ir.Value:
        return b.bitcast(b.gep(base, [off]), ty.as_pointer())

    c = lambda v: ir.Constant(_I64, v)  # noqa: E731
    xb = []  # each row's 4 bytes of this group, broadcast to every lane
    for r in range(mr):
        v = b.load(at(x, b.add(b.mul(c(r), xs), b.mul(kg, c(KG))), _I32), align=1)
        one = b.insert_element(ir.Constant(V, ir.Undefined), v, ir.Constant(_I32, 0))
        xb.append(b.shuffle_vector(one, ir.Constant(V, ir.Undefined), ir.Constant(V, [0] * lanes)))
    wv = [b.load(at(w, b.add(b.mul(c(j), ws), b.add(b.mul(kg, c(UNITS * KG)), c(q * lanes * 4))),
                    V), align=1)
          for j in range(nb) for q in range(nv)]
    new: list[ir.Value] = []
    for r in range(mr):
        for i in range(nb * nv):
            new.append(_dot4(b, module, isa, accs[len(new)], xb[r], wv[i], lanes))
            accs[len(new) - 1].add_incoming(new[-1], loop)
    kg1 = b.add(kg, c(1))
    kg.add_incoming(kg1, loop)
    b.cbranch(b.icmp_signed("<", kg1, groups), loop, done)
    b.position_at_end(done)
    for r in range(mr):
        for i in range(nb * nv):
            off = b.add(b.mul(c(r), os_), c((i // nv) * UNITS + (i % nv) * lanes))
            b.store(new[r * nb * nv + i], at(out, off, V), align=4)
    b.ret_void()
    return fn


@intrinsic
def _u8s8(typingctx, x, xs, w, ws, out, os_, groups, mr, nb, isa):
    """Call the micro-kernel ``_micro(mr, nb, isa)`` on addresses (intp); mr, nb literal ints,
    isa a ``token``."""
    if not all(isinstance(t, types.IntegerLiteral) for t in (mr, nb)):
        return None
    sig = types.void(x, xs, w, ws, out, os_, groups, mr, nb, isa)

    def codegen(context, builder, signature, args):
        m, n = (t.literal_value for t in signature.args[7:9])
        fn = _micro(builder.module, m, n, _isa_of(signature.args[9]))
        p8 = _I8.as_pointer()
        builder.call(fn, [builder.inttoptr(args[0], p8), args[1], builder.inttoptr(args[2], p8),
                          args[3], builder.inttoptr(args[4], _I32.as_pointer()), args[5], args[6]])
    return sig, codegen


@numba.njit(inline="always", nogil=True, cache=True)
def qgemm(xu, lo, hi, wp, acc, isa):
    """acc[r, :Np] = Σ_k xu[r, k] · W[:, k] for rows r in [lo, hi): xu (M, Kp) uint8 (C-contiguous),
    wp the packed (nblk, Kp/4, 256) int8 of ``pack``, acc (M, ≥ Np) int32 (C-contiguous).
    ``isa`` is a ``token``."""
    if hi - lo >= amx.MIN_ROWS and _many_rows(xu, lo, hi, wp, acc, isa):
        return
    nblk, groups = wp.shape[0], wp.shape[1]
    xs, os_ = xu.shape[1], acc.shape[1]
    bs = groups * UNITS * KG
    xp, wpp, op = xu.ctypes.data, wp.ctypes.data, acc.ctypes.data
    j = 0
    if hi - lo == 1:  # one row: four blocks at a time, for independent accumulator chains
        while j + 4 <= nblk:
            _u8s8(xp + lo * xs, xs, wpp + j * bs, bs, op + (lo * os_ + j * UNITS) * 4, os_,
                  groups, 1, 4, isa)
            j += 4
    while j < nblk:
        r = lo
        while r + 4 <= hi:
            _u8s8(xp + r * xs, xs, wpp + j * bs, bs, op + (r * os_ + j * UNITS) * 4, os_,
                  groups, 4, 1, isa)
            r += 4
        while r < hi:
            _u8s8(xp + r * xs, xs, wpp + j * bs, bs, op + (r * os_ + j * UNITS) * 4, os_,
                  groups, 1, 1, isa)
            r += 1
        j += 1


def padded(n: int, m: int) -> int:
    """n rounded up to a multiple of m."""
    return -(-n // m) * m


def pack(wq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The layout ``qgemm`` reads, for an int8 weight (N, K): (packed (nblk, Kp/4, 256) int8,
    comp (Np,) int32 = 128 Σ_k w[j, k], zero on padding units). Padding weights are zero, so the
    padding inputs (any byte) add nothing."""
    if wq.dtype != torch.int8 or wq.dim() != 2:
        raise ValueError(f"pack takes a 2-D int8 weight, got {tuple(wq.shape)} {wq.dtype}")
    N, K = wq.shape
    Np, Kp = padded(max(N, 1), UNITS), padded(max(K, 1), amx.K_TILE if TARGET_ISA == 3 else KG)
    full = torch.zeros(Np, Kp, dtype=torch.int8)
    full[:N, :K] = wq
    packed = full.reshape(Np // UNITS, UNITS, Kp // KG, KG).permute(0, 2, 1, 3)
    comp = torch.zeros(Np, dtype=torch.int32)
    comp[:N] = 128 * wq.to(torch.int32).sum(1)
    return packed.reshape(Np // UNITS, Kp // KG, UNITS * KG).contiguous(), comp


def as_u8_rows(M: int, K: int) -> np.ndarray:
    """A (M, Kp) uint8 buffer for quantized inputs (the padding columns hold 128, i.e. 0), Kp as
    ``pack`` pads K."""
    return np.full((M, padded(max(K, 1), amx.K_TILE if TARGET_ISA == 3 else KG)), 128, np.uint8)
