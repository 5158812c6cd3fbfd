"""The per-step recurrent product against a packed W_hh (MKL's packed GEMM), float32.

Every step of a layer multiplies a (rows, K) state by the same (N, K) weight W_hh. MKL's sgemm
packs the weight into its micro-kernel layout on every call; for the small per-step products the
copy is about a quarter of the time (measured one thread, T = 100 steps, (rows, K, N) =
(16, 128, 512): 21.0 against 12.6 µs a step; (32, 128, 512): 33.9 against 25.4; (64, 256, 1024):
240 against 204; from 128 rows the two break even). torch's libtorch_cpu exports MKL's
``cblas_sgemm_pack`` / ``cblas_sgemm_compute``, so a call packs W_hh once (``pack_weight``: 46 µs
at (512, 128)) and every step runs

    c = a W^T + beta c,    a (rows, K), W (N, K) packed, c (rows, N)

with ``packed_prod``. float64 and head-wise weights keep ``common.prod``.

Numerics: the packed products give the same bits as ``common.gemm`` (sgemm_) where measured
(MKL 2024.2, Intel Xeon with AVX-512; K from 32 to 768, N from K to 4K, 16 to 256 rows, one and
two MKL threads, beta 0 and 1), but not everywhere: with 3 to 15 rows (the count growing with K)
or K ≥ 1024, sgemm_ takes other code paths and the two differ in the order of float32 sums (max
|difference| 1.1e-5 at K = 128 on standard normal data). So the packed path runs only inside that
measured region (``MIN_ROWS`` rows in the step, K ≤ ``MAX_K``), and ``MODE`` says for which calls:
``"inference"`` (the default: forward passes that keep nothing for a backward pass), ``"always"``
(training's forward too) or ``"off"``. The environment variable ``GATEDRNN_PACKED_GEMM`` sets it
at import; ``MODE`` is read per call, so it may also be changed at run time.
"""

from __future__ import annotations

import ctypes
import os

import numba
import numpy as np
from numba.extending import overload

from .common import HAVE_TORCH_BLAS, JIT, _lead, prod
from .gemv import gemv
from .heads import headwise_prod_t

MODES = ("off", "inference", "always")
MODE = os.environ.get("GATEDRNN_PACKED_GEMM", "inference")
if MODE not in MODES:
    MODE = "inference"
MIN_STEPS = 16  # below this the one packing (about 1.5 unpacked products) is not won back
MIN_ROWS = 16  # per step: fewer rows run sgemm_ (other bits; see above)
MAX_K = 768  # the longest inner dimension measured to give sgemm_'s bits


def _have_packed() -> bool:
    """Whether libtorch_cpu exports the cblas packed-GEMM entry points (an MKL build)."""
    if not HAVE_TORCH_BLAS:
        return False
    import torch

    lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        handle = ctypes.CDLL(lib)
        handle.cblas_sgemm_pack_get_size, handle.cblas_sgemm_pack  # noqa: B018
        handle.cblas_sgemm_compute  # noqa: B018 - raises AttributeError when not exported
    except (OSError, AttributeError):
        return False
    return True


HAVE_PACKED = _have_packed()

# CBLAS enum values (mkl_cblas.h): row-major layout, the B matrix, no transpose, transpose, packed.
_ROW_MAJOR, _B_MATRIX, _NO_TRANS, _TRANS, _PACKED = 101, 162, 111, 112, 151
_i32, _ptr, _f32 = numba.types.int32, numba.types.intp, numba.types.float32
if HAVE_PACKED:
    _size = numba.types.ExternalFunction(
        "cblas_sgemm_pack_get_size", numba.types.intp(_i32, _i32, _i32, _i32))
    _pack = numba.types.ExternalFunction(
        "cblas_sgemm_pack", numba.types.void(_i32, _i32, _i32, _i32, _i32, _i32, _f32, _ptr, _i32,
                                             _ptr))
    _compute = numba.types.ExternalFunction(
        "cblas_sgemm_compute", numba.types.void(_i32, _i32, _i32, _i32, _i32, _i32, _ptr, _i32,
                                                _ptr, _i32, _f32, _ptr, _i32))

    @numba.njit(**JIT)
    def _packed_size(N, K):
        """float32 elements of MKL's packed form of an (N, K) W (about 2.3M at (512, 128))."""
        return _size(_B_MATRIX, 1, N, K) // 4 + 1

    @numba.njit(**JIT)
    def _pack_into(w, buf):
        """W (N, K), rows contiguous, packed into buf as the B operand of a row-major a @ W^T."""
        N, K = w.shape
        _pack(_ROW_MAJOR, _B_MATRIX, _TRANS, 1, N, K, np.float32(1.0), w.ctypes.data, _lead(w),
              buf.ctypes.data)

    @numba.njit(inline="always", **JIT)
    def _packed(a, wp, c, beta):
        _compute(_ROW_MAJOR, _NO_TRANS, _PACKED, c.shape[0], c.shape[1], a.shape[1], a.ctypes.data,
                 _lead(a), wp.ctypes.data, c.shape[1], np.float32(beta), c.ctypes.data, _lead(c))

