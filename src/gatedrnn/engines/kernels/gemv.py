"""The float32 recurrent product of one or two rows against a packed W_hh, in LLVM IR.

With one or two rows, each step's product a W_hh^T is a GEMV that streams all of W_hh (4H × H
floats for the LSTM) from L2, and the step waits for it. ``common.prod``'s loops compute four dot
products at a time, each a horizontal sum of K products, and reach about 80 GB/s from L2 here;
this kernel keeps up to 16 vectors of outputs in registers over the whole K loop and adds one
input's column of W at a time,

    c[r, j] = fma(a[r, K−1], W[j, K−1], ... fma(a[r, 1], W[j, 1], fma(a[r, 0], W[j, 0], c[r, j])))

so every output is one chain of fused multiply-adds in the order k = 0 … K−1. That order does not
depend on which outputs share a call, how they are blocked, or the vector width. It is not the
order of ``common.prod``'s dot products (c = a W^T, the forward pass's product): the loops of one
or two rows that use this product differ from the others in the last bits of float32, as torch's
GEMV and GEMM do. (The published learning runs train 32 rows or more, which never take it.) It
is the order of ``common.prod``'s other form, c = a W (rows of W scaled and added, the backward
pass's δh = δa W_hh): on W^T packed by ``pack_t`` it gives that product's bits.

Layout (``pack``): W's rows padded to blocks of 64 outputs, each block stored k-major::

    packed[blk, k, u] = W[64·blk + u, k]        (nblk, K, 64) float32

so that each input's 64 weights are 256 contiguous bytes: 4 zmm registers of 16 outputs (8 ymm
where LLVM targets AVX2; the IR is plain vectors and ``llvm.fma``, correct on any CPU).
"""

from __future__ import annotations

import threading

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .common import JIT

UNITS = 64  # outputs per packed block
_F32, _I32, _I64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
_LANES = 16
_V = ir.VectorType(_F32, _LANES)
_NV = UNITS // _LANES  # vectors per block


