"""A row of ``engine="auto"``'s tables, how a call matches it, and the frozen tables.

``dispatch.TABLE`` (the shipped rules), a frozen table a run pins (``dispatch.TABLES``) and a
tuned plan's entries (``gatedrnn.engines.plan``) are all sequences of ``Row``: the first row whose
features all match a call names its engine (``Explanation``, what ``dispatch.explain`` returns,
says which row it was and its borders). A frozen table never changes once named, so a run
that pins it (the toolkit's ``TrainConfig.dispatch``) takes the same engines, and so the same
bits, whatever the shipped rules become.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

HALF = ("half", "bfloat16")  # the two 16-bit float keys

# Where a row's figures were measured (``Row.measured_on``).
MACHINES = {
    "xeon-spr": "Intel Xeon, Sapphire Rapids class (AVX-512, avx512_bf16, AMX), 2 cores",
    "epyc-zen4": "AMD EPYC Zen 4 (AVX-512, avx512_bf16, no AMX), 2 cores",
    "epyc-zen3": "AMD EPYC Zen 3 (AVX2 and FMA, no AVX-512), 2 cores",
    "epyc": "AMD EPYC (Zen 3 or Zen 4: the earlier rounds' shared CPUs), 2 cores",
    "design": "planned from the design, not measured",
    "tuned": "measured on this machine by gatedrnn.tune (a plan entry)",
}


@dataclass(frozen=True)
class Row:
    """One row of the table: the engine, and the features a call must have (None: any)."""

    engine: str
    device: str | None = None  # "cpu" or "other" (CUDA, MPS, ...)
    # "LSTM", "GRU", "RNN", a cell class ("LSTMCell", ...), or a declared kind without a torch
    # op ("mingru", ...); a tuple matches any of its members (dtype likewise)
    kind: str | tuple[str, ...] | None = None
    dtype: str | tuple[str, ...] | None = None  # "float32", "float64", "half", "bfloat16", "other"
    torch_op: bool | None = None  # torch has an op for it: no variant, no return_gates, one head
    simple: bool | None = None  # neither packed nor proj_size: where oneDNN runs the LSTM
    proj: bool | None = None  # an LSTM with proj_size
    training: bool | None = None  # autograd records the call
    min_batch: int = 0
    max_batch: int | None = None  # the row matches batch sizes min_batch <= N <= max_batch
    max_work: int | None = None  # ... and calls of at most this work T·N·H (None: any)
    triton: bool | None = None  # the Triton engine can run the call (triton imports, CUDA tensor)
    amx: bool | None = None  # the CPU has AMX tiles (``machine.CPU.amx``)
    min_work: int = 0  # ... and calls of at least this work (a row with min_work > 0 needs it known)
    min_threads: int = 1
    max_threads: int | None = None  # ... torch.get_num_threads() in this range, read per call
    bf16: bool | None = None  # the CPU has bfloat16 hardware: avx512_bf16 or AMX (``CPU.bf16``)
    isa: str | tuple[str, ...] | None = None  # the CPU's vector unit: "avx512", "avx2", "other"
    min_hidden: int = 0  # ... and hidden sizes H of at least this (a step's product grows as H²)
    max_hidden: int | None = None  # ... and of at most this (a row with either needs H known)
    # ... and calls of at most this many steps T = work / (N·H) (a row with it needs both known)
    max_steps: int | None = None
    measured_on: str | None = None  # a key of ``MACHINES``: where the row's figures come from


def describe(row: Row) -> str:
    """The row with only the fields that are not their defaults: Row(native, kind='LSTM', ...)."""
    parts = [row.engine] + [f"{f.name}={getattr(row, f.name)!r}" for f in fields(Row)[1:]
                            if getattr(row, f.name) != f.default]
    return f"Row({', '.join(parts)})"


def bounds(row: Row) -> str:
    """The row's borders in words: "batch 0-3, hidden 97-inf, threads 2-inf" (only those it has)."""
    out = []
    for name, lo, hi in (("batch", row.min_batch, row.max_batch), ("hidden", row.min_hidden,
                         row.max_hidden), ("work", row.min_work, row.max_work),
                         ("threads", row.min_threads, row.max_threads),
                         ("steps", 0, row.max_steps)):
        if lo != (1 if name == "threads" else 0) or hi is not None:
            out.append(f"{name} {lo}-{'inf' if hi is None else hi}")
    return ", ".join(out) or "none"


