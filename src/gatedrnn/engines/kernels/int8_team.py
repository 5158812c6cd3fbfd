"""Two threads on one int8 time loop, each with half of the hidden units, meeting once per step.

Splitting the batch rows (``threads.split_rows``) needs no meeting, but each thread then streams
all of W_hh at every step; at H = 1024 that is 4 MB of int8, more than one core's L2, so both
threads read it from L3 and neither gets faster. Split by hidden units instead, each thread reads
its half of the weights (2 MB, which its own L2 keeps between steps) and computes the gates and
the state of its units; h of step t is then complete only when both halves are, so the threads
meet once per step (``barrier``). The loop keeps h in two buffers (step k reads buffer k % 2 and
writes the other), so one meeting per step is enough: no thread writes a buffer the other may
still be reading.

The meeting is a pair of step counters, one per thread, 64 bytes apart (their own cache lines):
a thread publishes its step with a release store and spins, with ``pause``, on an acquire load of
the other's; after ``SPINS`` rounds it calls ``sched_yield`` between polls, so that on a busy
machine it hands its core to whatever runs there (possibly the other half).

``pair`` runs a loop on two threads only when both halves are running at once: the half that
arrives first waits (up to ``WAIT_S``) for the other to start on another thread; if it does not
(one thread in the team, or a busy pool), the first half runs every unit alone and the late half
returns at once. So a call never waits for a half that is queued behind it.
"""

from __future__ import annotations

import platform
import sys
import threading
from collections.abc import Callable

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .threads import split_rows

_I32, _I64 = ir.IntType(32), ir.IntType(64)
LINE = 8  # int64 per cache line: each thread's counter on its own line
SPINS = 512  # pause rounds (~140 cycles each on Sapphire Rapids) before yielding the core
WAIT_S = 0.05  # how long the first half waits for the second to start
# ``pause`` is an x86 instruction and ``sched_yield`` a POSIX call: elsewhere the wait spins
# without the hint (aarch64) or without yielding (Windows), which is slower but never wrong.
_X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
_POSIX = sys.platform != "win32"


@intrinsic
def _load_acquire(typingctx, addr):
    """The int64 at address ``addr`` (intp), an atomic load with acquire order."""
    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], _I64.as_pointer())
        return builder.load_atomic(ptr, "acquire", 8)
    return types.int64(addr), codegen


@intrinsic
def _store_release(typingctx, addr, value):
    """Store the int64 ``value`` at address ``addr``, atomically with release order."""
    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], _I64.as_pointer())
        builder.store_atomic(context.cast(builder, args[1], signature.args[1], types.int64), ptr,
                             "release", 8)
        return context.get_dummy_value()
    return types.void(addr, value), codegen


@intrinsic
def _relax(typingctx, rounds):
    """``pause`` (the spin-wait hint) while rounds < SPINS, else ``sched_yield()``."""
    def codegen(context, builder, signature, args):
        mod = builder.module
        pause = (mod.globals.get("llvm.x86.sse2.pause") or ir.Function(
            mod, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")) if _X86 else None
        yld = (mod.globals.get("sched_yield") or ir.Function(
            mod, ir.FunctionType(_I32, []), "sched_yield")) if _POSIX else None
        with builder.if_else(builder.icmp_signed("<", args[0], ir.Constant(_I64, SPINS))) \
                as (spin, give):
            with spin:
                if pause is not None:
                    builder.call(pause, [])
            with give:
                if yld is not None:
                    builder.call(yld, [])
                elif pause is not None:
                    builder.call(pause, [])
        return context.get_dummy_value()
    return types.void(rounds), codegen


@numba.njit(inline="always", nogil=True, cache=True)
def barrier(sync, part, step):
    """Publish that half ``part`` (0 or 1) finished ``step`` (counted from 1) and wait until the
    other half has too. ``sync`` (2·LINE,) int64, zero before the loop."""
    base = sync.ctypes.data
    _store_release(base + 8 * LINE * part, step)
    other = base + 8 * LINE * (1 - part)
    rounds = 0
    while _load_acquire(other) < step:
        _relax(np.int64(rounds))
        rounds += 1


def sync_counters() -> np.ndarray:
    """Fresh counters for one loop on two threads."""
    return np.zeros(2 * LINE, np.int64)


def pair(both: Callable[[], None], half: Callable[[int], None], size: int | None = None) -> str:
    """Run ``half(0)`` and ``half(1)`` on two threads at once (torch's OpenMP team, else a pool
    thread: ``threads.split_rows``), or ``both()`` (every unit on this thread) when two threads
    do not run at once. ``half`` must meet its twin at ``barrier`` every step. Returns how it
    ran: "pair", "solo" (a half waited in vain) or "one" (no second thread to ask for)."""
    lock = threading.Lock()
    started = threading.Event()
    arrived, mode = [0], [""]

    def work(part: int, lo: int, hi: int) -> None:
        if hi - lo == 2:  # split_rows did not split: one thread, every unit
            mode[0] = "one"
            both()
            return
        with lock:
            if mode[0] == "solo":  # the other half ran every unit
                return
            arrived[0] += 1
            if arrived[0] == 2:
                mode[0] = "pair"
                started.set()
        if not started.wait(WAIT_S):
            with lock:
                if mode[0] != "pair":
                    mode[0] = "solo"
            if mode[0] == "solo":
                both()
                return
        half(part)

    split_rows(2, work, 1, 1, size=size)
    return mode[0]
