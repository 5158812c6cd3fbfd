"""Two threads on one or two rows of fused inference: the hidden units split, a meeting per step.

With one or two rows the per-step product is a GEMV that streams all of W_hh at every step (from
L2, or L3 once W_hh outgrows it), and splitting the rows (``threads.split_rows``) leaves nothing
to split, so those loops ran on one thread. As the int8 loops do (``int8_team``), two threads
then split the hidden units: each computes its units' gates from its half of W_hh and meets
the other once per step (``pair_steps``). The results are the one-thread loop's to the bit.

Used for the plain LSTM and the reset_after GRU (no variant: the variants' extra arrays stay on
the one-thread loop) in inference, where W_hh outgrows most of a core's L2 (``MIN_BYTES``).
``GATEDRNN_PAIR=0`` turns it off, as ``GATEDRNN_INT8_PAIR`` does for the int8 loops. On a
loaded machine the meeting can cost more than it saves (the second half then runs late);
``int8_team.pair`` hands a half that does not start within its wait to the first thread, so a
call never waits for a busy core for long.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from . import int8_team as team
from . import pair_steps as steps
from . import threads
from .common import SMALL_ROWS, gemm_scratch

ON = os.environ.get("GATEDRNN_PAIR", "1") != "0"


def _l2_bytes() -> int:
    """One core's L2 (Linux reports it; 2 MB, this project's Xeon's, where it does not)."""
    try:
        size = os.sysconf("SC_LEVEL2_CACHE_SIZE")
    except (ValueError, OSError, AttributeError):
        size = 0
    return size if size > 0 else 1 << 21


# From a W_hh of this many bytes. Measured on the Xeon (2 MB L2, 2 threads, float32, time per
# step one thread / pair, kernels alone, B = 1 and 2): LSTM H = 256 (1 MB) 1.26-1.58 in one run
# and 0.84 in another, H = 320 (1.6 MB) 1.59-1.63, H = 384-512 2.2-3.2, H = 768 1.9-2.0; GRU
# H = 256 (0.75 MB) 1.13-1.73, H = 384 (1.7 MB) 1.71-1.89, H = 448-768 2.0-3.1. Below about
# three quarters of L2 the one-thread loop keeps W_hh in its L2 and the meeting costs what the
# split saves; above it each half's W_hh still fits where the whole did not.
MIN_BYTES = _l2_bytes() * 3 // 4


def usable(B: int, H: int, T: int, gates: int, dtype: torch.dtype) -> bool:
    """Whether a plain loop of B rows and H units runs as a pair here (two threads allowed, the
    GEMV rows, H a multiple of 4, W_hh from ``MIN_BYTES``, enough work to pay for entering the
    team, ``threads.MIN_SPLIT_WORK``, float32).

    Not float64: its σ and tanh go through libm's exp and tanh, which LLVM vectorises in one
    loop and not in another, so the pair's gate pass could differ from the one-thread loop's
    in the last bit (float32's are ``common``'s rationals: the same bits in either form)."""
    return (ON and dtype == torch.float32 and B <= SMALL_ROWS and H % 4 == 0
            and gates * H * H * 4 >= MIN_BYTES and torch.get_num_threads() >= 2
            and T * B * gates * H * H >= threads.MIN_SPLIT_WORK)


def _cut(H: int) -> int:
    """Where the second half's units start: a multiple of 16 (a cache line of float32, so the
    halves' rows of h and y do not share one) near H / 2, else of 4 (no GEMV row in the tail)."""
    m = 16 if H >= 64 else 4
    return max(m, (H // 2) // m * m)


def _run(kernel: Callable[..., None], H: int, nd: np.dtype, size: int) -> str:
    """``kernel(u0, u1, part, sync, scratch)`` on all units here, or as a pair; how it ran
    (``int8_team.pair``'s "pair", "solo" or "one")."""
    mid = _cut(H)
    sync = team.sync_counters()
    return team.pair(lambda: kernel(0, H, 0, np.empty(0, np.int64), gemm_scratch(nd)),
              lambda part: kernel(*((0, mid) if part == 0 else (mid, H)), part, sync,
                                  gemm_scratch(nd)), size)


def lstm(G: np.ndarray, hw: np.ndarray, cw: np.ndarray, Y: np.ndarray, sizes: np.ndarray,
         reverse: bool, w_hh: np.ndarray) -> str:
    """The plain LSTM's steps of G (T, B, 4H) from h = hw, c = cw (both (B, H), updated to the
    last step's state), outputs into Y (T, B, H); returns how it ran (``_run``)."""
    T, B, H = G.shape[0], G.shape[1], cw.shape[1]
    hb = np.empty((2, B, H), hw.dtype)
    hb[0] = hw

    def kernel(u0: int, u1: int, part: int, sync: np.ndarray, scratch: tuple) -> None:
        steps.lstm(G, hb, cw, Y, sizes, reverse, w_hh, u0, u1, part, sync, scratch)

    mode = _run(kernel, H, hw.dtype, T * B * 4 * H * H)
    hw[:] = hb[T % 2]
    return mode


def gru(G: np.ndarray, hw: np.ndarray, Y: np.ndarray, sizes: np.ndarray, reverse: bool,
        w_hh: np.ndarray, bn: np.ndarray) -> str:
    """The reset_after GRU's steps of G (T, B, 3H) from h = hw (updated), outputs into Y;
    returns how it ran (``_run``)."""
    T, B, H = G.shape[0], G.shape[1], hw.shape[1]
    hb = np.empty((2, B, H), hw.dtype)
    hb[0] = hw
    V = np.empty((B, 3 * H), hw.dtype)

    def kernel(u0: int, u1: int, part: int, sync: np.ndarray, scratch: tuple) -> None:
        steps.gru(G, hb, Y, V, sizes, reverse, w_hh, bn, u0, u1, part, sync, scratch)

    mode = _run(kernel, H, hw.dtype, T * B * 3 * H * H)
    hw[:] = hb[T % 2]
    return mode
