"""Shared pieces of the fused CPU engine: vectorisable activations and a GEMM callable from numba.

Three facts shape the fused engine; this file holds the first two.

1. numba does not vectorise ``math.exp``/``math.tanh`` (there is no SVML here), so scalar
   activations run at ~2 ns an element, slower than torch's vectorised ones. A rational
   approximation of tanh (only mul, add, div, min, max) vectorises to AVX lanes once the loop
   is compiled with ``error_model="numpy"`` (the default "python" model adds a division-by-zero
   branch that blocks vectorisation). It is used for float32 only:

       tanh_approx(x) = x * P(x^2) / Q(x^2),  x clamped to [-7.905, 7.905]
       max |tanh_approx(x) - tanh(x)| <= 3e-7 over all float32 x (measured on a 2e5-point grid and
       checked in tests/test_kernel_lstm.py)
       sigmoid(x) = 0.5 * tanh(0.5 x) + 0.5, so its error is half of that plus the float32
       rounding of the last step (measured 1.6e-7).

   float64 uses the exact ``math.tanh``: float64 is for checking gradients, not for speed.

2. The per-step recurrent product must run at the speed of ``torch.mm``. torch's CPU wheel exports
   the Fortran BLAS symbols ``sgemm_``/``dgemm_`` of the MKL it links, so numba calls that same
   GEMM by symbol name with no Python in the time loop. Where the symbols are missing (another
   torch build) we fall back to numba's ``np.dot`` (scipy's BLAS).

3. Batch rows never interact, so a layer's time loop can run for two halves of the batch on two
   threads with no synchronisation per step: that lives in ``kernels.threads``.

Every kernel compiled here uses ``JIT`` so that all of them share one set of flags.
"""

from __future__ import annotations

import ctypes
import math
import os
from typing import Any

import numba
import numpy as np
import torch
from llvmlite import binding as llvm
from numba.extending import overload

# fastmath without "nnan" and "ninf": those let LLVM assume no NaN or inf, which silently turned a
# NaN input into finite outputs (torch.nn propagates it). The remaining flags keep vectorisation.
JIT: dict[str, Any] = dict(nogil=True, cache=True, error_model="numpy",
                           fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})

_F32 = np.float32
_CLAMP = _F32(7.90531110763549805)


# Where torch's own float32 activations are exactly ±1 or 0 (measured by bisection over float32
# values, torch 2.x CPU). The kernels saturate at the same points, so that 0 ⊙ inf gives NaN (and
# 1 − 1 = 0 gives 0 ⊙ inf) exactly where torch.nn's does: the plain rational function stops at
# 1 − 2.4e-7, which turned torch's NaN into inf. Finite values move < 1.2e-7.
_TANH_ONE = _F32(9.01084041595459)  # |tanh(x)| == 1 from here
_SIGMOID_ONE = _F32(16.635532)  # sigmoid(x) == 1 from here
_SIGMOID_ZERO = _F32(-88.72284)  # sigmoid(x) == 0 up to here (exp(-x) overflows)


@numba.njit(inline="always", **JIT)
def _tanh32_rational(x):
    """float32 tanh as a rational function on [-7.905, 7.905], clamped outside; vectorises."""
    # x first: numba's min/max keep their first argument unless a later one compares smaller
    # (larger), which a NaN never does, so a NaN passes through as torch's tanh passes it.
    # (max(-C, min(C, x)) returned ±C for NaN; conditional reassignments trip numba's SSA check.)
    x = max(min(x, _CLAMP), -_CLAMP)
    x2 = x * x
    p = _F32(-2.76076847742355e-16)
    p = p * x2 + _F32(2.00018790482477e-13)
    p = p * x2 + _F32(-8.60467152213735e-11)
    p = p * x2 + _F32(5.12229709037114e-08)
    p = p * x2 + _F32(1.48572235717979e-05)
    p = p * x2 + _F32(6.37261928875436e-04)
    p = p * x2 + _F32(4.89352455891786e-03)
    q = _F32(1.19825839466702e-06)
    q = q * x2 + _F32(1.18534705686654e-04)
    q = q * x2 + _F32(2.26843463243900e-03)
    q = q * x2 + _F32(4.89352518554385e-03)
    return x * p / q


