"""Constructor arguments, differentially against the installed torch.nn, at run time.

Each constructor is fed a range of argument types and values (ints, bools, 0-dim and 1-element
integer tensors, numpy integers and bools, floats, strings, None, negative and zero), torch.nn's
class and gatedrnn's are both built, and:

- where torch.nn refuses, gatedrnn refuses with the same exception class;
- where torch.nn builds and gatedrnn refuses, every call torch.nn's module is given raises that
  same class (gatedrnn may refuse earlier only what torch.nn refuses at the call);
- where both build, the sizes are stored as plain ints (JSON- and weights_only-safe), and with
  torch.nn's weights copied, a few calls (batched, with the state, unbatched) give the same
  outputs or the same exception class.

MinGRU, MinLSTM and SLSTM follow torch.nn's rules: each accepts and refuses what torch.nn.GRU
does, with its exception classes. Nothing here is a list of expected outcomes written down today:
the oracle is the torch installed.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.modules.patch import TORCH_CLASSES

ENGINES = ("auto", "fused", "reference", "native")
SIGNATURES: dict[str, list[tuple[str, Any]]] = {
    "LSTM": [("input_size", 3), ("hidden_size", 4), ("num_layers", 1), ("bias", True),
             ("batch_first", False), ("dropout", 0.0), ("bidirectional", False), ("proj_size", 0)],
    "GRU": [("input_size", 3), ("hidden_size", 4), ("num_layers", 1), ("bias", True),
            ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)],
    "RNN": [("input_size", 3), ("hidden_size", 4), ("num_layers", 1), ("nonlinearity", "tanh"),
            ("bias", True), ("batch_first", False), ("dropout", 0.0), ("bidirectional", False)],
    "LSTMCell": [("input_size", 3), ("hidden_size", 4), ("bias", True)],
    "GRUCell": [("input_size", 3), ("hidden_size", 4), ("bias", True)],
    "RNNCell": [("input_size", 3), ("hidden_size", 4), ("bias", True), ("nonlinearity", "tanh")],
}

# A value of any kind a caller might pass: what torch.nn takes and what it refuses.
VALUES = st.one_of(
    st.integers(-2, 4),
    st.booleans(),
    st.integers(-1, 4).map(torch.tensor),  # 0-dim int64
    st.integers(1, 3).map(lambda v: torch.tensor([v])),  # one element, 1-D
    st.integers(0, 4).map(np.int64),
    st.integers(1, 4).map(np.int32),
    st.booleans().map(np.bool_),
    st.booleans().map(torch.tensor),
    st.sampled_from([0.0, 0.5, 1.0, 3.0, 1.5, -0.5]),
    st.floats(0, 4).map(torch.tensor),
    st.sampled_from(["3", "tanh", "relu", "", None]),
)


def _outcome(fn: Any) -> tuple[Any, BaseException | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (torch.nn's dropout warning, for both)
        try:
            return fn(), None
        except Exception as e:  # noqa: BLE001 - the exception class is what is compared
            return None, e


def _args(name: str, overrides: dict[str, Any], positional: bool) -> tuple[list, dict]:
    values = [(k, overrides.get(k, default)) for k, default in SIGNATURES[name]]
    return ([v for _, v in values], {}) if positional else ([], dict(values))


def _calls(m: Any, cell: bool, lstm: bool, size: int) -> list[Any]:
    """Three calls on module or cell ``m``: batched, with a state, unbatched."""
    torch.manual_seed(0)
    x = torch.randn(2, size) if cell else torch.randn(4, 2, size)
    calls = [lambda: m(x), None, lambda: m(x[0])]

    def with_state() -> Any:
        out = m(x)
        return m(x, out if cell else out[1])

    calls[1] = with_state
    return calls


def _same_error(ours: BaseException, theirs: BaseException) -> bool:
    return isinstance(ours, type(theirs))


def _flat(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for o in out for t in _flat(o)] if isinstance(out, (tuple, list)) else []


def _compare(name: str, ours_cls: type, theirs_cls: type, args: list, kwargs: dict,
             engine: str, outputs: bool) -> None:
    cell = name.endswith("Cell")
    theirs, t_err = _outcome(lambda: theirs_cls(*args, **kwargs))
    extra = {"engine": engine} if engine else {}
    ours, o_err = _outcome(lambda: ours_cls(*args, **kwargs, **extra))
    if t_err is not None:
        assert o_err is not None, f"torch.nn refuses ({t_err!r}), gatedrnn builds"
        assert _same_error(o_err, t_err), f"torch.nn: {t_err!r}; gatedrnn: {o_err!r}"
        return
    w = theirs.weight_ih if cell else theirs.weight_ih_l0
    size = w.shape[1]
    if o_err is not None:  # refused early: only what every call of torch.nn's raises, same class
        for call in _calls(theirs, cell, "LSTM" in name, size):
            _, err = _outcome(call)
            assert err is not None and _same_error(o_err, err), \
                f"gatedrnn refuses ({o_err!r}) what torch.nn's call gives: {err!r}"
        return
    for key in ("input_size", "hidden_size", "num_layers", "proj_size"):
        if hasattr(ours, key):
            assert type(getattr(ours, key)) is int, (key, getattr(ours, key))
    if hasattr(ours, "get_config"):
        json.dumps(ours.get_config())
    if not outputs:  # (another class's rules: only whether calls run)
        for a, b in zip(_calls(theirs, cell, False, size), _calls(ours, cell, False, size)):
            (_, e1), (_, e2) = _outcome(a), _outcome(b)
            assert (e1 is None) == (e2 is None) and (e1 is None or _same_error(e2, e1)), (e1, e2)
        return
    ours.load_state_dict(theirs.state_dict())
    for a, b in zip(_calls(theirs, cell, False, size), _calls(ours, cell, False, size)):
        (out1, e1), (out2, e2) = _outcome(a), _outcome(b)
        if e1 is not None or e2 is not None:
            assert e1 is not None and e2 is not None and _same_error(e2, e1), (e1, e2)
            continue
        for p, q in zip(_flat(out1), _flat(out2), strict=True):
            # engines agree with torch.nn to ~1e-6 in float32 at these sizes (measured: < 5e-7)
            torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(SIGNATURES))
@settings(max_examples=120)
@given(data=st.data())
def test_constructor_arguments_as_torch_nn(name, data) -> None:
    keys = [k for k, _ in SIGNATURES[name]]
    overrides = data.draw(st.dictionaries(st.sampled_from(keys), VALUES, min_size=1, max_size=3))
    positional = data.draw(st.booleans())
    engine = data.draw(st.sampled_from(ENGINES))
    args, kwargs = _args(name, overrides, positional)
    _compare(name, getattr(gatedrnn, name), TORCH_CLASSES[name], args, kwargs, engine, True)


@pytest.mark.parametrize("name", ["MinGRU", "MinLSTM", "SLSTM"])
@settings(max_examples=80)
@given(data=st.data())
def test_newer_modules_follow_torch_nn_grus_rules(name, data) -> None:
    keys = [k for k, _ in SIGNATURES["GRU"]]
    overrides = data.draw(st.dictionaries(st.sampled_from(keys), VALUES, min_size=1, max_size=3))
    args, kwargs = _args("GRU", overrides, data.draw(st.booleans()))
    _compare(name, getattr(gatedrnn, name), TORCH_CLASSES["GRU"], args, kwargs, "", False)


@pytest.mark.parametrize(("name", "overrides"), [
    ("LSTM", {"proj_size": np.False_}), ("LSTM", {"proj_size": torch.tensor([2])}),
    ("LSTM", {"hidden_size": True}), ("GRU", {"num_layers": np.int32(2)}),
    ("RNN", {"num_layers": torch.tensor(2)}), ("LSTMCell", {"hidden_size": np.True_}),
    ("GRUCell", {"input_size": torch.tensor([3])}), ("RNNCell", {"hidden_size": False}),
])
@pytest.mark.parametrize("engine", ENGINES)
def test_integer_likes_a_long_search_found(name, overrides, engine) -> None:
    """Integer-likes that a longer random search (1,500 constructions a class) reached."""
    _compare(name, getattr(gatedrnn, name), TORCH_CLASSES[name], *_args(name, overrides, False),
             engine, True)


def test_speechbrains_cell_arguments() -> None:
    """speechbrain.nnet.RNN builds torch.nn.LSTMCell(input_size=<0-dim tensor>, ..., bias=1)."""
    for name in ("LSTMCell", "GRUCell", "RNNCell"):
        kw = {"input_size": torch.tensor(3), "hidden_size": np.int64(4), "bias": 1}
        ours, theirs = getattr(gatedrnn, name)(**kw), TORCH_CLASSES[name](**kw)
        assert (ours.input_size, ours.hidden_size, ours.bias) == (3, 4, True)
        assert type(ours.input_size) is int and type(ours.hidden_size) is int
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(2, 3)
        for p, q in zip(_flat(theirs(x)), _flat(ours(x)), strict=True):
            torch.testing.assert_close(q, p, atol=1e-5, rtol=1e-5)


def _input(kind: str, cell: bool, size: int) -> Any:
    shape = [2, size] if cell else [4, 2, size]
    x = torch.randn(shape)
    return {"tensor": x, "meta": x.to("meta"), "meta 4-D": x[None].to("meta"),
            "meta wrong size": torch.randn(*shape[:-1], size + 1, device="meta"),
            "4-D": x[None], "0-D": torch.tensor(1.0), "list": x.tolist(), "numpy": x.numpy(),
            "None": None, "float64": x.double(), "int": x.long()}[kind]


@pytest.mark.parametrize("name", list(SIGNATURES))
@settings(max_examples=60)
@given(kind=st.sampled_from(["tensor", "meta", "meta 4-D", "meta wrong size", "4-D", "0-D", "list",
                             "numpy", "None", "float64", "int"]),
       hx=st.sampled_from(["none", "state", "3-D", "meta", "list", "tensor for a tuple"]),
       engine=st.sampled_from(ENGINES), grad=st.booleans())
def test_call_errors_as_torch_nn(name, kind, hx, engine, grad) -> None:
    """Calls on a CPU module: torch.nn's exception class, in torch.nn's order (a meta input to the
    fused engine raises the dims' ValueError where torch.nn does, the device's RuntimeError where
    torch.nn's op does), and a non-tensor input torch.nn's class."""
    cell = name.endswith("Cell")
    theirs = TORCH_CLASSES[name](3, 4)
    ours = getattr(gatedrnn, name)(3, 4, engine=engine)
    ours.load_state_dict(theirs.state_dict())
    x = _input(kind, cell, 3)
    state: Any = None
    if hx != "none":
        with torch.no_grad():
            out = theirs(torch.randn(2, 3) if cell else torch.randn(4, 2, 3))
        state = out if cell else out[1]
        lstm = isinstance(state, tuple)
        change = {"3-D": lambda s: s[None], "meta": lambda s: s.to("meta"),
                  "list": lambda s: s.tolist()}.get(hx)
        if change is not None:
            state = tuple(change(s) for s in state) if lstm else change(state)
        if hx == "tensor for a tuple":
            state = state[0] if lstm else (state, state)
    with torch.set_grad_enabled(grad):
        (_, e1), (_, e2) = _outcome(lambda: theirs(x, state)), _outcome(lambda: ours(x, state))
    if e1 is None and e2 is not None and engine == "fused" and "fused" in str(e2):
        return  # (engine="fused" on a device it cannot run: refused by design, after the checks)
    assert (e1 is None) == (e2 is None) and (e1 is None or _same_error(e2, e1)), (e1, e2)


@pytest.mark.parametrize("name", ["MinGRU", "MinLSTM", "SLSTM"])
@pytest.mark.parametrize("kind", ["list", "numpy", "None", "0-D", "4-D"])
def test_newer_modules_raise_torch_nn_grus_class_for_a_bad_input(name, kind) -> None:
    x = _input(kind, False, 3)
    (_, theirs), (_, ours) = (_outcome(lambda: TORCH_CLASSES["GRU"](3, 4)(x)),
                              _outcome(lambda: getattr(gatedrnn, name)(3, 4)(x)))
    assert theirs is not None and ours is not None and _same_error(ours, theirs), (theirs, ours)
