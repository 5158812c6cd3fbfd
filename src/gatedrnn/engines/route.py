"""One route per call: decided once per module and call signature, then a key lookup.

A call of an LSTM, GRU or RNN (``engine="auto"`` or ``"fused"``) or of one of the cells can take
one of these routes:

    "native"     torch's op straight from a plan (``native_path``: auto picks torch's op)
    "step"       the streaming step kernels, inference (``one_step``)
    "lean"       a short sequence at a small batch (``lean_path``; under autograd its
                 ``step_grad`` chain of one-node steps, or torch.nn's forward where auto picks
                 torch's op)
    "step_grad"  a cell's training step as one autograd node (``step_grad``)
    "general"    the module's general forward: torch.nn's checks and errors, the engine choice,
                 the layer stack (or a cell's reference step)

The first call of a signature tries the routes in that order, as each route's own conditions
say, and the route that took the call is remembered with the plan it made (the native route's op
and state shapes, the streaming route's kernel and sizes); every later call with the same
signature is a dictionary lookup and the run. The cache, as cuDNN's plans and torch.compile's
guards, is keyed by everything that decides the route (the guards):

- the input's shape, dtype, device, ``requires_grad`` and contiguity;
- the state: absent, or each part's dtype, ``requires_grad`` and contiguity (its shape and device
  are the input's in any call torch.nn accepts; one it refuses raises, and is never remembered);
- the parameters: how many the module holds, and the first weight's (``weight_ih_l0``,
  ``weight_ih``) identity, dtype and ``requires_grad``: replacing it by ``setattr``, a
  parametrization or pruning of it, ``.to()``, ``.double()``, ``requires_grad_`` start a new
  route; ``load_state_dict`` copies into the same tensors: the same route. (Its device is the
  input's in any call torch.nn accepts.)
- the module's class (``torch.nn.utils.parametrize`` swaps it), ``engine``, train/eval mode,
  ``batch_first`` (a plan's state shapes read it) and, for RNNCell, ``nonlinearity``;
- grad mode, CPU autocast, the thread count, the deterministic-algorithms flag;
- the dispatch rules (``dispatch.rules_token``: a pin or a reloaded plan makes every route stale).

Never cached: a trace (``torch.jit.trace``, whose ONNX exporter uses it), ``torch.export``,
Dynamo, a ``torch.func`` transform (``vmap``, ``grad``), ``dispatch.explain`` recording, and any
input that is not a plain tensor (a PackedSequence, a tensor subclass): those calls decide afresh
each time, exactly as before. A call that raises (torch.nn's errors, from the general path) is not
remembered either. Forward pre-hooks need no guard: ``nn.Module`` runs them before ``forward``,
so the key is made from what they return.

The key does not see the constructor options (``dropout``, the variants, ``proj_size``), which
torch.nn also treats as fixed, nor the other weights: each route reads the parameters on every
call and checks every tensor it reads (the step kernels read by address, and a validated weight
is never cached: ``.double()`` and ``param.data = ...`` keep a parameter's identity). A remembered
route that declines a call (a weight replaced, pruned or unfrozen behind the first one, say)
hands it to the full decision, uncached: slower, never wrong.

A cell's step without autograd is not cached: its one route short of the general step, the
streaming step kernel, is decided by grad mode alone, and its own checks cost less than a key.

The fast routes stay separate routes, not branches of the general path: they run other kernels
(step kernels by address, the lean loops, torch's op without torch.nn's Python), whose conditions
are theirs; the general path's own cost (the engine interface, masks, buffers, the layer stack,
~0.1 ms) is what they avoid, and a cached decision does not remove it.

The cache lives in a module-level dictionary keyed by the module's id, never in the module's
``__dict__``: pickling, ``copy.deepcopy`` and ``state_dict`` never see it, and a finalizer drops
it when the module dies (before its id can be reused).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import dispatch, lean_path, native_path, one_step, step_grad

_MAX_KEYS = 64  # per module: a stream of ever-new signatures restarts its cache
_grad = torch.is_grad_enabled
_threads = torch.get_num_threads
_tracing = torch._C._get_tracing_state
_autocast = torch._C._is_any_autocast_enabled
_deterministic = torch._C._get_deterministic_algorithms
_compiling = torch.compiler.is_compiling
_exporting = torch.compiler.is_exporting
_functorch = torch._C._are_functorch_transforms_active

# id(module) -> {key: (rules token, route, plan)}; an entry leaves with its module (``_cache``).
# (Keyed by id, not a WeakKeyDictionary, which makes a weak reference per lookup: ~0.2 µs.)
_CACHE: dict[int, dict[tuple, tuple[Any, str, Any]]] = {}


def forget(module: Any) -> None:
    """Drop a module's routes (the next call decides afresh)."""
    _CACHE.get(id(module), {}).clear()


