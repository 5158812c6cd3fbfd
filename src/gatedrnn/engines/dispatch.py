"""Which engine ``engine="auto"`` runs for one call: the first matching row of a measured table.

The engines (see ``gatedrnn.engines.stack`` and ``gatedrnn.modules``):
- "native": torch's own recurrent ops on the module's parameters (torch.nn's forward itself):
  cuDNN on CUDA, oneDNN for the float32 and bfloat16 LSTM on the CPU, a generic loop otherwise.
- "fused": gatedrnn's numba kernels (CPU, float32 and float64, every variant).
- "fused-float32": the fused kernels on a bfloat16 or float16 call: inputs, state and weights are
  cast to float32 inside the autograd graph, the outputs cast back (half storage, float32 sums).
- "reference": the eager loop over ``gatedrnn.equations.cells``; any device and dtype, every variant.
- "scan": the log-space parallel scan of minGRU and minLSTM (``gatedrnn.equations.scan``).

Which engines a cell kind has is its declaration's (``gatedrnn.equations.kinds``); this table only
says which of them ``engine="auto"`` picks.

``choose`` describes a call by a few features (and the CPU's: ``machine.CPU``, and the thread
count, read per call) and returns the engine of the first row that matches them, in this order:
- a pinned table, where a run pinned one (``pinned``, ``TABLES``: the published runs pin theirs);
- otherwise the entries of this machine's tuned plan (``gatedrnn.tune``, ``gatedrnn.engines.plan``),
  then the shipped rules, ``TABLE`` (``gatedrnn.engines.table``).
The rows come from ``benchmarks/dispatch.py``, which times every engine over a grid of shapes and
prints, per row, the fastest engine next to the one this rule picks; each row names the machine
its figures come from (``Row.measured_on``, ``rows.MACHINES``). ``explain`` says which row or plan
entry decides a call.

Example:
    >>> from gatedrnn.engines import dispatch
    >>> dispatch.choose("cuda", "GRU", "float32", torch_op=True, simple=True, training=True, batch=8)
    'native'
    >>> dispatch.choose("cpu", "GRU", "float32", torch_op=True, simple=True, training=True, batch=8)
    'fused'
    >>> dispatch.choose("cuda", "LSTM", "float32", torch_op=False, simple=True, training=True,
    ...                 batch=8, triton=True)  # a variant on a GPU with triton
    'triton'
    >>> dispatch.choose("cuda", "mingru", "float32", torch_op=False, simple=True, training=True,
    ...                 batch=8)
    'scan'
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import machine, plan
from .rows import HALF, MACHINES, TABLE_2026_11, Explanation, Row, matches
from .table import TABLE  # the shipped rules (dispatch.TABLE)

__all__ = ["ENGINES", "DTYPES", "HALF", "MACHINES", "CPU", "AMX", "Row", "TABLE", "TABLES",
           "choose", "dtype_key", "pinned", "pin", "reload", "explain", "Explanation"]

ENGINES = ("auto", "reference", "fused", "native")

DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16",
          torch.float16: "half"}

CPU = machine.detect()  # this process's CPU: its ISA, its bfloat16 hardware
AMX = CPU.amx  # (the first CPU feature the table knew; ``CPU`` has them all)

# The frozen tables a run can pin (``pinned``): a frozen table never changes. To pin today's
# rules, copy TABLE into rows.py under the next month's name and add it here.
TABLES: dict[str, tuple[Row, ...]] = {"2026-11": TABLE_2026_11}


@dataclass
class _Rules:
    """What ``choose`` walks for the calls that give no table: a name, the rows (a plan's entries
    first, then the table's), how many of them are the plan's, and the answers so far."""

    name: str
    rows: tuple[Row, ...]
    planned: int = 0  # rows[:planned] are the plan's entries
    notes: tuple[str, ...] = ()  # what was measured for each plan entry
    cache: dict[tuple, str] | None = None


_RULES: _Rules | None = None  # None: the default rules, loaded (with the plan) at the first call
_CACHE: dict[tuple, str] = {}  # the active rules' answers, by the call's features
_NAMED: dict[str, _Rules] = {}  # pinned tables' rules, kept with their answers across pins
_TRACE: list[tuple[tuple, str, int, _Rules]] | None = None  # explain's record of decisions


def _default() -> _Rules:
    """The shipped rules behind this machine's plan, where one is used (``plan.load``)."""
    found = plan.load(TABLE)
    if found is None:
        return _Rules("shipped", TABLE, cache={})
    entries = tuple(r for r, _ in found.entries)
    return _Rules(f"plan {found.path}", entries + TABLE, len(entries),
                  tuple(n for _, n in found.entries), cache={})


def _activate(rules: _Rules) -> None:
    global _RULES, _CACHE
    if rules.cache is None:
        rules.cache = {}
    _RULES, _CACHE = rules, rules.cache


def ruleset(rows: Sequence[Row], name: str = "rows") -> _Rules:
    """Rows ready to pin (``pin``, ``pinned``), keeping their answers across pins."""
    return _Rules(name, tuple(rows), cache={})


def pin(name: str | Sequence[Row] | _Rules | None) -> _Rules | None:
    """Make ``engine="auto"`` follow the frozen table ``TABLES[name]`` (a plan is then ignored),
    a sequence of rows, or, with None, the default rules (the plan, then ``TABLE``); returns the
    rules it replaces, which ``pin`` takes back. ``pinned`` is the same as a context manager."""
    previous = _RULES
    if name is None:
        _activate(_default())
    elif isinstance(name, _Rules):
        _activate(name)
    elif isinstance(name, str):
        if name not in TABLES:
            raise ValueError(f"no dispatch table named {name!r}; there are {sorted(TABLES)}")
        _activate(_NAMED.setdefault(name, _Rules(f"table {name}", TABLES[name])))
    else:
        _activate(_Rules("rows", tuple(name)))
    return previous


@contextlib.contextmanager
def pinned(name: str | Sequence[Row] | _Rules | None) -> Iterator[None]:
    """``with dispatch.pinned("2026-11"): ...``: the calls inside take that frozen table's engines
    (a seeded run then gives the same bits whatever the shipped rules become)."""
    previous = pin(name)
    try:
        yield
    finally:
        if previous is None:
            reload()
        else:
            pin(previous)


def reload() -> None:
    """Forget the rules' answers and the plan; the next call reads ``GATEDRNN_PLAN`` and the plan
    file again (after ``gatedrnn.tune`` wrote one, or a test changed the CPU's flags)."""
    global _RULES, _CACHE
    _RULES, _CACHE = None, {}
    _NAMED.clear()


def rules_token() -> object:
    """The rules ``choose`` walks now, as an identity token: a cache of ``choose``'s answers made
    under one token is stale once the token changes (``pin``, ``pinned``, ``reload``, a new plan)."""
    if _RULES is None:
        _activate(_default())
    return _RULES


def is_recording() -> bool:
    """True inside ``tracing()`` (``explain``): every call must then ask ``choose``, unmemoized."""
    return _TRACE is not None


def rules_in_effect() -> str:
    """What ``engine="auto"`` follows in this process, in words (for benchmark reports)."""
    if _RULES is None:
        _activate(_default())
    assert _RULES is not None
    if _RULES.planned:
        return f"the tuned {_RULES.name} ({_RULES.planned} entries), then the shipped table"
    return "the shipped table (no plan)" if _RULES.name == "shipped" else f"the {_RULES.name}"


def choose(device_type: str, kind: str, dtype: str, *, torch_op: bool, simple: bool,
           training: bool, batch: int, work: int | None = None, triton: bool = False,
           proj: bool = False, table: Sequence[Row] | None = None, hidden: int | None = None
           ) -> str:
    """The engine for a call with these features (a pure function of them, the CPU and the
    thread count: no tensors, no device).

    device_type: ``tensor.device.type``; kind: "LSTM" | "GRU" | "RNN" | "LSTMCell" | "GRUCell" |
    "RNNCell" | "mingru" | "minlstm" | "slstm"; dtype: a key of ``DTYPES``' values or "other";
    batch: the batch size N;
    work: T·N·H (time steps, batch, hidden size; N·H for a cell), or None when the caller does not
    know it (rows with ``max_work`` then do not match); hidden: the hidden size H, or None (rows
    with a hidden-size border then do not match); triton: the Triton engine can run the call
    (triton imports and the tensor is on CUDA; ``gatedrnn.engines.stack.triton_ready``); proj: an
    LSTM with ``proj_size``; table: walk these rows instead of the active rules (uncached).
    The CPU's features (``CPU``) and ``torch.get_num_threads()`` are features of every call.
    """
    # (~0.2 µs for the thread count and ~0.2 for the key and the lookup: a small cell's call is ~20)
    key = (device_type, kind, dtype, torch_op, simple, training, batch, work, triton, proj,
           torch.get_num_threads(), hidden)
    if table is not None:
        return table[_first(table, key)].engine
    engine = _CACHE.get(key)
    if engine is None:
        engine = _decide(key)
    return engine


def _first(rows: Sequence[Row], key: tuple) -> int:
    device_type, kind, dtype, torch_op, simple, training, batch, work, triton, proj, threads, \
        hidden = key
    features = {"device": "cpu" if device_type == "cpu" else "other", "kind": kind,
                "dtype": dtype, "torch_op": torch_op, "simple": simple, "training": training,
                "triton": triton, "proj": proj, "amx": CPU.amx, "bf16": CPU.bf16, "isa": CPU.isa}
    for i, row in enumerate(rows):
        if matches(row, features, batch, work, threads, hidden):
            return i
    raise AssertionError("the last row of the table matches every call")  # pragma: no cover


def _decide(key: tuple) -> str:
    """A call the active rules have not answered yet: walk them (~5 µs) and keep the answer."""
    if _RULES is None:
        _activate(_default())
    rules = _RULES
    assert rules is not None and rules.cache is not None
    i = _first(rules.rows, key)
    if _TRACE is not None:
        _TRACE.append((key, rules.rows[i].engine, i, rules))
        return rules.rows[i].engine  # (explain: nothing kept, so every call is walked)
    if len(rules.cache) > 4096:  # bounded: a stream of ever-new (batch, work) pairs restarts it
        rules.cache.clear()
    rules.cache[key] = rules.rows[i].engine
    return rules.rows[i].engine


def dtype_key(dtype: torch.dtype) -> str:
    """The table's name for a dtype."""
    return DTYPES.get(dtype, "other")


@contextlib.contextmanager
def tracing() -> Iterator[list[tuple[tuple, str, int, _Rules]]]:
    """Record every decision ``choose`` makes inside (the call's features as ``choose``'s key,
    the engine, the row's index, the rules walked); nothing is cached meanwhile."""
    global _TRACE, _CACHE
    if _RULES is None:
        _activate(_default())
    trace: list[tuple[tuple, str, int, _Rules]] = []
    saved, _TRACE, _CACHE = _CACHE, trace, {}  # every call walks the rules and is recorded
    try:
        yield trace
    finally:
        _TRACE, _CACHE = None, saved


def active_rows() -> tuple[Row, ...]:
    """The rows ``choose`` walks now: the pinned table, or the plan's entries and ``TABLE``."""
    if _RULES is None:
        _activate(_default())
    assert _RULES is not None
    return _RULES.rows


_KEYS = ("device", "kind", "dtype", "torch_op", "simple", "training", "batch", "work", "triton",
         "proj", "threads", "hidden")


def explain(module: torch.nn.Module, input: Any, hx: Any = None) -> Explanation:
    """Run ``module(input, hx)`` once (in the current grad mode) and say which engine ran and which
    plan entry or table row chose it: the last decision ``choose`` made during the call.

    Example:
        >>> import torch, gatedrnn
        >>> from gatedrnn.engines import dispatch
        >>> with torch.no_grad():
        ...     why = dispatch.explain(gatedrnn.GRU(8, 16), torch.randn(20, 4, 8))
        >>> why.engine, why.source
        ('fused', 'table')
    """
    with tracing() as trace:
        module(input) if hx is None else module(input, hx)
    ran = str(getattr(module, "last_engine", None))
    if not trace:
        asked = getattr(module, "engine", "auto")
        return Explanation(ran, None, "asked", None, None, {},
                           f"engine={asked!r} was asked for" if asked != "auto"
                           else "auto took a path that asks no table")
    key, engine, i, rules = trace[-1]
    features = dict(zip(_KEYS, key))
    if i < rules.planned:
        return Explanation(ran, engine, "plan", i, rules.rows[i], features, rules.notes[i])
    source = "table" if rules.name == "shipped" or rules.planned or rules.name.startswith("plan") \
        else f"pinned {rules.name}"
    return Explanation(ran, engine, source, i - rules.planned, rules.rows[i], features)

