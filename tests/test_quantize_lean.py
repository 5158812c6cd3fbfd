"""The lean path of the quantized modules and cells (``gatedrnn.modules.quantized_lean``): the same
outputs as the general path bit for bit, a cache that follows every change of the weights, and the
general path's errors for bad input."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.engines import stack
from gatedrnn.modules import quantized_lean

pytestmark = pytest.mark.skipif(not stack.has_engine("lstm", "int8"),
                                reason="the int8 kernels do not import")

KINDS = {"lstm": ("LSTM", {}), "lstm-proj": ("LSTM", {"proj_size": 3}), "gru": ("GRU", {}),
         "gru-cho": ("GRU", {"reset_after": False}), "rnn_tanh": ("RNN", {}),
         "rnn_relu": ("RNN", {"nonlinearity": "relu"})}


@contextmanager
def general_path() -> Iterator[None]:
    """Calls inside take the general path (the lean one declines every call)."""
    with mock.patch.object(quantized_lean, "module_call", lambda *a: None), \
            mock.patch.object(quantized_lean, "cell_call", lambda *a: None):
        yield


def _flat(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for part in out for t in _flat(part)]  # type: ignore[attr-defined]


def _same(a: object, b: object) -> None:
    fa, fb = _flat(a), _flat(b)
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert torch.equal(x, y)


def _module(kind: str, I: int, H: int, L: int, bi: bool, bf: bool, bias: bool, seed: int):
    name, kw = KINDS[kind]
    torch.manual_seed(seed)
    f = getattr(gatedrnn, name)(I, H, num_layers=L, bidirectional=bi, batch_first=bf, bias=bias, **kw)
    return gatedrnn.quantize(f)


@given(st.sampled_from(sorted(KINDS)), st.integers(1, 3), st.booleans(), st.booleans(),
       st.booleans(), st.sampled_from(["batched", "unbatched"]), st.booleans(), st.integers(1, 6),
       st.integers(1, 5), st.integers(1, 7), st.integers(0, 2**31 - 1))
@settings(max_examples=60)
def test_lean_module_equals_general_path(kind: str, L: int, bi: bool, bf: bool, bias: bool,
                                         form: str, with_state: bool, T: int, B: int, I: int,
                                         seed: int) -> None:
    H = 8
    q = _module(kind, I, H, L, bi, bf, bias, seed)
    gen = torch.Generator().manual_seed(seed)
    unbatched = form == "unbatched"
    x = torch.randn((T, I) if unbatched else ((B, T, I) if bf else (T, B, I)), generator=gen)
    hx = None
    if with_state:
        lead = (L * (2 if bi else 1),) + (() if unbatched else (B,))
        Ho = q.proj_size or H if kind.startswith("lstm") else H
        h = torch.randn(*lead, Ho, generator=gen)
        hx = (h, torch.randn(*lead, H, generator=gen)) if kind.startswith("lstm") else h
    lean = quantized_lean.module_call(q, x, hx, False)
    assert lean is not None and q.last_engine == "int8"
    with general_path():
        general = q(x, hx)
    assert q.last_engine == "int8"
    _same(lean, general)
    _same(q(x, hx), general)  # (the module call takes the lean path, cached)


@given(st.sampled_from(["LSTMCell", "GRUCell", "GRUCell-cho", "RNNCell", "RNNCell-relu"]),
       st.booleans(), st.booleans(), st.booleans(), st.integers(1, 5), st.integers(1, 7),
       st.integers(0, 2**31 - 1))
@settings(max_examples=40)
def test_lean_cell_equals_general_path(name: str, unbatched: bool, with_state: bool, bias: bool,
                                       B: int, I: int, seed: int) -> None:
    cls, _, variant = name.partition("-")
    kw = {"reset_after": False} if variant == "cho" else {"nonlinearity": "relu"} if variant else {}
    torch.manual_seed(seed)
    q = gatedrnn.quantize(getattr(gatedrnn, cls)(I, 8, bias=bias, **kw))
    gen = torch.Generator().manual_seed(seed)
    shape = (I,) if unbatched else (B, I)
    x = torch.randn(shape, generator=gen)
    hx = None
    if with_state:
        h = torch.randn(shape[:-1] + (8,), generator=gen)
        hx = (h, torch.randn(h.shape, generator=gen)) if cls == "LSTMCell" else h
    lean = quantized_lean.cell_call(q, x, hx)
    assert lean is not None and q.last_engine == "int8"
    with general_path():
        general = q(x, hx)
    _same(lean, general)


def _edits() -> list:
    """Ways a weight changes after the first call: each must reach the next call."""
    def in_place(q: torch.nn.Module) -> None:
        q.weight_hh_l0[0].neg_()

    def scale(q: torch.nn.Module) -> None:
        q.weight_ih_l0_scale.mul_(2)

    def bias(q: torch.nn.Module) -> None:
        q.bias_hh_l0.add_(0.5)

    def state_dict(q: torch.nn.Module) -> None:
        other = gatedrnn.quantize(gatedrnn.LSTM(4, 8, num_layers=2))
        q.load_state_dict(other.state_dict())

    def data(q: torch.nn.Module) -> None:
        q.weight_ih_l1.data = q.weight_ih_l1.flip(0)

    def reassigned(q: torch.nn.Module) -> None:
        q.weight_hh_l1 = q.weight_hh_l1.flip(1).contiguous()

    return [in_place, scale, bias, state_dict, data, reassigned]


@pytest.mark.parametrize("edit", _edits(), ids=lambda f: f.__name__)
def test_cache_follows_the_weights(edit) -> None:
    torch.manual_seed(0)
    q = gatedrnn.quantize(gatedrnn.LSTM(4, 8, num_layers=2))
    x = torch.randn(6, 2, 4)
    before = q(x)
    plan = q.__dict__["_lean"]
    assert plan.run is not None and quantized_lean.plan(q) is plan  # cached while unchanged
    edit(q)
    after = q(x)
    assert q.__dict__["_lean"] is not plan
    assert not torch.equal(after[0], before[0])
    with general_path():
        _same(after, q(x))


def test_cell_cache_follows_the_weights() -> None:
    q = gatedrnn.quantize(gatedrnn.GRUCell(4, 8))
    x = torch.randn(2, 4)
    before = q(x)
    q.weight_ih.mul_(-1)
    after = q(x)
    assert not torch.equal(after, before)
    with general_path():
        _same(after, q(x))


def test_plan_is_not_copied() -> None:
    q = gatedrnn.quantize(gatedrnn.GRU(4, 8))
    x = torch.randn(3, 1, 4)
    y = q(x)
    assert "_lean" in q.__dict__
    twin = copy.deepcopy(q)
    assert "_lean" not in twin.__dict__
    _same(twin(x), y)


def test_inference_mode_weights() -> None:
    # Tensors made under inference_mode have no version counter: no plan runs, the general
    # path packs at every call, and the outputs are those of a model made outside it.
    torch.manual_seed(0)
    f = gatedrnn.GRU(4, 8)
    q = gatedrnn.quantize(f)
    x = torch.randn(5, 2, 4)
    with torch.inference_mode():
        qi = gatedrnn.quantize(f)
        _same(qi(x), q(x))
        assert qi.last_engine == "int8" and qi.__dict__["_lean"].run is None
    _same(qi(x), q(x))


def test_unusual_calls_take_the_general_path() -> None:
    torch.manual_seed(0)
    q = gatedrnn.quantize(gatedrnn.LSTM(4, 8, proj_size=3))
    x = torch.randn(5, 2, 4)
    packed = torch.nn.utils.rnn.pack_sequence([torch.randn(3, 4), torch.randn(2, 4)])
    assert quantized_lean.module_call(q, packed, None, False) is None
    assert quantized_lean.module_call(q, x, None, True) is None  # return_gates
    assert quantized_lean.module_call(q, x, [torch.zeros(1, 2, 3), torch.zeros(1, 2, 8)],
                                      False) is None  # a list, not a tuple
    q(x, return_gates=True)
    assert q.last_engine == "int8-reference"
    m = gatedrnn.QuantizedGRU(4, 8, engine="int8-reference")
    assert quantized_lean.module_call(m, x, None, False) is None
    m(x)
    assert m.last_engine == "int8-reference"
    ref = gatedrnn.quantize(gatedrnn.GRU(4, 8))
    ref(x)
    ref.engine = "int8-reference"  # a changed engine reaches the plan
    ref(x)
    assert ref.last_engine == "int8-reference"


def test_bad_input_gets_the_general_errors() -> None:
    q = gatedrnn.quantize(gatedrnn.LSTM(3, 4, num_layers=2))
    x = torch.randn(5, 2, 3)
    q(x)  # a cached plan: the errors must not depend on it
    bad = [((x.double(),), ValueError, "float32"), ((x.half(),), ValueError, "float32"),
           ((torch.randn(5, 2, 7),), RuntimeError, "input_size"),
           ((torch.randn(5, 2, 3, 1),), ValueError, "2D or 3D"),
           ((x, (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))), RuntimeError, "hidden"),
           ((x, (torch.zeros(2, 2, 4), torch.zeros(2, 2, 4).double())), RuntimeError, "dtype"),
           ((x[0], (torch.zeros(2, 2, 4), torch.zeros(2, 2, 4))), RuntimeError, "2-D")]
    for args, err, match in bad:
        with pytest.raises(err, match=match):
            q(*args)
    q.train()
    with pytest.raises(RuntimeError, match="inference only"):
        q(x)
    cell = gatedrnn.quantize(gatedrnn.LSTMCell(3, 4))
    cell(x[0])
    with pytest.raises(ValueError, match="float32"):
        cell(x[0].double())
    with pytest.raises(RuntimeError):
        cell(torch.randn(2, 5))
    with pytest.raises(RuntimeError):
        cell(x[0], (torch.zeros(3, 4), torch.zeros(3, 4)))
    cell.train()
    with pytest.raises(RuntimeError, match="inference only"):
        cell(x[0])