@numba.njit(inline="always", **JIT)
def tanh32(x):
    """float32 tanh; vectorises; max abs error 3e-7 (module docstring), exactly ±1 where torch's
    is. The comparisons are 0 or 1 as floats (a ternary here trips numba's SSA check when
    inlined); a NaN compares false and the rational's NaN passes min/max as their first argument."""
    r = _tanh32_rational(x)
    s = min(r + _F32(x >= _TANH_ONE), _F32(1.0))
    return max(s - _F32(x <= -_TANH_ONE), _F32(-1.0))


@numba.njit(inline="always", **JIT)
def sigmoid32(x):
    """float32 sigmoid = 0.5 tanh(x/2) + 0.5, exactly 1 and 0 where torch's is (and positive,
    1.2e-7, in between, where torch's is tiny but not 0); NaN passes as in ``tanh32``."""
    r = _F32(0.5) * _tanh32_rational(_F32(0.5) * x) + _F32(0.5)
    s = min(r + _F32(x >= _SIGMOID_ONE), _F32(1.0))
    return max(s - _F32(x <= _SIGMOID_ZERO), _F32(0.0))


@numba.njit(inline="always", **JIT)
def tanh64(x):
    return math.tanh(x)


@numba.njit(inline="always", **JIT)
def sigmoid64(x):
    # torch's own formula: 1 / (1 + exp(−x)) is 0 only where exp overflows (x < −709.78) and 1
    # from x = 36.74, as torch's is; 0.5 tanh(x/2) + 0.5 was already 0 from x = −38.
    return 1.0 / (1.0 + math.exp(-x))


def tanh(x):
    """tanh inside kernels: approximate for float32, exact for float64 (chosen while typing)."""
    return math.tanh(x)


def sigmoid(x):
    """Logistic sigmoid for use inside kernels; float32 approximate, float64 exact."""
    return 1.0 / (1.0 + math.exp(-x))


@overload(tanh, inline="always", jit_options=JIT)
def _tanh_impl(x):
    if x == numba.float32:
        return lambda x: tanh32(x)
    return lambda x: tanh64(x)


@overload(sigmoid, inline="always", jit_options=JIT)
def _sigmoid_impl(x):
    if x == numba.float32:
        return lambda x: sigmoid32(x)
    return lambda x: sigmoid64(x)


# --- numpy views for the kernels -------------------------------------------------------------

_OFF: dict[tuple[Any, int], np.ndarray] = {}


def off(dtype: np.dtype, ndim: int) -> np.ndarray:
    """A size-0 array: the kernels read "variant off" from it. Shared, never written."""
    key = (dtype, ndim)
    if key not in _OFF:
        _OFF[key] = np.empty((0,) * ndim, dtype)
    return _OFF[key]


def as_np(t: Any, dtype: np.dtype, ndim: int) -> np.ndarray:
    """A tensor's numpy view (contiguous), or ``off`` for an absent one (None)."""
    if t is None:
        return off(dtype, ndim)
    return t.detach().contiguous().numpy()


def step_sizes(batch_sizes: Any, T: int, B: int) -> tuple[np.ndarray, bool]:
    """Active rows per step as the kernels read them, (T,) int64, and whether any row ends early
    (``batch_sizes`` None means every row is active at every step)."""
    if batch_sizes is None:
        return np.full(T, B, np.int64), False
    sizes = batch_sizes.numpy().astype(np.int64, copy=False)
    return sizes, bool(sizes[-1] < B)


