"""A call's route (``gatedrnn.engines.route``): decided once per module and call signature, then
a key lookup. One test per guard: change it and the route is decided afresh (and changes where the
guard decides it); the results stay torch.nn's (copied weights) whichever route runs; nothing is
cached under a trace, an export, a compile or ``dispatch.explain``, and the cache never travels
with a pickle, a copy or a state dict."""

from __future__ import annotations

import copy
import gc
import pickle

import pytest
import torch
from torch.nn.utils import parametrize, prune

import gatedrnn
from gatedrnn.engines import dispatch, one_step, route
from gatedrnn.engines.rows import Row
from gatedrnn.modules.base import SequenceModule

# Pinned tables, so that a route does not move with the shipped rules: torch's op for every call,
# or the fused engine for every call.
_NATIVE = (Row("native", measured_on="design"),)
_FUSED = (Row("fused", measured_on="design"),)
_ATOL = 1e-5  # the engines agree to 1e-5 in float32 (measured; see the LSTM's engine note)


def _pair(cls: str = "LSTM", *args, **kw):
    ours = getattr(gatedrnn, cls)(*args or (3, 4), **kw)
    ref = getattr(torch.nn, cls)(*args or (3, 4), **kw)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _close(a, b, atol: float = _ATOL) -> None:
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, atol=atol, rtol=0)
    else:
        for s, t in zip(a, b, strict=True):
            _close(s, t, atol)


def _check(ours, ref, x, hx=None) -> str | None:
    """Call both, compare, and return the route ``ours`` remembered for the call."""
    _close(ours(x, hx), ref(x, hx))
    return route.of(ours, x, hx)


@pytest.fixture(autouse=True)
def _no_grad_weights_by_default():
    with dispatch.pinned(_NATIVE):
        yield


def test_a_route_is_decided_once(monkeypatch) -> None:
    ours, ref = _pair()
    decided = []
    real = route._module_decide
    monkeypatch.setattr(route, "_module_decide", lambda *a: decided.append(1) or real(*a))
    x = torch.randn(1, 2, 3)
    with torch.no_grad():
        for _ in range(3):
            assert _check(ours, ref, x) == "step"
    assert decided == [1]
    assert len(route.routes(ours)) == 1


def test_input_shape() -> None:
    ours, ref = _pair()
    with torch.no_grad():
        assert _check(ours, ref, torch.randn(1, 2, 3)) == "step"  # one streaming step
        assert _check(ours, ref, torch.randn(5, 2, 3)) == "native"  # a sequence: the table's op
        assert _check(ours, ref, torch.randn(1, 3)) == "step"  # unbatched


def test_input_and_parameter_dtype() -> None:
    ours, ref = _pair()
    x = torch.randn(1, 2, 3)
    with torch.no_grad():
        assert _check(ours, ref, x) == "step"
        ours.double()
        ref.double()
        assert _check(ours, ref, x.double()) == "step"  # (a new signature, the same route)
        ours.bfloat16()
        ref.bfloat16()
        xb = x.bfloat16()
        _close(ours(xb), ref(xb), atol=2e-2)  # (bfloat16 keeps 8 bits)
        assert route.of(ours, xb) == "general"  # the step kernels are float32/float64 only
    assert len(route.routes(ours)) == 3


def test_input_device_is_in_the_key() -> None:
    ours, _ = _pair()
    x = torch.randn(1, 2, 3)
    assert route._key(ours, x, None, "weight_ih_l0") != route._key(ours, x.to("meta"), None,
                                                                    "weight_ih_l0")


def test_input_requires_grad() -> None:
    ours, ref = _pair()
    for m in (ours, ref):
        m.requires_grad_(False)
    x = torch.randn(1, 2, 3)
    assert _check(ours, ref, x) == "step"  # nothing asks for a gradient: inference
    xs = [x.clone().requires_grad_() for _ in range(2)]
    assert _check(ours, ref, xs[0]) == "native"  # a training call: the table's op
    with dispatch.pinned(_FUSED):
        assert _check(ours, ref, xs[0]) == "lean"  # ... or one-node steps (step_grad)
        ours(xs[0])[0].sum().backward()
    ref(xs[1])[0].sum().backward()
    _close(xs[0].grad, xs[1].grad)