def matches(row: Row, features: Mapping[str, object], batch: int, work: int | None,
            threads: int, hidden: int | None = None) -> bool:
    """True when the call with these features, sizes and thread count falls in ``row`` (a row
    with a work or hidden-size border does not match a call whose work or hidden size is None)."""
    if batch < row.min_batch or (row.max_batch is not None and batch > row.max_batch):
        return False
    if (row.max_hidden is not None or row.min_hidden) and (
            hidden is None or hidden < row.min_hidden
            or (row.max_hidden is not None and hidden > row.max_hidden)):
        return False
    if (row.max_work is not None or row.min_work) and (
            work is None or work < row.min_work or (row.max_work is not None and work > row.max_work)):
        return False
    if threads < row.min_threads or (row.max_threads is not None and threads > row.max_threads):
        return False
    if row.max_steps is not None and (work is None or not hidden or batch < 1
                                      or work > row.max_steps * batch * hidden):
        return False
    for key, value in features.items():
        want = getattr(row, key)
        if not (want is None or want == value or (type(want) is tuple and value in want)):
            return False
    return True


@dataclass(frozen=True)
class Explanation:
    """Which engine ``engine="auto"`` took for one call, and which plan entry or table row said so."""

    engine: str  # what ran (``module.last_engine``)
    chosen: str | None  # the engine the deciding row names (None: auto was not asked)
    source: str  # "plan", "table", "pinned table" or "asked" (engine= other than "auto")
    index: int | None  # the row's position in the plan or in the table
    row: Row | None
    features: dict[str, Any]
    note: str = ""  # a plan entry's measurements

    def __str__(self) -> str:
        if self.row is None:
            return f"ran {self.engine}: {self.note}"
        f = self.features
        call = (f"{f['kind']} {f['dtype']} {'training' if f['training'] else 'inference'}, "
                f"batch {f['batch']}, work {f['work']}, hidden {f.get('hidden')}, "
                f"{f['threads']} thread(s)")
        where = f"{self.source} row {self.index}"
        text = (f"{call}: {where} -> {self.chosen} (ran {self.engine})\n  {describe(self.row)}"
                f"\n  borders: {bounds(self.row)}")
        if self.row.measured_on:
            text += f"\n  measured on: {MACHINES.get(self.row.measured_on, self.row.measured_on)}"
        return text + (f"\n  {self.note}" if self.note else "")


_DECLARED = ("mingru", "minlstm", "slstm")
_CELLS = ("LSTMCell", "GRUCell", "RNNCell")

# The shipped table as it stood in November 2026, frozen: the engines of the published learning
# runs (docs/results/) come from it. Its measurements are in dispatch.TABLE's notes and in the git
# history of dispatch.py. Never edit it: name a new frozen table instead.
TABLE_2026_11: tuple[Row, ...] = (
    Row("fused", device="cpu", kind=_DECLARED, dtype=("float32", "float64")),
    Row("triton", device="other", kind=_DECLARED, triton=True),
    Row("scan", device="other", kind=("mingru", "minlstm")),
    Row("reference", kind=_DECLARED, torch_op=False),
    Row("fused", device="cpu", kind=("LSTMCell", "GRUCell"), dtype=("float32", "float64"),
        torch_op=True, training=True),
    Row("native", kind=_CELLS, torch_op=True, training=True),
    Row("reference", kind=_CELLS, torch_op=False),
    Row("native", device="other", torch_op=True),
    Row("triton", device="other", kind=("LSTM", "GRU"), triton=True),
    Row("reference", device="other"),
    Row("native", dtype="other", torch_op=True),
    Row("reference", dtype="other"),
    Row("fused", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, max_work=4096),
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=False, min_batch=4),
    Row("fused", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=True, max_work=512),
    Row("native", device="cpu", kind="RNN", dtype="float32", torch_op=True, simple=True,
        training=True, max_work=4096),
    Row("native", device="cpu", kind="LSTM", dtype="float32", torch_op=True, simple=True,
        training=True, max_batch=31),
    Row("native", device="cpu", kind="LSTM", dtype="float64", torch_op=True, training=False,
        min_batch=16),
    Row("native", device="cpu", kind="GRU", dtype="float64", torch_op=True, training=False,
        min_batch=16),
    Row("native", device="cpu", kind="LSTM", dtype="bfloat16", torch_op=True, amx=True,
        proj=False, training=False),
    Row("native", device="cpu", kind="LSTM", dtype="bfloat16", torch_op=True, amx=True,
        simple=True, training=True, min_batch=32),
    Row("fused-float32", dtype=HALF),
    Row("fused"),
)
