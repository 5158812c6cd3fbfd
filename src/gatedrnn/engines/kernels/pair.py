"""Fused float32 loops of one or two rows: W_hh packed for a GEMV, and two threads that split
the hidden units once W_hh outgrows a core's L2 (inference).

With one or two rows the per-step product is a GEMV that streams all of W_hh at every step (from
L2, or L3 once W_hh outgrows it). These loops (``pair_steps``) run it on a W_hh packed once per
call (``gemv``: 1.6-2.4x ``common.prod``'s loops at one row, 2.7-3.6x at two, measured on the
Xeon at H = 64-256), for the plain LSTM and the reset_after GRU in float32 inference, from
``MIN_STEPS`` steps (where the packing is won back). The variants keep the general loops
(``lstm_steps``, ``gru_steps``: their extra arrays), which take the same packed product
(``packed_rows``, ``packed.step_prod``; measured 0.97-1.12x at one row, 1.16-1.37x at two, T = 120,
H = 64), as does training's forward pass. Training's backward pass multiplies by W_hh rather
than its transpose; its product runs on W_hh^T packed the same way (``packed_rows_t``,
``packed.step_prod_t``) and gives ``common.prod``'s bits.

Measured, modules in training (forward and backward, 2 threads, new against old, fastest of 25
interleaved): the packed backward alone 1.10-1.15x at B = 1, T = 200, H = 128 (LSTM, GRU) and
1.26-1.27x at B = 2; the packed forward then adds 1.05x at B = 1 and 1.16-1.23x at B = 2.

Splitting the rows (``threads.split_rows``) leaves nothing to split here, so where W_hh outgrows
most of a core's L2 (``MIN_BYTES``) two threads split the hidden units instead, as the int8 loops
do (``int8_team``): each computes its units' gates from its half of W_hh and meets the other once
per step. The results are the one-thread loop's to the bit. ``GATEDRNN_PAIR=0`` turns the split
off, as ``GATEDRNN_INT8_PAIR`` does for the int8 loops. On a loaded machine the meeting can cost
more than it saves (the second half then runs late); ``int8_team.pair`` hands a half that does not
start within its wait to the first thread, so a call never waits for a busy core for long.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from . import gemv, threads
from . import int8_team as team
from . import pair_steps as steps
from .common import SMALL_ROWS, gemm_scratch

ON = os.environ.get("GATEDRNN_PAIR", "1") != "0"
# Steps from which packing W_hh pays, at one and two rows. Packing costs 20-26 µs at H = 64-128
# and 119 at H = 256; the product then saves 0.5-2.5 µs a step at one row, about twice that at two.
# Measured (modules, 2 threads, new / old loop, fastest of 11 interleaved): B = 1, T = 64 0.94-1.07,
# T = 200 1.11-1.20; B = 2, T = 16 0.96-1.15, T = 32 1.00-1.44, T = 64 1.11-1.75.
MIN_STEPS = (96, 16)
# The backward loops' W_hh^T is a copy, not a transpose (gemv.pack_t: 26 µs at H = 128, 0.12 ms
# at 256), won back in ten to twenty steps (1.5-3 µs a step at H = 128).
MIN_STEPS_BACKWARD = 16


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


def split(B: int, H: int, T: int, gates: int) -> bool:
    """Whether a call of ``usable`` runs as a pair: the split on, two threads allowed, H a
    multiple of 4 (the cut), W_hh from ``MIN_BYTES``, enough work to pay for entering the team
    (``threads.MIN_SPLIT_WORK``)."""
    return (ON and H % 4 == 0 and gates * H * H * 4 >= MIN_BYTES and torch.get_num_threads() >= 2
            and T * B * gates * H * H >= threads.MIN_SPLIT_WORK)


def packs(B: int, H: int, T: int, gates: int) -> bool:
    """Whether a call of ``usable`` runs on one thread on a W_hh packed for ``gemv``: W_hh below
    ``MIN_BYTES`` (above it the loops keep ``common.prod``'s bits, on one thread or two, so a
    call's bits do not depend on the thread count) and ``MIN_STEPS`` steps for its B."""
    return gates * H * H * 4 < MIN_BYTES and T >= MIN_STEPS[min(max(B, 1), 2) - 1]


def usable(B: int, H: int, T: int, gates: int, dtype: torch.dtype) -> bool:
    """Whether a plain loop of B rows, H units and T steps runs here: float32, the GEMV's rows,
    and a packed W_hh (``packs``) or a split (``split``).

    Not float64: ``common.prod``'s loops serve it."""
    return (dtype == torch.float32 and 0 < B <= SMALL_ROWS and H > 0
            and (packs(B, H, T, gates) or split(B, H, T, gates)))


MAX_TRAINING_BYTES = 16 << 20


def _training_packs(B: int, H: int, gates: int) -> bool:
    """Whether training's loops of B <= 2 rows pack W_hh: below ``MIN_BYTES`` as inference does,
    and at two rows above it too. Training has no pair, so the inference border (above it the
    pair keeps ``common.prod``'s bits) does not bind it. Above it, measured (modules, forward and
    backward, 2 threads, torch.nn's time / fused's, packed against not): two rows GRU
    (50, 2, 320, 640) 1.66 against 1.03, (50, 2, 512, 1024) 1.65 against 1.01, LSTM
    (100, 2, 160, 320) 0.85 against 0.43; one row level (0.96-1.04), so one row keeps the border
    (and this thread's buffer stays small). Two rows pack up to ``MAX_TRAINING_BYTES`` (measured
    up to 12.6 MB; the packed copy stays in this thread's buffer)."""
    size = gates * H * H * 4
    return size < MIN_BYTES or (B == 2 and size <= MAX_TRAINING_BYTES)


def packed_rows(w_hh: np.ndarray, B: int, H: int, T: int, gates: int,
                training: bool = False) -> tuple | None:
    """For the general loops (the variants, and training; the plain cell's inference runs
    ``lstm``/``gru`` here): the ``gemv`` pair (packed W_hh, a tail scratch) that their per-step
    product takes in float32 of one or two rows where ``packs`` (in training: from
    ``MIN_STEPS`` steps, of any size at two rows, ``_training_packs``); otherwise None."""
    if w_hh.dtype != np.float32 or w_hh.ndim != 2 or not 0 < B <= SMALL_ROWS:
        return None
    if not (T >= MIN_STEPS[B - 1] and _training_packs(B, H, gates) if training
            else packs(B, H, T, gates)):
        return None
    return gemv.pack(w_hh), np.empty((2, gemv.UNITS), np.float32)


def packed_rows_t(w_hh: np.ndarray, B: int, H: int, T: int, gates: int) -> tuple | None:
    """For the backward loops of one or two rows (``_training_packs``, from
    ``MIN_STEPS_BACKWARD`` steps): the ``gemv`` pair (W_hh^T packed, a tail scratch) for their
    product δa W_hh, or None. That product gives ``common.prod``'s bits
    (``packed.step_prod_t``), so it serves training too; measured (200 steps, product alone,
    fastest of 15): one row 1.9-2.7x ``common.prod``'s loop at H = 64-256, two rows 3.1-3.8x."""
    if w_hh.dtype != np.float32 or w_hh.ndim != 2 or not 0 < B <= SMALL_ROWS \
            or not _training_packs(B, H, gates) or T < MIN_STEPS_BACKWARD:
        return None
    return gemv.pack_t(w_hh), np.empty((2, gemv.UNITS), np.float32)


def _cut(H: int) -> int:
    """Where the second half's units start: a multiple of 16 (a cache line of float32, so the
    halves' rows of h and y do not share one) near H / 2, else of 4."""
    m = 16 if H >= 64 else 4
    return max(m, (H // 2) // m * m)


def _run(kernel: Callable[..., None], H: int, nd: np.dtype, two: bool, size: int) -> str:
    """``kernel(u0, u1, part, sync, scratch, tail)`` on all units here, or as a pair; how it ran
    (``int8_team.pair``'s "pair", "solo" or "one")."""
    def both() -> None:
        kernel(0, H, 0, np.empty(0, np.int64), gemm_scratch(nd), np.empty((2, gemv.UNITS), nd))

    if not two:
        both()
        return "one"
    mid = _cut(H)
    sync = team.sync_counters()
    return team.pair(both, lambda part: kernel(*((0, mid) if part == 0 else (mid, H)), part, sync,
                                               gemm_scratch(nd), np.empty((2, gemv.UNITS), nd)),
                     size)


def _plan(w_hh: np.ndarray, B: int, H: int, T: int, gates: int) -> tuple:
    """(W_hh packed for ``gemv``, whether to split): packed (one thread) below ``MIN_BYTES``,
    whatever the span's length (a call's spans keep one product); otherwise size 0
    (``common.prod``), on two threads where ``split`` allows. The pair's halves
    keep ``common.prod``: a packed W_hh measured no faster there (H = 512, B = 1, 50 against 46 µs
    a step with its packing, 0.8 ms a call; each half's W_hh is 2 MB)."""
    if gates * H * H * 4 < MIN_BYTES:
        return gemv.pack(w_hh), False
    return np.empty((0, 0, gemv.UNITS), np.float32), split(B, H, T, gates)


def lstm(G: np.ndarray, hw: np.ndarray, cw: np.ndarray, Y: np.ndarray, sizes: np.ndarray,
         reverse: bool, w_hh: np.ndarray) -> str:
    """The plain LSTM's steps of G (T, B, 4H) from h = hw, c = cw (both (B, H), updated to the
    last step's state), outputs into Y (T, B, H); returns how it ran (``_run``)."""
    T, B, H = G.shape[0], G.shape[1], cw.shape[1]
    wp, two = _plan(w_hh, B, H, T, 4)
    hb = np.empty((2, B, H), hw.dtype)
    hb[0] = hw

    def kernel(u0: int, u1: int, part: int, sync: np.ndarray, scratch: tuple,
               tail: np.ndarray) -> None:
        steps.lstm(G, hb, cw, Y, sizes, reverse, w_hh, wp, u0, u1, part, sync, scratch, tail)

    mode = _run(kernel, H, hw.dtype, two, T * B * 4 * H * H)
    hw[:] = hb[T % 2]
    return mode


def gru(G: np.ndarray, hw: np.ndarray, Y: np.ndarray, sizes: np.ndarray, reverse: bool,
        w_hh: np.ndarray, bn: np.ndarray) -> str:
    """The reset_after GRU's steps of G (T, B, 3H) from h = hw (updated), outputs into Y;
    returns how it ran (``_run``)."""
    T, B, H = G.shape[0], G.shape[1], hw.shape[1]
    wp, two = _plan(w_hh, B, H, T, 3)
    hb = np.empty((2, B, H), hw.dtype)
    hb[0] = hw
    V = np.empty((B, 3 * H), hw.dtype)

    def kernel(u0: int, u1: int, part: int, sync: np.ndarray, scratch: tuple,
               tail: np.ndarray) -> None:
        steps.gru(G, hb, Y, V, sizes, reverse, w_hh, wp, bn, u0, u1, part, sync, scratch, tail)

    mode = _run(kernel, H, hw.dtype, two, T * B * 3 * H * H)
    hw[:] = hb[T % 2]
    return mode