def routes(module: Any) -> dict[tuple, str]:
    """The module's remembered routes, key -> route name (for tests and debugging)."""
    return {k: v[1] for k, v in _CACHE.get(id(module), {}).items()}


def of(module: Any, input: Any, hx: Any = None) -> str | None:
    """The route remembered for ``module(input, hx)`` under the current modes (grad mode,
    threads, autocast, ...): "native", "step", "lean", "step_grad" or "general"; None when this
    call's signature has none (not called yet, stale rules, or never cached)."""
    key = _key(module, input, hx, "weight_ih_l0" if hasattr(module, "num_layers") else "weight_ih")
    entry = None if key is None else _CACHE.get(id(module), {}).get(key)
    return None if entry is None or entry[0] is not dispatch.rules_token() else entry[1]


def _part(t: Any) -> Any:
    """A state part's guards. Its shape, dtype and device are the input's in any call torch.nn
    accepts (one it refuses raises, and is never remembered; a route checks them per call)."""
    if type(t) is Tensor:
        return t.requires_grad, t.is_contiguous()
    return type(t)  # (None, a subclass, a list: the routes decline, torch.nn's checks decide)


def _key(m: Any, input: Any, hx: Any, first: str) -> tuple | None:
    """The call's guards (see the module docstring), or None: never cached (a trace, export or
    compile records torch ops; ``dispatch.explain`` records the table's answers)."""
    if type(input) is not Tensor or dispatch.is_recording() or _tracing() is not None \
            or _compiling() or _exporting() or _functorch():
        return None
    ps = m._parameters
    w0 = ps.get(first)
    state = None if hx is None else tuple(map(_part, hx)) if type(hx) is tuple else _part(hx)
    return (m.engine, m.__class__, m.training, _grad(), input.shape, input.dtype, input.device,
            input.requires_grad, input.is_contiguous(), state, len(ps), id(w0),
            None if w0 is None else (w0.dtype, w0.requires_grad),
            m.__dict__.get("nonlinearity"), m.__dict__.get("batch_first"), _threads(),
            _autocast() and _autocast_cpu(), _deterministic())


def _autocast_cpu() -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")


def _cache(m: Any) -> dict[tuple, tuple[Any, str, Any]]:
    cache = _CACHE.get(id(m))
    if cache is None:
        cache = _CACHE[id(m)] = {}
        weakref.finalize(m, _CACHE.pop, id(m), None)  # (before the id can be reused)
    elif len(cache) > _MAX_KEYS:
        cache.clear()
    return cache


def _call(m: Any, input: Any, hx: Any, general: Callable[[Any, Any, Any], Any], first: str,
          decide: Callable[..., tuple[str, Any, Any]], run: Callable[..., Any]) -> Any:
    key = _key(m, input, hx, first)
    if key is None:
        return decide(m, input, hx, general)[2]
    cache = _cache(m)
    entry = cache.get(key)
    if entry is not None and entry[0] is dispatch.rules_token():
        if entry[1] == "general":
            return general(m, input, hx)
        result = run(m, input, hx, entry[1], entry[2])
        if result is not None:
            return result
        return decide(m, input, hx, general)[2]  # declined (see the module docstring): uncached
    route, plan, result = decide(m, input, hx, general)
    cache[key] = (dispatch.rules_token(), route, plan)  # (after the call: an error never stays)
    return result