def _micro(module: ir.Module, mr: int, nb: int) -> ir.Function:
    """void f(float* a, i64 a_row_stride, float* w, i64 w_block_stride, float* c, i64 c_row_stride,
    i64 K): c[r, 64·j + u] += Σ_k a[r, k] · w[j, k, u] for r < mr, j < nb, one fma chain per
    output in the order of k (strides in elements)."""
    name = f"gatedrnn_f32_gemv_{mr}x{nb}"
    if name in module.globals:
        return module.globals[name]
    pf = _F32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [pf, _I64, pf, _I64, pf, _I64, _I64]),
                     name)
    fn.linkage = "linkonce_odr"  # defined in every module that uses it; the linker keeps one
    a, as_, w, ws, c, cs, K = fn.args
    entry, loop, done = (fn.append_basic_block(n) for n in ("entry", "loop", "done"))
    fma = module.globals.get("llvm.fma.v16f32") or ir.Function(
        module, ir.FunctionType(_V, [_V, _V, _V]), "llvm.fma.v16f32")
    b = ir.IRBuilder(entry)
    k_ = lambda v: ir.Constant(_I64, v)  # noqa: E731

    def at(base: ir.Value, off: ir.Value) -> ir.Value:
        return b.bitcast(b.gep(base, [off]), _V.as_pointer())

    offs = [(r, b.add(b.mul(k_(r), cs), k_(j * UNITS + q * _LANES)))
            for r in range(mr) for j in range(nb) for q in range(_NV)]
    init = [b.load(at(c, off), align=4) for _, off in offs]
    b.branch(loop)  # K ≥ 1: ``gemv`` returns before calling for K = 0
    b.position_at_end(loop)
    kk = b.phi(_I64)
    kk.add_incoming(k_(0), entry)
    accs = [b.phi(_V) for _ in offs]
    for acc, v in zip(accs, init):
        acc.add_incoming(v, entry)
    xb = []  # each row's input k, broadcast to every lane
    for r in range(mr):
        x = b.load(b.gep(a, [b.add(b.mul(k_(r), as_), kk)]), align=4)
        one = b.insert_element(ir.Constant(_V, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
        xb.append(b.shuffle_vector(one, ir.Constant(_V, ir.Undefined), ir.Constant(
            ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES)))
    wv = [b.load(at(w, b.add(b.mul(k_(j), ws), b.add(b.mul(kk, k_(UNITS)), k_(q * _LANES)))),
                 align=4) for j in range(nb) for q in range(_NV)]
    new = []
    for i, (r, _) in enumerate(offs):
        new.append(b.call(fma, [xb[r], wv[i % (nb * _NV)], accs[i]]))
        accs[i].add_incoming(new[-1], loop)
    k1 = b.add(kk, k_(1))
    kk.add_incoming(k1, loop)
    b.cbranch(b.icmp_signed("<", k1, K), loop, done)
    b.position_at_end(done)
    for v, (_, off) in zip(new, offs):
        b.store(v, at(c, off), align=4)
    b.ret_void()
    return fn


@intrinsic
def _f32gemv(typingctx, a, as_, w, ws, c, cs, K, mr, nb):
    """Call the micro-kernel ``_micro(mr, nb)`` on addresses (intp); mr, nb literal ints."""
    if not all(isinstance(t, types.IntegerLiteral) for t in (mr, nb)):
        return None
    sig = types.void(a, as_, w, ws, c, cs, K, mr, nb)

    def codegen(context, builder, signature, args):
        m, n = (t.literal_value for t in signature.args[7:9])
        fn = _micro(builder.module, m, n)
        pf = _F32.as_pointer()
        builder.call(fn, [builder.inttoptr(args[0], pf), args[1], builder.inttoptr(args[2], pf),
                          args[3], builder.inttoptr(args[4], pf), args[5], args[6]])
    return sig, codegen


@numba.njit(inline="always", **JIT)
def _rows(a, r0, mr, wp, c, count, tail):
    """``gemv`` for rows [r0, r0 + mr) (mr 1 or 2): outputs c[r, :count]."""
    K = wp.shape[1]
    # addresses as signed ints (numba types uintp + intp as a float)
    ap, as_ = np.int64(a.ctypes.data) + r0 * a.strides[0], a.strides[0] // 4
    cs = c.strides[0] // 4
    bs = K * UNITS
    base = np.int64(wp.ctypes.data)
    full = count // UNITS
    j = 0
    cp = np.int64(c.ctypes.data) + r0 * cs * 4
    # (the two branches differ in literal block shapes, which the intrinsic needs as constants)
    if mr == 1:
        while j + 4 <= full:
            _f32gemv(ap, as_, base + j * bs * 4, bs, cp + j * UNITS * 4, cs, K, 1, 4)
            j += 4
        while j < full:
            _f32gemv(ap, as_, base + j * bs * 4, bs, cp + j * UNITS * 4, cs, K, 1, 1)
            j += 1
    else:
        while j + 2 <= full:
            _f32gemv(ap, as_, base + j * bs * 4, bs, cp + j * UNITS * 4, cs, K, 2, 2)
            j += 2
        while j < full:
            _f32gemv(ap, as_, base + j * bs * 4, bs, cp + j * UNITS * 4, cs, K, 2, 1)
            j += 1
    rest = count - full * UNITS
    if rest:  # the last block's outputs through a 64-wide scratch (its padding weights are 0)
        for r in range(mr):
            for u in range(rest):
                tail[r, u] = c[r0 + r, full * UNITS + u]
        tp = np.int64(tail.ctypes.data)
        if mr == 1:
            _f32gemv(ap, as_, base + full * bs * 4, bs, tp, UNITS, K, 1, 1)
        else:
            _f32gemv(ap, as_, base + full * bs * 4, bs, tp, UNITS, K, 2, 1)
        for r in range(mr):
            for u in range(rest):
                c[r0 + r, full * UNITS + u] = tail[r, u]


@numba.njit(inline="always", **JIT)
def gemv(a, wp, c, tail):
    """c[r, j] += Σ_k a[r, k] W[j, k] for every row r of a (one or two at a time) and output
    j < c.shape[1] (W's rows): a (rows, K) and c float32 with contiguous rows, wp W packed by
    ``pack``, tail a (2, 64) float32 scratch."""
    R = a.shape[0]
    if wp.shape[1] == 0:
        return
    r = 0
    while r + 2 <= R:
        _rows(a, r, 2, wp, c, c.shape[1], tail)
        r += 2
    if r < R:
        _rows(a, r, 1, wp, c, c.shape[1], tail)


def _transpose16(module: ir.Module) -> ir.Function:
    """void f(float* src, i64 src_row_stride, float* dst, i64 dst_row_stride): dst[j, i] =
    src[i, j] for a 16 × 16 tile, in registers (four stages of lane-block swaps)."""
    name = "gatedrnn_f32_transpose16"
    if name in module.globals:
        return module.globals[name]
    pf = _F32.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [pf, _I64, pf, _I64]), name)
    fn.linkage = "linkonce_odr"
    src, ss, dst, ds = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def row(base: ir.Value, stride: ir.Value, i: int) -> ir.Value:
        return b.bitcast(b.gep(base, [b.mul(ir.Constant(_I64, i), stride)]), _V.as_pointer())

    rows = [b.load(row(src, ss, i), align=4) for i in range(_LANES)]
    blk = _LANES // 2
    while blk:  # swap the off-diagonal blk × blk blocks of every 2·blk × 2·blk block
        new = list(rows)
        for i in range(_LANES):
            if i & blk:
                continue
            j = i + blk
            lo = [l if not l & blk else _LANES + l - blk for l in range(_LANES)]
            hi = [l + blk if not l & blk else _LANES + l for l in range(_LANES)]
            new[i] = b.shuffle_vector(rows[i], rows[j], ir.Constant(ir.VectorType(_I32, _LANES), lo))
            new[j] = b.shuffle_vector(rows[i], rows[j], ir.Constant(ir.VectorType(_I32, _LANES), hi))
        rows = new
        blk //= 2
    for i, v in enumerate(rows):
        b.store(v, row(dst, ds, i), align=4)
    b.ret_void()
    return fn