def recurrent_weight_grad(parts: tuple, Y: Any, h0: Any, m: Any, sizes: np.ndarray,
                          reverse: bool, heads: int = 0) -> Any:
    """dW_hh = Σ_t δz_t^T (m ⊙ h_{t−1}) for each δz in ``parts`` (each (T, B, K); the results are
    stacked along K), as two GEMMs each, reading h_{t−1} from y (T, B, H_out) without a copy.

    A row's h_{t−1} is y at the previous step of the direction (a row active at t was active
    there), except at the row's first step, where it is h0: for the forward direction that is
    t = 0 for every row; for reverse it is t = length − 1, where y[t + 1] is zero (inactive), so
    the h0 term is added separately from each row's first-step δz. m is the recurrent dropout
    mask (B, H_out) or None.

    ``heads`` = 0 gives torch.nn's dense (ΣK, H_out). ``heads`` = nh ≥ 1 gives the head-wise
    (nh, G·d, d), d = H_out / nh, with each part's K = G_part·H_out gate-major: only the blocks
    (``head_blocks_grad``), at 1/nh of the dense FLOPs.
    """
    T, B, Ho = Y.shape
    Ym = Y if m is None else Y * m  # (T, B, Ho)
    h0m = h0 if m is None else h0 * m
    prev = (Ym[1:] if reverse else Ym[:-1]).reshape(-1, Ho)
    if reverse:
        lengths = (sizes[None, :] > np.arange(B)[:, None]).sum(1)  # (B,)
        last = torch.from_numpy(lengths - 1)
    out = []
    for D in parts:
        K = D.shape[2]
        if reverse:
            first, rest = D[last, torch.arange(B)], D[:-1]  # (B, K): each row's first step
        else:
            first, rest = D[0], D[1:]
        if heads > 1:
            out.append(head_blocks_grad(first, h0m, heads, rest.reshape(-1, K), prev))
        else:
            out.append(torch.addmm(torch.mm(first.t(), h0m), rest.reshape(-1, K).t(), prev))
    dw = out[0] if len(out) == 1 else torch.cat(out, dim=-2)
    return dw.reshape(1, *dw.shape) if heads == 1 else dw


def head_blocks_grad(A: Any, X: Any, heads: int, A2: Any = None, X2: Any = None) -> Any:
    """The head-wise blocks of A^T X (+ A2^T X2): A (N, G·H) gate-major, X (N, H) (any row
    strides). Returns (nh, G·d, d), d = H / nh, with
        out[j, g·d + q, k] = Σ_n A[n, g·H + j·d + q] X[n, j·d + k]
    as one batched GEMM over the heads, at 1/nh of the dense FLOPs. A is first copied head-major,
    (nh, N, G·d): one GEMM per head and gate on strided column blocks of A measured slower than
    the dense product at (N, H, nh) = (6400, 512, 4), the copy and one bmm 2x faster than it."""
    out = torch.bmm(_head_major(A, heads, X.shape[1]).transpose(1, 2), _head_cols(X, heads))
    if A2 is not None:
        out.baddbmm_(_head_major(A2, heads, X.shape[1]).transpose(1, 2), _head_cols(X2, heads))
    return out


