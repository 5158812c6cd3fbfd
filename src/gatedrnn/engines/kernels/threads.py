"""Two threads for one recurrent layer, without synchronisation per step.

Batch rows of a recurrent layer never interact, so the time loop of rows [0, B/2) and of rows
[B/2, B) can run on two threads with no barrier per step. Each thread then runs its own
single-threaded GEMM and its own gate pass, where one loop over all rows would run the small
per-step GEMM on two threads (a barrier per step) and the gate pass on one. ``split_rows`` is the
one entry point; the kernels pass their thresholds.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from .common import HAVE_TORCH_BLAS

# MKL_Set_Num_Threads_Local takes its int by value; the lower-case export of this MKL build is
# the Fortran one (by pointer) and crashes when called like C.
_mkl_local: Any = None  # the ctypes function, when MKL has it
if HAVE_TORCH_BLAS:
    try:
        _mkl_local = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib",
                                              "libtorch_cpu.so")).MKL_Set_Num_Threads_Local
        _mkl_local.argtypes, _mkl_local.restype = [ctypes.c_int], ctypes.c_int
    except AttributeError:
        _mkl_local = None

_POOL: list = []
_POOL_LOCK = threading.Lock()


def _single_threaded_blas(fn: Callable[..., None], *args: object) -> None:
    prev = _mkl_local(1)  # this thread only (MKL's per-thread setting)
    try:
        fn(*args)
    finally:
        _mkl_local(prev)


# After any parallel torch op (here: the input projection just before the loop) torch's OpenMP
# worker keeps spinning for ~10 ms, waiting for the next parallel region. A pool thread of our own
# then shares a core with that spinning worker (measured: an Elman RNN loop at B = 256 took 17 ms
# after an addmm against 11 ms alone, and 11 ms after it with OMP_WAIT_POLICY=passive). Opening
# the parallel region in torch's libgomp instead (GOMP_parallel, the entry point of ``#pragma omp
# parallel``) hands the second half to the spinning worker itself. Measured for the Elman RNN
# (float32, 2 threads, time without split / with): B = 2: 0.94-1.07; B = 4: 1.08; B = 8-64:
# 1.28-1.69; B = 256: 1.12-1.41. GATEDRNN_NO_GOMP=1 falls back to the pool thread (as does a torch
# without libgomp).

_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _load_gomp() -> ctypes.CDLL | None:
    """torch's libgomp with GOMP_parallel typed, or None (another OpenMP, another backend)."""
    if os.environ.get("GATEDRNN_NO_GOMP") or "ATen parallel backend: OpenMP" not in \
            torch.__config__.parallel_info():
        return None
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1"))
        lib.GOMP_parallel.argtypes = [_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        lib.GOMP_parallel.restype = None
    except (OSError, AttributeError):
        return None
    return lib


_GOMP = _load_gomp() if _mkl_local is not None else None


def _in_team(work: Callable[[int, int, int], None], parts: list[tuple[int, int, int]]) -> None:
    """Run ``work(*part)`` for each part on the threads of torch's OpenMP team (two threads)."""
    todo = list(reversed(parts))
    errors: list[BaseException] = []

    def body(_: Any) -> None:  # runs on each thread of the team, holding the GIL outside numba
        try:
            while True:
                try:
                    part = todo.pop()  # atomic under the GIL
                except IndexError:
                    return
                _single_threaded_blas(work, *part)
        except BaseException as e:  # noqa: BLE001 - a ctypes callback cannot raise; re-raised below
            errors.append(e)

    assert _GOMP is not None  # split_rows forms a team only with it
    _GOMP.GOMP_parallel(_BODY(body), None, 2, 0)
    if errors:
        raise errors[0]


# Below this many multiply-adds in the time loop (T·B·G·H·H, the recurrent products: about a
# millisecond of work), one thread. Entering torch's OpenMP team costs tens of µs on a quiet machine
# and milliseconds when another process holds the second core (measured, Elman RNN at
# 2 threads on the shared machine: (T, B, H) = (5, 4, 64) inference 15.3 ms split against 0.29 ms
# not; (20, 8, 128) 14.5 against 2.0 ms), which a loop this short cannot win back.
MIN_SPLIT_WORK = 1 << 22


def split_rows(B: int, work: Callable[[int, int, int], None], min_rows: int = 64,
               team_min_rows: int | None = None, size: int | None = None) -> None:
    """Run ``work(part, lo, hi)`` over row ranges that cover [0, B).

    With torch allowed two or more threads and MKL present, it runs two halves at once, each with
    a one-thread BLAS: in torch's OpenMP team from B >= 2·team_min_rows (when torch's libgomp is
    there and team_min_rows is given), else on a pool thread from B >= 2·min_rows; otherwise it
    calls ``work(0, 0, B)``; so it does when ``size`` (the loop's multiply-adds, T·B·G·H·H) is
    below ``MIN_SPLIT_WORK``. ``work`` must only touch its own rows and its own part's scratch. The
    split depends on B only, and any thread may run either half, so results are deterministic.

    Measured for the pool thread (LSTM inference, 2 threads): B = 256 gains 8%, B = 64 breaks
    even, B = 32 loses 15%; hence min_rows = 64. For the team see the notes above.
    """
    team = _GOMP is not None and team_min_rows is not None
    least = team_min_rows if team and team_min_rows is not None else min_rows
    small = size is not None and size < MIN_SPLIT_WORK
    if _mkl_local is None or torch.get_num_threads() < 2 or B < 2 * least or small:
        if _mkl_local is not None and B <= 4:
            # A few rows make the per-step product a GEMV, where MKL's threads cost more than
            # they save (measured 8% at B = 1, H = 128).
            _single_threaded_blas(work, 0, 0, B)
        else:
            work(0, 0, B)
        return
    half = (B + 1) // 2
    if team:
        _in_team(work, [(0, 0, half), (1, half, B)])
        return
    if not _POOL:
        with _POOL_LOCK:
            if not _POOL:
                _POOL.append(ThreadPoolExecutor(1, thread_name_prefix="gatedrnn"))
    other = _POOL[0].submit(_single_threaded_blas, work, 1, half, B)
    try:
        _single_threaded_blas(work, 0, 0, half)
    finally:
        other.result()