def test_input_contiguity() -> None:
    ours, ref = _pair()
    x = torch.randn(1, 2, 6)[:, :, ::2]  # (1, 2, 3), not contiguous
    with torch.no_grad():
        assert _check(ours, ref, x.contiguous()) == "step"
        assert _check(ours, ref, x) == "lean"  # the step kernels read C-contiguous memory only


def test_state() -> None:
    ours, ref = _pair()
    x = torch.randn(1, 2, 3)
    h = (torch.randn(1, 2, 4), torch.randn(1, 2, 4))
    h_strided = (torch.randn(4, 2, 1).permute(2, 1, 0), torch.randn(4, 2, 1).permute(2, 1, 0))
    with torch.no_grad():
        assert _check(ours, ref, x, h) == "step"
        assert _check(ours, ref, x, h_strided) == "lean"
    for m in (ours, ref):
        m.requires_grad_(False)
    h_grad = tuple(p.clone().requires_grad_() for p in h)
    assert _check(ours, ref, x, h_grad) == "lean"  # the state asks for a gradient: training


def test_a_call_that_raises_is_not_remembered() -> None:
    ours, ref = _pair()
    x = torch.randn(1, 2, 3)
    bad = (torch.randn(1, 3, 4), torch.randn(1, 3, 4))  # batch 3, input batch 2
    with torch.no_grad():
        for m in (ours, ref):
            with pytest.raises(RuntimeError) as err:
                m(x, bad)
        assert str(err.value).startswith("Expected hidden[0] size")
        assert route.routes(ours) == {}
        good = (torch.randn(1, 2, 4), torch.randn(1, 2, 4))
        assert _check(ours, ref, x, good) == "step"


def test_parameter_identity_and_load_state_dict() -> None:
    ours, ref = _pair()
    x = torch.randn(1, 2, 3)
    with torch.no_grad():
        _check(ours, ref, x)
        w = torch.nn.Parameter(torch.randn(16, 3))
        ours.weight_ih_l0 = w
        ref.weight_ih_l0 = torch.nn.Parameter(w.detach().clone())
        assert _check(ours, ref, x) == "step" and len(route.routes(ours)) == 2  # a new route
        # The other weights are read (and checked) on every call: no new route, new numbers.
        w = torch.nn.Parameter(torch.randn(16, 4))
        ours.weight_hh_l0 = w
        ref.weight_hh_l0 = torch.nn.Parameter(w.detach().clone())
        _check(ours, ref, x)
        other = gatedrnn.LSTM(3, 4)
        ours.load_state_dict(other.state_dict())  # copies into the same tensors: the same route
        ref.load_state_dict(other.state_dict())
        _check(ours, ref, x)
    assert len(route.routes(ours)) == 2


def test_weights_requires_grad_and_grad_mode() -> None:
    ours, ref = _pair()
    x = torch.randn(1, 2, 3)
    assert _check(ours, ref, x) == "native"  # the weights ask for gradients: training
    with torch.no_grad():
        assert _check(ours, ref, x) == "step"  # grad mode off
    for m in (ours, ref):
        m.requires_grad_(False)
    assert _check(ours, ref, x) == "step"


def test_a_weight_the_key_does_not_see_declines_the_route() -> None:
    ours, ref = _pair()
    for m in (ours, ref):
        m.requires_grad_(False)
    x = torch.randn(1, 2, 3)
    assert _check(ours, ref, x) == "step"
    for m in (ours, ref):  # (weight_ih_l0, in the key, stays frozen)
        m.weight_hh_l0.requires_grad_(True)
    assert _check(ours, ref, x) == "step"  # the remembered route declined; decided afresh
    ours(x)[0].sum().backward()
    ref(x)[0].sum().backward()
    _close(ours.weight_hh_l0.grad, ref.weight_hh_l0.grad)


def test_train_and_eval() -> None:
    ours, ref = _pair("LSTM", 3, 4, num_layers=2, dropout=0.5)
    x = torch.randn(1, 2, 3)
    with torch.no_grad():
        ours.eval()
        ref.eval()
        assert _check(ours, ref, x) == "step"
        ours.train()
        ours(x)
        assert route.of(ours, x) == "general"  # (dropout draws masks: the general path's)