def _head_major(A: Any, heads: int, H: int) -> Any:
    """(N, G·H) gate-major -> a head-major copy (nh, N, G·d)."""
    N, K = A.shape
    d = H // heads
    return A.reshape(N, K // H, heads, d).permute(2, 0, 1, 3).reshape(heads, N, K // H * d)


def _head_cols(X: Any, heads: int) -> Any:
    """(N, H) -> the view (nh, N, d) of each head's columns."""
    N, H = X.shape
    return X.reshape(N, heads, H // heads).transpose(0, 1)


# --- GEMM ---------------------------------------------------------------------------------------

def _load_torch_blas() -> bool:
    """Make the Fortran sgemm_/dgemm_ of torch's own libtorch_cpu (MKL) visible to numba's JIT.

    Binding by symbol name (ExternalFunction) rather than by ctypes pointer keeps every kernel that
    calls ``gemm`` cacheable on disk, so a new process does not recompile them.
    """
    if os.environ.get("GATEDRNN_NO_TORCH_BLAS"):
        return False
    lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        handle = ctypes.CDLL(lib)
        handle.sgemm_, handle.dgemm_  # noqa: B018 - raises AttributeError when not exported
        llvm.load_library_permanently(lib)
    except (OSError, AttributeError, RuntimeError):
        return False
    return True


HAVE_TORCH_BLAS = _load_torch_blas()

@numba.njit(inline="always", **JIT)
def _lead(a):
    """BLAS's leading dimension of a row-major matrix whose rows are contiguous: the row stride in
    elements. A one-row matrix's row stride is arbitrary (torch calls a (1, n) tensor contiguous
    whatever its first stride), and BLAS wants at least the row length, so it gets that."""
    if a.shape[0] <= 1:
        return max(a.shape[1], 1)
    return a.strides[0] // a.itemsize


if HAVE_TORCH_BLAS:
    # Pointers travel as intp: on every 64-bit ABI numba targets they are passed like pointers.
    _sig = numba.types.void(*([numba.types.intp] * 13))
    _sgemm = numba.types.ExternalFunction("sgemm_", _sig)
    _dgemm = numba.types.ExternalFunction("dgemm_", _sig)

    @numba.njit(**JIT)
    def gemm(a, b, c, trans_a, trans_b, beta, scratch):
        """c = op(a) @ op(b) + beta * c for 2-D arrays of one dtype whose rows are contiguous
        (C-contiguous, or column blocks of one: the leading dimension is read from the strides,
        so the head-wise products run on views of the gate rows without a copy).

        op(m) is m.T when its flag is set. ``scratch`` comes from ``gemm_scratch(dtype)``: Fortran
        takes every argument by pointer, and we must not allocate per step.
        Row-major c = op(a) op(b) is column-major c^T = op(b)^T op(a)^T, so b goes first.
        """
        ints, coef = scratch
        m = c.shape[1]
        n = c.shape[0]
        k = a.shape[0] if trans_a else a.shape[1]
        if m == 0 or n == 0:
            return
        ints[0] = ord("T") if trans_b else ord("N")
        ints[1] = ord("T") if trans_a else ord("N")
        ints[2] = m
        ints[3] = n
        ints[4] = k
        ints[5] = _lead(b)
        ints[6] = _lead(a)
        ints[7] = _lead(c)
        coef[0] = 1.0
        coef[1] = beta
        p = ints.ctypes.data
        if c.itemsize == 4:
            _sgemm(p, p + 4, p + 8, p + 12, p + 16, coef.ctypes.data, b.ctypes.data, p + 20,
                   a.ctypes.data, p + 24, coef.ctypes.data + 4, c.ctypes.data, p + 28)
        else:
            _dgemm(p, p + 4, p + 8, p + 12, p + 16, coef.ctypes.data, b.ctypes.data, p + 20,
                   a.ctypes.data, p + 24, coef.ctypes.data + 8, c.ctypes.data, p + 28)

else:

    @numba.njit(**JIT)
    def gemm(a, b, c, trans_a, trans_b, beta, scratch):
        """Fallback through numba's np.dot (scipy BLAS): same contract as the torch-BLAS version
        (np.dot wants contiguous operands: views of column blocks are copied)."""
        a = np.ascontiguousarray(a)
        b = np.ascontiguousarray(b)
        aa = a.T if trans_a else a
        bb = b.T if trans_b else b
        if beta == 0.0:
            c[:] = np.dot(aa, bb)
        else:
            c[:] = np.dot(aa, bb) + beta * c


def gemm_scratch(dtype) -> tuple[np.ndarray, np.ndarray]:
    """The scratch that ``gemm`` needs (int32 arguments, alpha and beta); allocate once per kernel
    call, never per step. ``dtype`` is the numpy dtype of the matrices."""
    return np.zeros(8, np.int32), np.zeros(2, dtype)


# --- the per-step product and the per-row layer norm, shared by the time loops -------------------

SMALL_ROWS = 2  # up to this many rows, the products below beat MKL's sgemm (B = 1: 2.1 vs 3.6 µs)


@numba.njit(inline="always", **JIT)
def prod(a, w, c, trans_w, beta, scratch):
    """c = a @ op(w) + beta * c (op(w) = w.T when ``trans_w``): ``common.gemm`` for many rows, and
    for one or two rows (a GEMV, where MKL's sgemm pays its blocking set-up at every step) plain
    loops that LLVM vectorises: four dot products at once against rows of w (trans_w), or a sum
    of rows of w scaled by a's entries (not trans_w). Measured per step at H = 128, B = 1:
    2.1 µs against 3.6 µs (forward) and 2.4 against 3.3 (backward); sgemm wins from 4 rows."""
    R = a.shape[0]
    if R > SMALL_ROWS:
        gemm(a, w, c, False, trans_w, beta, scratch)
        return
    zero = c.dtype.type(0.0)
    if trans_w:  # c[b, j] = Σ_k a[b, k] w[j, k] (+ beta c)
        N, K = w.shape
        for b in range(R):
            ab, cb = a[b], c[b]
            j = 0
            while j + 4 <= N:
                w0, w1, w2, w3 = w[j], w[j + 1], w[j + 2], w[j + 3]
                s0 = s1 = s2 = s3 = zero
                for k in range(K):
                    x = ab[k]
                    s0 += x * w0[k]
                    s1 += x * w1[k]
                    s2 += x * w2[k]
                    s3 += x * w3[k]
                if beta != 0.0:
                    s0 += beta * cb[j]
                    s1 += beta * cb[j + 1]
                    s2 += beta * cb[j + 2]
                    s3 += beta * cb[j + 3]
                cb[j] = s0
                cb[j + 1] = s1
                cb[j + 2] = s2
                cb[j + 3] = s3
                j += 4
            while j < N:
                wj = w[j]
                s = zero
                for k in range(K):
                    s += ab[k] * wj[k]
                cb[j] = s + beta * cb[j] if beta != 0.0 else s
                j += 1
    else:  # c[b, :] = Σ_j a[b, j] w[j, :] (+ beta c)
        N = w.shape[0]
        for b in range(R):
            ab, cb = a[b], c[b]
            if beta == 0.0:
                cb[:] = zero
            elif beta != 1.0:
                cb *= beta
            for j in range(N):
                x = ab[j]
                wj = w[j]
                for k in range(cb.shape[0]):
                    cb[k] += x * wj[k]



@numba.njit(inline="always", **JIT)
def layer_norm_row(v, gain, bias, xn, out, add, eps):
    """out (+)= LN(v) = gain ⊙ (v − mean) / sqrt(var + eps) + bias; keeps xn = (v − mean)/std.

    Returns 1/std for the backward pass. ``add`` accumulates into out instead of overwriting.
    """
    N = v.shape[0]
    mean = v.sum() / N
    var = 0.0
    for j in range(N):
        var += (v[j] - mean) * (v[j] - mean)
    rstd = 1.0 / np.sqrt(var / N + eps)
    for j in range(N):
        x = (v[j] - mean) * rstd
        xn[j] = x
        y = x * gain[j] + bias[j]
        out[j] = out[j] + y if add else y
    return rstd


@numba.njit(inline="always", **JIT)
def layer_norm_row_bwd(dy, xn, rstd, gain, dx, dgain, dbias):
    """Backward of LN for one row: with u = gain ⊙ dy,
    dx = rstd (u − mean(u) − xn mean(u ⊙ xn)); dgain += dy ⊙ xn; dbias += dy."""
    N = dy.shape[0]
    s1 = 0.0
    s2 = 0.0
    for j in range(N):
        u = gain[j] * dy[j]
        s1 += u
        s2 += u * xn[j]
        dgain[j] += dy[j] * xn[j]
        dbias[j] += dy[j]
    s1 /= N
    s2 /= N
    for j in range(N):
        dx[j] = rstd * (gain[j] * dy[j] - s1 - xn[j] * s2)
