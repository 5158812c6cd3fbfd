"""``gatedrnn.tune``: time the engines on this machine and save the borders as a plan.

Two ways, as FFTW plans and ``torch.backends.cudnn.benchmark`` measure:

- ``tune()``: a default grid (``GRID``) of cell kinds, dtypes, modes, input kinds (plain, packed,
  proj_size) and shapes that covers the calls of ``benchmarks/``; for each point, ``engine="auto"``
  is timed with each engine it may pick (torch's op, "native", and the fused kernels with their
  fast paths, "fused"), interleaved, the fastest of a few rounds counting. Each group's points
  become borders (``borders``): a band of batch sizes around each measured batch (split at the
  geometric mean of two neighbours), in it a band of hidden sizes H around each measured H (the
  step's product grows as H², so the border between torch's op and the fused loops moves with
  H at equal work), and in that a band of work T·B·H around each measured work, so a shape off the
  grid takes the engine of its nearest measured neighbour. Bands that decide alike merge: where H
  does not move the border the entry has none. Minutes on two cores.
- ``tune(model, example_input)``: the engines for the calls the model makes on that input, timed
  over the model's whole step (forward, and backward in training); seconds. Its entries cover
  the neighbourhood of each call (half to twice the work, batch and hidden size within a factor
  √2) and come before the grid's.

A measured engine changes the last bits of float32 results, so tuning is asked for, never done
behind a user's back; a seeded run with the same plan takes the same engines. Where the shipped
rule's engine is within ``SLACK`` of the fastest, the entry keeps the rule's engine: noise alone
must not move a border.

Example:
    >>> import torch, gatedrnn
    >>> from gatedrnn.modules import tune as tuning
    >>> points = {(1, 64, 320): "fused", (1, 128, 6400): "native", (64, 128, 20480): "native"}
    >>> for band in tuning.borders(points):  # (batch, hidden, work): engine
    ...     print(band)  # batch band, and in it hidden bands, and in those work bands
    (0, 8, [(0, 90, [(0, None, 'fused')]), (91, None, [(0, None, 'native')])])
    (9, None, [(0, None, [(0, None, 'native')])])
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.utils.rnn import pack_padded_sequence

from ..engines import dispatch, plan
from ..engines.rows import HALF, Row
from . import lstm_gru_rnn, rnn_cells

SLACK = 0.03  # the shipped rule's engine stays unless another is this much faster
CANDIDATES = ("native", "fused")
Timer = Callable[[Callable[[], object]], float]  # runs a call, returns its seconds
Progress = Callable[[int, int, str], None]  # (done, total, what is being measured)


@dataclass(frozen=True)
class Group:
    """Calls that share a border: one cell kind, dtype, mode and input kind."""

    kind: str  # "LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"
    dtype: str  # "float32", "float64", "bfloat16"
    training: bool
    input: str = "plain"  # "plain", "packed" or "proj" (an LSTM with proj_size)

    @property
    def cell(self) -> bool:
        return self.kind.endswith("Cell")


# (T, I, H); _SMALL and _LONG share H, so a border in work at one hidden size shows, as do
# _MEDIUM and _ROWS at a few rows, where the fused loops pack W_hh from 96 steps (kernels.pair).
_SMALL, _LONG, _MEDIUM, _LARGE = (5, 32, 64), (100, 32, 64), (50, 64, 128), (100, 128, 256)
_ROWS = (200, 64, 128)


def _grid() -> list[tuple[Group, list[tuple[int, int, int, int]]]]:
    """The default grid: (group, shapes (T, B, I, H); a cell's T is 1)."""
    out = []
    for kind in ("LSTM", "GRU", "RNN"):
        for training in (False, True):
            for dtype in ("float32", "float64", "bfloat16"):
                full = dtype == "float32"  # small calls matter most in float32
                batches = (1, 4, 16, 32, 64, 256) if full else (1, 16, 64)
                shapes = [(T, B, I, H) for B in batches
                          for T, I, H in (_SMALL, _LONG, _MEDIUM, _LARGE)
                          if (full or B == 1 or (T, I, H) != _SMALL) and (full or (T, I, H) != _LONG)
                          and not (B > 64 and (T, I, H) == _LARGE)]
                shapes += [(*_ROWS[:1], B, *_ROWS[1:]) for B in batches if full and B <= 4]
                out.append((Group(kind, dtype, training), shapes))
                for form in ("packed", "proj") if kind == "LSTM" else ("packed",):
                    out.append((Group(kind, dtype, training, form),
                                [(50, B, 64, 128) for B in (1, 16, 64)]))
    for kind in ("LSTMCell", "GRUCell", "RNNCell"):  # (inference: the streaming step, no choice)
        for dtype in ("float32", "float64"):
            out.append((Group(kind, dtype, True),
                        [(1, B, H // 2, H) for B in (1, 8, 64) for H in (64, 256)]))
    return out


GRID = _grid()


def _model(group: Group, I: int, H: int) -> torch.nn.Module:  # noqa: E741
    kw: dict[str, Any] = {"dtype": getattr(torch, group.dtype)}
    if group.input == "proj":
        kw["proj_size"] = H // 2
    m = getattr(rnn_cells if group.cell else lstm_gru_rnn, group.kind)(I, H, **kw)
    return m.train(group.training)


def _inputs(group: Group, shape: tuple[int, int, int, int], like: torch.nn.Module) -> tuple:
    T, B, I, H = shape  # noqa: E741
    g = torch.Generator().manual_seed(0)
    dt = getattr(torch, group.dtype)
    if group.cell:
        h = torch.randn(B, H, generator=g).to(dt)
        return (torch.randn(B, I, generator=g).to(dt), (h, h.clone()) if group.kind == "LSTMCell"
                else h)
    x: Any = torch.randn(T, B, I, generator=g).to(dt)
    if group.input == "packed":
        lengths = torch.randint(max(1, T // 2), T + 1, (B,), generator=g)
        lengths[0] = T
        x = pack_padded_sequence(x, lengths, enforce_sorted=False)
    return (x,)


def _leaves(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "batch_sizes"):  # a PackedSequence
        return [out.data]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _leaves(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _leaves(o)]
    return []


def step(model: torch.nn.Module, args: tuple, training: bool) -> Callable[[], object]:
    """One call of ``model(*args)``: under no_grad, or forward + backward of its outputs' sum."""
    if not training:
        def infer() -> object:
            with torch.no_grad():
                return model(*args)
        return infer

    def train() -> None:
        model.zero_grad(set_to_none=True)
        loss = sum((t.float().sum() for t in _leaves(model(*args)) if t.is_floating_point()),
                   torch.zeros(()))
        if loss.requires_grad:
            loss.backward()
    return train


def wall(call: Callable[[], object]) -> float:
    """The default timer: seconds of one run of ``call``."""
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def race(calls: dict[str, tuple[Sequence[Row], Callable[[], object]]], repeats: int,
         timer: Timer = wall) -> dict[str, float]:
    """Seconds per call of each contender (its rules pinned while it runs): one warm-up each,
    then ``repeats`` interleaved rounds of loops of calls (sized to ~2 ms from the warm-up), the
    fastest counting. A contender three times as slow as the best after two rounds stops early."""
    loops: dict[str, int] = {}
    rules = {name: dispatch.ruleset(rows) for name, (rows, _) in calls.items()}
    best = dict.fromkeys(calls, math.inf)
    for name, (_, call) in calls.items():
        with dispatch.pinned(rules[name]):
            once = timer(call)
        loops[name] = max(1, min(200, int(2e-3 / max(once, 1e-7))))
    live = list(calls)
    for r in range(max(1, repeats)):
        for i in range(len(live)):
            name = live[(r + i) % len(live)]
            call = calls[name][1]
            n = loops[name]
            with dispatch.pinned(rules[name]):
                t = timer(lambda: [call() for _ in range(n)]) / n  # noqa: B023 - run here
            best[name] = min(best[name], t)
        if r >= 1:  # (after two rounds: one disturbed round must not decide)
            fastest = min(best[n] for n in live)
            live = [n for n in live if best[n] <= 3 * fastest]
    return best


def _forcing(engine: str, dtype: str, match: dict[str, Any] | None = None) -> tuple[Row, ...]:
    """The active rules with one row in front sending the calls that ``match`` (every CPU call
    with a torch op by default) to ``engine``."""
    name = "fused-float32" if engine == "fused" and dtype in HALF else engine
    return (Row(name, device="cpu", torch_op=True, **(match or {})),) + dispatch.active_rows()


Bands = list[tuple[int, int | None, Any]]  # (lo, hi, what the band decides), hi None: open


def _bands(values: Iterable[int], inner: Callable[[int], Any]) -> Bands:
    """A band around each measured value, from the geometric mean of it and its lower neighbour
    to that of it and its upper one (the outermost bands open: 0 and None), deciding what
    ``inner(value)`` says; neighbouring bands that decide alike are merged."""
    vs = sorted(set(values))
    out: Bands = []
    for j, v in enumerate(vs):
        lo = 0 if j == 0 else math.isqrt(vs[j - 1] * v) + 1
        hi = None if j == len(vs) - 1 else math.isqrt(v * vs[j + 1])
        what = inner(v)
        if out and out[-1][2] == what:
            lo = out.pop()[0]
        out.append((lo, hi, what))
    return out


def borders(winners: dict[tuple[int, int, int], str]) -> Bands:
    """Bands from measured points ``(batch, hidden, work) -> engine``: batch bands, in each hidden
    bands (from that batch's points), in each work bands (lo, hi, engine). A band runs from the
    geometric mean of a measured value and its lower neighbour to that of it and its upper one;
    the outermost bands are open (0 and None), and neighbouring bands that decide alike merge,
    so a batch whose engines do not change with H has one hidden band (0, None)."""
    def by_batch(b: int) -> Bands:
        def by_hidden(h: int) -> Bands:
            def by_work(w: int) -> str:
                return winners[(b, h, w)]
            return _bands((w for (bb, hh, w) in winners if (bb, hh) == (b, h)), by_work)
        return _bands((h for (bb, h, _) in winners if bb == b), by_hidden)
    return _bands((b for b, _, _ in winners), by_batch)


def _rule(group: Group, B: int, work: int, hidden: int | None) -> str:
    """The shipped rule's engine for a point ("fused" for "fused-float32")."""
    e = dispatch.choose("cpu", group.kind, group.dtype, torch_op=True,
                        simple=group.input == "plain", training=group.training, batch=B,
                        work=work, proj=group.input == "proj", table=dispatch.TABLE,
                        hidden=hidden)
    return "fused" if e.startswith("fused") else e


def _winner(group: Group, B: int, work: int, hidden: int | None, times: dict[str, float]) -> str:
    fastest = min(times, key=lambda e: times[e])
    rule = _rule(group, B, work, hidden)
    return rule if times.get(rule, math.inf) <= (1 + SLACK) * times[fastest] else fastest


def _entry(group: Group, engine: str, threads: int, min_batch: int, max_batch: int | None,
           min_work: int, max_work: int | None, min_hidden: int = 0,
           max_hidden: int | None = None) -> Row:
    return Row("fused-float32" if engine == "fused" and group.dtype in HALF else engine,
               device="cpu", kind=group.kind, dtype=group.dtype, torch_op=True,
               simple=group.input == "plain", proj=group.input == "proj", training=group.training,
               min_batch=min_batch, max_batch=max_batch, min_work=min_work, max_work=max_work,
               min_threads=threads, max_threads=threads, min_hidden=min_hidden,
               max_hidden=max_hidden, measured_on="tuned")


def tune_grid(grid: Sequence[tuple[Group, Sequence[tuple[int, int, int, int]]]] | None = None,
              repeats: int = 3, progress: Progress | None = None, timer: Timer = wall
              ) -> list[tuple[Row, str]]:
    """Time the grid (default ``GRID``) and return its plan entries (see the module docstring)."""
    grid = GRID if grid is None else grid
    threads = torch.get_num_threads()
    total, done = sum(len(shapes) for _, shapes in grid), 0
    entries: list[tuple[Row, str]] = []
    for group, shapes in grid:
        winners: dict[tuple[int, int, int], str] = {}
        notes: dict[tuple[int, int, int], str] = {}
        for shape in shapes:
            T, B, I, H = shape  # noqa: E741
            if progress:
                progress(done, total, f"{group.kind} {group.dtype} {group.input} "
                         f"{'training' if group.training else 'inference'} {shape}")
            torch.manual_seed(0)
            model = _model(group, I, H)
            call = step(model, _inputs(group, shape, model), group.training)
            with warnings.catch_warnings():  # torch's note that proj_size leaves oneDNN, per call
                warnings.filterwarnings("ignore", "LSTM with projections", UserWarning)
                times = race({e: (_forcing(e, group.dtype), call) for e in CANDIDATES}, repeats,
                             timer)
            work = T * B * H
            winners[(B, H, work)] = _winner(group, B, work, H, times)
            notes[(B, H, work)] = f"at {shape}: " + ", ".join(
                f"{e} {t * 1e3:.3g} ms" for e, t in times.items() if math.isfinite(t))
            done += 1
        for lo, hi, hidden_bands in borders(winners):
            for hlo, hhi, bands in hidden_bands:
                for wlo, whi, engine in bands:
                    measured = [n for (b, h, w), n in notes.items() if lo <= b <= (hi or b)
                                and hlo <= h <= (hhi or h) and wlo <= w <= (whi or w)]
                    entries.append((_entry(group, engine, threads, min_batch=lo, max_batch=hi,
                                           min_work=wlo, max_work=whi, min_hidden=hlo,
                                           max_hidden=hhi), "; ".join(measured)))
    if progress:
        progress(total, total, "done")
    return entries


def tune_model(model: torch.nn.Module, args: tuple, training: bool, repeats: int = 5,
               progress: Progress | None = None, timer: Timer = wall) -> list[tuple[Row, str]]:
    """Entries for the calls ``model(*args)`` makes (see the module docstring)."""
    call = step(model, args, training)
    with dispatch.tracing() as trace:
        call()
    seen: dict[tuple, None] = {}
    for key, _, _, _ in trace:
        device, kind, dtype, torch_op, simple, tr, batch, work, _, proj, _, hidden = key
        if device == "cpu" and torch_op and dtype != "other" and work is not None:
            seen[(kind, dtype, simple, tr, batch, work, proj, hidden)] = None
    threads = torch.get_num_threads()
    entries: list[tuple[Row, str]] = []
    for n, (kind, dtype, simple, tr, B, work, proj, H) in enumerate(seen):
        if progress:
            progress(n, len(seen), f"{kind} {dtype} batch {B} work {work}")
        match = dict(kind=kind, dtype=dtype, simple=simple, proj=proj, training=tr,
                     min_batch=B, max_batch=B, min_work=work, max_work=work)
        times = race({e: (_forcing(e, dtype, match), call) for e in CANDIDATES}, repeats, timer)
        group = Group(kind, dtype, tr, "plain" if simple else "proj" if proj else "packed")
        engine = _winner(group, B, work, H, times)
        note = "tune(model): " + ", ".join(f"{e} {t * 1e3:.3g} ms per step" for e, t in
                                           times.items() if math.isfinite(t))
        hidden = {} if H is None else {"min_hidden": math.ceil(H / 2 ** 0.5),
                                       "max_hidden": math.floor(H * 2 ** 0.5)}
        entries.append((_entry(group, engine, threads, min_batch=math.ceil(B / 2 ** 0.5),
                               max_batch=math.floor(B * 2 ** 0.5), min_work=work // 2,
                               max_work=2 * work, **hidden),
                        note + f" at batch {B}, hidden {H}, work {work}"))
    if progress:
        progress(len(seen), len(seen), "done")
    return entries


def tune(model: torch.nn.Module | None = None, example_input: Any = None, *,
         training: bool | None = None, repeats: int | None = None,
         progress: Progress | None = None, timer: Timer = wall, save: bool = True,
         file: Any = None) -> plan.Plan:
    """Measure the engines on this machine and save a plan that ``engine="auto"`` follows.

    Without arguments: the default grid (``GRID``), minutes. With ``model`` and ``example_input``
    (a tensor, or a tuple of the model's positional arguments): the calls that model makes, in
    training (forward and backward) when ``training`` is True, or by default when the model is
    in training mode with parameters that require grad; seconds. ``progress(done, total, what)``
    is called as points are measured; ``timer(call) -> seconds`` times one call (the default is
    the wall clock). Entries are merged into the plan in ``file`` (default: ``GATEDRNN_PLAN`` or
    the user's cache directory, ``plan.default_path``), written atomically, and this process
    follows them from its next call. Returns the plan.

    Example:
        >>> import torch, gatedrnn
        >>> lstm = gatedrnn.LSTM(8, 16)
        >>> p = gatedrnn.tune(lstm, torch.randn(10, 4, 8), save=False)  # doctest: +SKIP
    """
    from pathlib import Path

    target = Path(file) if file is not None else (plan.path() or plan.default_path())
    key = plan.machine_key(dispatch.TABLE, dispatch.CPU)
    old = plan.read(target) if target.exists() else None
    kept = [] if old is None or old.key != key else old.entries
    with dispatch.pinned(None):  # measure against the shipped rules and this machine's plan
        if model is None:
            new = tune_grid(repeats=repeats or 3, progress=progress, timer=timer)
            threads = torch.get_num_threads()
            # the grid's own entries at this thread count are replaced; the models' stay first
            kept = [(r, n) for r, n in kept if n.startswith("tune(model)")
                    or r.min_threads != threads]
            entries = [e for e in kept if e[1].startswith("tune(model)")] + new + \
                [e for e in kept if not e[1].startswith("tune(model)")]
        else:
            args = example_input if isinstance(example_input, tuple) else (example_input,)
            if training is None:
                training = model.training and any(p.requires_grad for p in model.parameters())
            new = tune_model(model, args, training, repeats or 5, progress, timer)
            entries = new + [e for e in kept if e[0] not in {r for r, _ in new}]
    result = plan.Plan(key, entries, target)
    if save:
        plan.save(result, target)
        dispatch.reload()  # this process follows the new plan from its next call
    return result
