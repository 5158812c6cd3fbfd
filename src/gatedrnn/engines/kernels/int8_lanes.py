"""The LSTM's gate pass of the int8 loops on 16 float32 lanes at once, written in LLVM IR.

Per unit the LSTM step computes three sigmoids and two tanh (``common.sigmoid32``/``tanh32``: a
rational function each, so a division each). numba's loops vectorise them, but LLVM picks 8-lane
(256-bit) vectors on the CPUs that prefer them (Sapphire Rapids among them), where the gate pass
took 4.4 ns a unit: more than the int8 product at B = 32, H = 256. This file builds the same
arithmetic on ``<16 x float>`` (one zmm register on AVX-512; LLVM splits it where the CPU has
narrower vectors), for 16 units per call::

    c' = σ(a_f) ⊙ c + σ(a_i) ⊙ tanh(a_g),   h = σ(a_o) ⊙ tanh(c')

with the constants, clamps and saturation of ``common`` (tanh exactly ±1 beyond ±9.01, σ exactly
0 or 1 beyond its thresholds, a NaN passed through), so it agrees with the scalar form within a
float32 rounding or two (the tests bound it against the int8 oracle as before).
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from . import common
from .common import JIT, sigmoid, tanh

LANES = 16
_F = ir.FloatType()
_V = ir.VectorType(_F, LANES)
_P = _V.as_pointer()
_P_COEF = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
           5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
_Q_COEF = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def _k(v: float) -> ir.Constant:
    return ir.Constant(_V, [float(common._F32(v))] * LANES)


class _Math:
    """Builders for the vector forms of ``common``'s float32 functions."""

    def __init__(self, b: ir.IRBuilder) -> None:
        self.b = b
        m = b.module
        self.fma = m.globals.get("llvm.fma.v16f32") or ir.Function(
            m, ir.FunctionType(_V, [_V, _V, _V]), "llvm.fma.v16f32")

    def min(self, x: ir.Value, c: ir.Value) -> ir.Value:  # numba's min(x, c): x unless c < x
        return self.b.select(self.b.fcmp_ordered("<", c, x), c, x)

    def max(self, x: ir.Value, c: ir.Value) -> ir.Value:  # numba's max(x, c): x unless c > x
        return self.b.select(self.b.fcmp_ordered(">", c, x), c, x)

    def step(self, cond: ir.Value) -> ir.Value:  # 1.0 where cond, else 0.0
        return self.b.uitofp(cond, _V)

    def rational(self, x: ir.Value) -> ir.Value:  # common._tanh32_rational
        b = self.b
        x = self.max(self.min(x, _k(common._CLAMP)), _k(-common._CLAMP))
        x2 = b.fmul(x, x)
        p = _k(_P_COEF[0])
        for c in _P_COEF[1:]:
            p = b.call(self.fma, [p, x2, _k(c)])
        q = _k(_Q_COEF[0])
        for c in _Q_COEF[1:]:
            q = b.call(self.fma, [q, x2, _k(c)])
        return b.fdiv(b.fmul(x, p), q)

    def tanh(self, x: ir.Value) -> ir.Value:  # common.tanh32
        b = self.b
        s = self.min(b.fadd(self.rational(x), self.step(b.fcmp_ordered(">=", x, _k(common._TANH_ONE)))),
                     _k(1.0))
        return self.max(b.fsub(s, self.step(b.fcmp_ordered("<=", x, _k(-common._TANH_ONE)))),
                        _k(-1.0))

    def sigmoid(self, x: ir.Value) -> ir.Value:  # common.sigmoid32
        b = self.b
        r = b.call(self.fma, [_k(0.5), self.rational(b.fmul(_k(0.5), x)), _k(0.5)])
        s = self.min(b.fadd(r, self.step(b.fcmp_ordered(">=", x, _k(common._SIGMOID_ONE)))),
                     _k(1.0))
        return self.max(b.fsub(s, self.step(b.fcmp_ordered("<=", x, _k(common._SIGMOID_ZERO)))),
                        _k(0.0))


def _cell_fn(module: ir.Module) -> ir.Function:
    """void f(float* g, i64 H, float* c, float* h, float* y): the LSTM cell for 16 units, the
    gates at g, g + H, g + 2H, g + 3H (i|f|g|o), c updated in place, h written to h and y."""
    name = "gatedrnn_int8_lstm_cell16"
    if name in module.globals:
        return module.globals[name]
    p = _F.as_pointer()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [p, ir.IntType(64), p, p, p]), name)
    fn.linkage = "linkonce_odr"
    g, H, c, h, y = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    m = _Math(b)

    def load(ptr: ir.Value, gate: int = 0) -> ir.Value:
        at = b.gep(ptr, [b.mul(H, ir.Constant(ir.IntType(64), gate))]) if gate else ptr
        return b.load(b.bitcast(at, _P), align=4)

    cn = b.fadd(b.fmul(m.sigmoid(load(g, 1)), load(c)),
                b.fmul(m.sigmoid(load(g, 0)), m.tanh(load(g, 2))))
    b.store(cn, b.bitcast(c, _P), align=4)
    v = b.fmul(m.sigmoid(load(g, 3)), m.tanh(cn))
    b.store(v, b.bitcast(h, _P), align=4)
    b.store(v, b.bitcast(y, _P), align=4)
    b.ret_void()
    return fn


@intrinsic
def _cell16(typingctx, g, H, c, h, y):
    """Call ``_cell_fn`` on addresses (intp) and H (int)."""
    def codegen(context, builder, signature, args):
        p = _F.as_pointer()
        builder.call(_cell_fn(builder.module), [
            builder.inttoptr(args[0], p), context.cast(builder, args[1], signature.args[1], types.int64),
            builder.inttoptr(args[2], p), builder.inttoptr(args[3], p), builder.inttoptr(args[4], p)])
        return context.get_dummy_value()
    return types.void(g, H, c, h, y), codegen


@numba.njit(inline="always", **JIT)
def lstm_cell(g, c, h, y):
    """c' = σ(a_f) c + σ(a_i) tanh(a_g), h = σ(a_o) tanh(c'), from a = g (4H,), c (H,) in place,
    h written to h and y (the same array allowed): 16 units per call of the IR, the rest here."""
    H = c.shape[0]
    j = 0
    gp, cp, hp, yp = g.ctypes.data, c.ctypes.data, h.ctypes.data, y.ctypes.data
    while j + LANES <= H:
        _cell16(gp + 4 * j, H, cp + 4 * j, hp + 4 * j, yp + 4 * j)
        j += LANES
    for u in range(j, H):
        cn = sigmoid(g[H + u]) * c[u] + sigmoid(g[u]) * tanh(g[2 * H + u])
        c[u] = cn
        v = sigmoid(g[3 * H + u]) * tanh(cn)
        h[u] = v
        y[u] = v