@intrinsic
def _tr16(typingctx, src, ss, dst, ds):
    """Call ``_transpose16`` on addresses (intp)."""
    sig = types.void(src, ss, dst, ds)

    def codegen(context, builder, signature, args):
        pf = _F32.as_pointer()
        builder.call(_transpose16(builder.module), [builder.inttoptr(args[0], pf), args[1],
                                                     builder.inttoptr(args[2], pf), args[3]])
    return sig, codegen


@numba.njit(**JIT)
def _pack_into(w, out):
    """out[blk, k, u] = w[64·blk + u, k] for each row of w (the rest of out is the caller's
    zeros): 16 × 16 tiles through registers, the edges one by one."""
    N, K = w.shape
    ws = np.int64(w.strides[0] // 4)
    for i0 in range(0, N, 16):
        blk, u0 = i0 // UNITS, i0 % UNITS
        ob = out[blk]
        k0 = 0
        if i0 + 16 <= N:
            sp = np.int64(w.ctypes.data) + (i0 * ws) * 4
            dp = np.int64(ob.ctypes.data) + u0 * 4
            while k0 + 16 <= K:
                _tr16(sp + k0 * 4, ws, dp + k0 * UNITS * 4, np.int64(UNITS))
                k0 += 16
        for i in range(i0, min(i0 + 16, N)):
            for k in range(k0 if i0 + 16 <= N else 0, K):
                ob[k, i % UNITS] = w[i, k]


_SPARE = threading.local()  # each thread's packing buffer, reused: fresh pages cost more than the copy


def _buffer(N: int, K: int) -> np.ndarray:
    """This thread's packing buffer as (nblk, K, 64) for N outputs, 64-byte aligned, the padding
    outputs of the last block zero."""
    nblk = max(1, -(-N // UNITS))
    shape = (nblk, K, UNITS)
    size = nblk * K * UNITS
    raw = getattr(_SPARE, "buf", None)
    if raw is None or raw.size < size + 16:
        raw = _SPARE.buf = np.empty(size + 16, np.float32)
    lead = (-raw.ctypes.data % 64) // 4  # 64-byte aligned: no vector load straddles two lines
    out = raw[lead:lead + size].reshape(shape)
    if N % UNITS:
        out[-1] = 0.0  # padding outputs read zero weights
    return out


def pack(w: np.ndarray) -> np.ndarray:
    """W (N, K) float32 in ``gemv``'s layout, (nblk, K, 64), zeros past row N.

    The result lives in this thread's buffer until its next ``pack`` or ``pack_t``: the loops
    pack once per call and are done with it before the next (a fresh 1 MB array took 167 µs to
    pack into, mostly its pages being mapped; the copy itself about 20)."""
    out = _buffer(w.shape[0], w.shape[1])
    _pack_into(np.ascontiguousarray(w, np.float32), out)
    return out


@numba.njit(**JIT)
def _pack_t_into(w, out):
    """out[blk, k, u] = w[k, 64·blk + u]: w read once, row by row, each row cut into the blocks
    (the padding is the caller's zeros). (Block by block, with slices, took 2.4x as long: 64 against
    26 µs at (512, 128); a plain copy of w takes 8.)"""
    K, N = w.shape
    full = N // UNITS
    for k in range(K):
        row = w[k]
        for blk in range(full):
            dst = out[blk, k]
            base = blk * UNITS
            for u in range(UNITS):
                dst[u] = row[base + u]
        if full < out.shape[0]:
            dst = out[full, k]
            base = full * UNITS
            for u in range(N - base):
                dst[u] = row[base + u]


def pack_t(w: np.ndarray) -> np.ndarray:
    """W^T in ``gemv``'s layout for W (K, N) float32, so that ``gemv`` computes c += a W (the
    backward pass's δh = δa W_hh): (nblk, K, 64), a strided copy, no transpose. In this thread's
    buffer, as ``pack``'s result."""
    out = _buffer(w.shape[1], w.shape[0])
    _pack_t_into(np.asarray(w, np.float32), out)
    return out