def test_dropout_set_between_calls(monkeypatch) -> None:
    ours, ref = _pair("LSTM", 3, 4, num_layers=2)
    x = torch.randn(1, 2, 3)
    with torch.no_grad():
        assert _check(ours, ref, x) == "step"  # (training mode, no dropout: a plain step)
        general = []
        real = SequenceModule._general
        monkeypatch.setattr(SequenceModule, "_general", lambda *a: general.append(1) or real(*a))
        ours.dropout = 0.5  # a plain attribute: the route reads it on every call
        ours(x)
        assert general == [1]


def test_engine_and_batch_first_attributes() -> None:
    ours, ref = _pair()
    x = torch.randn(5, 2, 3, requires_grad=True)
    assert _check(ours, ref, x) == "native"
    ours.engine = "fused"
    assert _check(ours, ref, x) == "lean"
    ours.engine = "auto"
    ours.batch_first = ref.batch_first = True  # (torch.nn reads it on every call)
    assert route.of(ours, x) is None
    assert _check(ours, ref, x) == "native"  # (a new plan: batch 5, not 2)


@pytest.mark.parametrize("how", ["parametrize", "weight_norm", "prune"])
def test_parametrizations_and_pruning(how) -> None:
    ours, ref = _pair()
    x = torch.randn(1, 2, 3)
    with torch.no_grad(), dispatch.pinned(_FUSED):
        assert _check(ours, ref, x) == "step"
        for m in (ours, ref):
            if how == "parametrize":  # (swaps the module's class)
                parametrize.register_parametrization(m, "weight_ih_l0", _Double())
            elif how == "weight_norm":
                torch.nn.utils.parametrizations.weight_norm(m, "weight_ih_l0")
            else:  # (moves weight_ih_l0 to weight_ih_l0_orig; a forward pre-hook multiplies)
                prune.l1_unstructured(m, "weight_ih_l0", amount=0.5)
        assert _check(ours, ref, x) == "general"


def test_pruning_a_weight_the_key_does_not_see(monkeypatch) -> None:
    ours, ref = _pair()
    x = torch.randn(1, 2, 3)
    with torch.no_grad(), dispatch.pinned(_FUSED):
        assert _check(ours, ref, x) == "step"
        for m in (ours, ref):
            prune.l1_unstructured(m, "weight_hh_l0", amount=0.5)
        general = []
        real = SequenceModule._general
        monkeypatch.setattr(SequenceModule, "_general",
                            lambda *a: general.append(1) or real(*a))
        _check(ours, ref, x)  # the step route declines (no weight_hh_l0 parameter): general
        assert general == [1]


def test_hooks_run_before_the_route_is_looked_up() -> None:
    ours, ref = _pair()
    x = torch.randn(1, 2, 3)
    for m in (ours, ref):
        m.register_forward_pre_hook(lambda mod, args: (args[0].repeat(5, 1, 1),))
    with torch.no_grad():
        _close(ours(x), ref(x))
        assert route.of(ours, x) is None
        assert route.of(ours, x.repeat(5, 1, 1)) == "native"  # what forward received


def test_cpu_autocast() -> None:
    ours, ref = _pair()
    x = torch.randn(1, 2, 3)
    with torch.no_grad():
        y = ours(x)
        assert route.of(ours, x) == "step"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert route.of(ours, x) is None  # not decided under autocast yet
            _close(ours(x), ref(x), atol=0)  # torch's op: torch.nn's dtype and bits (autocast)
            assert route.of(ours, x) == "general" and ours.last_engine == "native"
    assert len(route.routes(ours)) == 2 and y[0].dtype == torch.float32


@pytest.mark.parametrize("mode", ["threads", "deterministic"])
def test_thread_count_and_deterministic_algorithms(mode) -> None:
    ours, ref = _pair()
    x = torch.randn(1, 2, 3)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with torch.no_grad():
        _check(ours, ref, x)
        if mode == "threads":  # (the table reads the thread count)
            torch.set_num_threads(1 if threads > 1 else 2)
        else:
            torch.use_deterministic_algorithms(not det)
        try:
            assert route.of(ours, x) is None
            _check(ours, ref, x)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(det)
    assert len(route.routes(ours)) == 2