else:

    def _packed_size(N, K):  # never called: pack_weight checks HAVE_PACKED first
        raise RuntimeError("MKL's packed GEMM is not available")

    _pack_into = _packed_size

    @numba.njit(inline="always", **JIT)
    def _packed(a, wp, c, beta):  # never reached: wp is always size 0 without the symbols
        pass


def pack_weight(w: np.ndarray, steps: int, rows: int, keep: bool) -> np.ndarray:
    """W_hh (N, K) packed for ``packed_prod`` when this call should use it, else a size-0 array
    of W's dtype (``packed_prod`` then runs ``common.prod``).

    It packs for float32 with the symbols present, ``MODE`` allowing it (``keep``: the forward
    pass keeps buffers for a backward one), at least ``MIN_STEPS`` steps, ``MIN_ROWS`` rows in
    the call and K ≤ ``MAX_K``.
    """
    use = (HAVE_PACKED and w.dtype == np.float32 and w.ndim == 2 and steps >= MIN_STEPS
           and rows >= MIN_ROWS and 0 < w.shape[1] <= MAX_K
           and (MODE == "always" or (MODE == "inference" and not keep)))
    if not use:
        return np.empty(0, w.dtype)
    w = np.ascontiguousarray(w)
    # (MKL's packed form is several MB, 9.2 at (512, 128); reusing one buffer per thread measured
    # no faster than a fresh one: packing (2048, 512) takes 3.3 ms either way, 1.5% of the
    # 100 steps it then speeds up by 23 ms.)
    wp = np.empty(_packed_size(*w.shape), np.float32)
    _pack_into(w, wp)
    return wp


def packed_or_none(wp):
    """``wp`` as the kernels read it: the array given, or a size-0 one when the argument was
    omitted (callers written before the packed path, e.g. the lean path's)."""
    return wp


@overload(packed_or_none, inline="always", jit_options=JIT)
def _packed_or_none(wp):
    if wp is None or isinstance(wp, (numba.types.Omitted, numba.types.NoneType)):
        return lambda wp: np.empty(0, np.float32)
    return lambda wp: wp


@numba.njit(inline="always", **JIT)
def packed_prod(a, wp, w, c, beta, scratch):
    """c = a w^T + beta c: a (rows, K), w (N, K), c (rows, N), rows contiguous. With ``wp`` from
    ``pack_weight`` (size > 0) and at least ``MIN_ROWS`` rows (a packed sequence's steps shrink),
    MKL's packed compute on ``wp``; otherwise ``common.prod`` on ``w`` (GEMV loops for one or two
    rows, sgemm_ for more)."""
    if wp.shape[0] > 0 and a.shape[0] >= MIN_ROWS and c.itemsize == 4:
        _packed(a, wp, c, beta)
        return
    prod(a, w, c, True, beta, scratch)


def has_packed(wp):
    """Whether ``wp`` (as ``packed_or_none`` gives it) holds a packed W_hh: MKL's (size > 0), or
    the ``gemv`` pair (packed, tail) of one or two rows (``pair.packed_rows``)."""
    return wp.shape[0] > 0


@overload(has_packed, inline="always", jit_options=JIT)
def _has_packed(wp):
    if isinstance(wp, numba.types.BaseTuple):
        return lambda wp: True
    return lambda wp: wp.shape[0] > 0


@numba.njit(inline="always", **JIT)
def _on_rows(a, rows, c, beta):
    """c = a W^T + beta c (beta 0 or 1) by ``gemv`` on its pair (packed W, tail)."""
    if beta == 0.0:
        c[:] = 0.0
    gemv(a, rows[0], c, rows[1])


def step_prod(a, wp, w, c, beta, scratch):
    """c = a w^T + beta c (beta 0 or 1) on the packed W_hh ``wp`` (``has_packed``): ``gemv``'s
    product for its pair, else ``packed_prod``."""
    packed_prod(a, wp, w, c, beta, scratch)


@overload(step_prod, jit_options=JIT)  # a call, not inlined: numba's SSA check warns on nested inlines
def _step_prod(a, wp, w, c, beta, scratch):
    if isinstance(wp, numba.types.BaseTuple):
        return lambda a, wp, w, c, beta, scratch: _on_rows(a, wp, c, beta)
    return lambda a, wp, w, c, beta, scratch: packed_prod(a, wp, w, c, beta, scratch)


def step_prod_t(a, wpt, R, c, g0, g1, H, beta, scratch):
    """The backward product c = a R + beta c (beta 0 or 1) of gates g0 … g1 − 1
    (``heads.headwise_prod_t``); with ``wpt`` the ``gemv`` pair of all the gates' W_hh^T
    (``pair.packed_rows_t``), ``gemv`` on it. The same bits either way: ``common.prod``'s loop
    for one or two rows adds a's terms to each output in the order of k, one fused multiply-add
    each, as ``gemv`` does."""
    headwise_prod_t(a, R, c, g0, g1, H, beta, scratch)


@overload(step_prod_t, jit_options=JIT)  # a call, as step_prod
def _step_prod_t(a, wpt, R, c, g0, g1, H, beta, scratch):
    if isinstance(wpt, numba.types.BaseTuple):
        return lambda a, wpt, R, c, g0, g1, H, beta, scratch: _on_rows(a, wpt, c, beta)
    return lambda a, wpt, R, c, g0, g1, H, beta, scratch: headwise_prod_t(
        a, R, c, g0, g1, H, beta, scratch)
