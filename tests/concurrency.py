"""Concurrent inference from several Python threads, checked against serial calls.

Used by the kernel tests of each engine: the fused engines split a call's rows over two threads
(kernels.threads), so several callers at once must still each get their own numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch


def concurrent_equals_serial(fn: Callable[[torch.Tensor], torch.Tensor], inputs: list[torch.Tensor],
                             rounds: int = 3) -> bool:
    """fn(x) for every x once serially, then ``rounds`` times from one Python thread per input,
    all at once, with torch at 2 threads; whether each concurrent result equals its serial one
    bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = [fn(x) for x in inputs]
        got: list = [None] * len(inputs)

        def work(i: int) -> None:
            for _ in range(rounds):
                got[i] = fn(inputs[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        torch.set_num_threads(before)
    return all(g is not None and torch.equal(g, w) for g, w in zip(got, want, strict=True))