def test_dispatch_rules() -> None:
    ours, ref = _pair()
    x = torch.randn(5, 2, 3)
    with torch.no_grad():
        assert _check(ours, ref, x) == "native"
        with dispatch.pinned(_FUSED):  # another table: every remembered route is stale
            assert route.of(ours, x) is None
            assert _check(ours, ref, x) == "step"
        assert _check(ours, ref, x) == "native"


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # (torch.nn's own trace warns)
def test_never_cached_under_a_trace_an_export_a_compile_or_explain(monkeypatch) -> None:
    ours, ref = _pair()
    x = torch.randn(5, 2, 3)
    traced = torch.jit.trace(ours, (x,), check_trace=False)
    assert traced(torch.randn(7, 2, 3))[0].shape == (7, 2, 4)
    dispatch.explain(ours, x)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, [5, 3])
    _close(ours(packed)[0].data, ref(packed)[0].data)
    assert route.routes(ours) == {}
    for flag in ("_compiling", "_exporting"):
        with monkeypatch.context() as patch:
            patch.setattr(route, flag, lambda: True)
            assert route._key(ours, x, None, "weight_ih_l0") is None


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # (torch.nn's own trace warns)
def test_no_step_kernel_runs_while_tracing(monkeypatch) -> None:
    """A trace cannot see numba: the streaming route must not take a traced call (one step at
    B = 1, which it would take eagerly), decided or remembered."""
    ran = []
    real = one_step.module_run

    def spy(*args):
        result = real(*args)
        ran.append(result is not None and torch.jit.is_tracing())
        return result

    monkeypatch.setattr(one_step, "module_run", spy)
    x = torch.randn(1, 1, 3)
    for engine in ("fused", "auto"):
        lstm = gatedrnn.LSTM(3, 4, engine=engine).eval()
        with torch.no_grad():
            lstm(x)  # (the route remembered: "step")
            traced = torch.jit.trace(lstm, x)
            assert route.of(lstm, x) == "step"
        assert traced(torch.randn(6, 2, 3))[0].shape == (6, 2, 4)
    assert ran and not any(ran)


@pytest.mark.parametrize("cls", ["LSTM", "GRUCell"])
def test_the_cache_stays_out_of_pickles_copies_and_state_dicts(cls) -> None:
    ours, _ = _pair(cls)
    x = torch.randn(5, 2, 3, requires_grad=True) if cls == "LSTM" else torch.randn(2, 3)
    ours(x)
    assert len(route.routes(ours)) == 1
    for other in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        assert route.routes(other) == {}
        _close(other(x), ours(x), atol=0)
    assert not any("route" in k for k in ours.__dict__)
    assert set(ours.state_dict()) == {n for n, _ in ours.named_parameters()}


def test_the_cache_dies_with_its_module() -> None:
    ours, _ = _pair()
    ours(torch.randn(5, 2, 3))
    key = id(ours)
    assert key in route._CACHE
    del ours
    gc.collect()
    assert key not in route._CACHE


def test_cells() -> None:
    x = torch.randn(2, 3)
    for cls, table, expected in (("LSTMCell", _FUSED, "step_grad"), ("GRUCell", _FUSED, "step_grad"),
                                 ("RNNCell", _NATIVE, "native"), ("LSTMCell", _NATIVE, "native")):
        ours, ref = _pair(cls)
        with dispatch.pinned(table):
            assert _check(ours, ref, x) == expected  # a training step (the weights want grads)
            with torch.no_grad():  # inference: the streaming step, by one flag (never cached)
                assert _check(ours, ref, x) is None and ours.last_engine == "fused"
    ours = gatedrnn.LSTMCell(3, 4, layer_norm=True)  # torch has no op and no kernel for it
    ours(x)
    assert route.of(ours, x) == "general"


def test_cell_nonlinearity() -> None:
    ours, ref = _pair("RNNCell")
    x = torch.randn(2, 3)
    _check(ours, ref, x)
    ours.nonlinearity = ref.nonlinearity = "relu"
    assert route.of(ours, x) is None
    assert _check(ours, ref, x) == "native"


class _Double(torch.nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w