# --- LSTM, GRU, RNN ---------------------------------------------------------------------------

def module_call(m: Any, input: Any, hx: Any, general: Callable[[Any, Any, Any], Any]) -> Any:
    """``m(input, hx)`` by its route; ``general(m, input, hx)`` runs the general forward. ``m`` is an LSTM,
    GRU or RNN with ``engine`` "auto" or "fused", called without ``return_gates``."""
    return _call(m, input, hx, general, "weight_ih_l0", _module_decide, _module_run)


def _module_run(m: Any, input: Tensor, hx: Any, route: str, plan: Any) -> Any:
    if route == "native":
        return native_path.module_run(m, plan, input, hx)
    if route == "step":
        return _fused(m, one_step.module_run(m, plan, input, hx))
    return lean_path.module_call(m, input, hx, False)


def _fused(m: Any, result: Any) -> Any:
    if result is not None and m.__dict__.get("last_engine") != "fused":
        lean_path._record(m, "fused")
    return result


def _module_decide(m: Any, input: Any, hx: Any, general: Callable[[Any, Any, Any], Any]
                   ) -> tuple[str, Any, Any]:
    """(route, plan, result): the routes tried in order, as each one's conditions say."""
    if m.engine == "auto" and _autocast():  # (torch's op under autocast: the module's _engine)
        return "general", None, general(m, input, hx)
    if m.engine == "auto":
        plan = native_path.module_plan(m, input, hx)
        if plan is not None:
            result = native_path.module_run(m, plan, input, hx)
            if result is not None:
                return "native", plan, result
    plan = None if one_step._traced() else one_step.module_plan(m, input, hx)
    if plan is not None:  # (nothing runs by address under a trace or a compile)
        result = _fused(m, one_step.module_run(m, plan, input, hx))
        if result is not None:
            return "step", plan, result
    result = lean_path.module_call(m, input, hx, False)
    if result is not None:
        return "lean", None, result
    return "general", None, general(m, input, hx)


# --- LSTMCell, GRUCell, RNNCell ---------------------------------------------------------------

def cell_call(m: Any, input: Any, hx: Any, general: Callable[[Any, Any, Any], Any]) -> Any:
    """``m(input, hx)`` by its route; ``general(m, input, hx)`` runs the cell's general step.
    ``m`` is a cell with ``engine`` "auto" or "fused".

    Without autograd a step has one route short of the general step, the streaming step kernel,
    whose own checks cost less than any key (~0.5 µs against ~2 µs): that decision is not
    cached."""
    if m.engine == "auto" and _autocast():  # (torch's op under autocast: the cell's _engine)
        return general(m, input, hx)
    if not _grad():
        result = _fused(m, one_step.cell_call(m, input, hx))
        return general(m, input, hx) if result is None else result
    return _call(m, input, hx, general, "weight_ih", _cell_decide, _cell_run)


def _cell_run(m: Any, input: Tensor, hx: Any, route: str, plan: Any) -> Any:
    if route == "native":
        return native_path.cell_run(m, plan, input, hx)
    return _fused(m, (step_grad.cell_call if route == "step_grad" else one_step.cell_call)(
        m, input, hx))


def _cell_decide(m: Any, input: Any, hx: Any, general: Callable[[Any, Any, Any], Any]
                 ) -> tuple[str, Any, Any]:
    if m.engine == "auto":
        op = native_path.cell_plan(m, input, hx)
        if op is not None:
            result = native_path.cell_run(m, op, input, hx)
            if result is not None:
                return "native", op, result
    if torch.is_grad_enabled() and (m.weight_ih.requires_grad or (
            type(input) is Tensor and input.requires_grad)):
        # A training step: the one-node step where the table gives the call to the fused engine.
        route = "step_grad" if m._engine(input) == "fused" else "general"
    else:
        route = "step"  # the streaming step, when it is one
    result = _cell_run(m, input, hx, route, None) if route != "general" else None
    if result is not None:
        return route, None, result
    return "general", None, general(m, input, hx)
