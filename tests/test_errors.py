"""Bad input raises what torch.nn raises (the same class or a subclass of it), with a clear message."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import gatedrnn

PAIRS = {
    "LSTM": (gatedrnn.LSTM, torch.nn.LSTM),
    "GRU": (gatedrnn.GRU, torch.nn.GRU),
    "RNN": (gatedrnn.RNN, torch.nn.RNN),
}


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - we compare whatever both libraries raise
        return e
    return None


def assert_same_error(ours_fn, torch_fn) -> Exception:
    theirs = _raised(torch_fn)
    assert theirs is not None, "torch.nn accepted this input; the test case is wrong"
    ours = _raised(ours_fn)
    assert ours is not None, f"gatedrnn accepted what torch.nn rejects with {theirs!r}"
    assert isinstance(ours, type(theirs)), (ours, theirs)
    assert str(ours), "the message must name the problem"
    return ours


def _call(kind, args, kwargs, x, hx=None):
    def run(i):
        torch.manual_seed(0)
        m = PAIRS[kind][i](*args, **kwargs)
        return m(x) if hx is None else m(x, hx)
    return (lambda: run(0)), (lambda: run(1))


FORWARD = [
    ("rank 4 input", (3, 4), torch.randn(2, 5, 2, 3), None),
    ("rank 1 input", (3, 4), torch.randn(3), None),
    ("wrong feature size", (3, 4), torch.randn(5, 2, 7), None),
    ("dtype mismatch", (3, 4), torch.randn(5, 2, 3, dtype=torch.float64), None),
    ("zero-length sequence", (3, 4), torch.randn(0, 2, 3), None),
    ("zero-length unbatched", (3, 4), torch.randn(0, 3), None),
]


@pytest.mark.parametrize("kind", PAIRS)
@pytest.mark.parametrize("label,args,x,hx", FORWARD, ids=[f[0] for f in FORWARD])
def test_bad_input(kind, label, args, x, hx) -> None:
    assert_same_error(*_call(kind, args, {}, x, hx))


def _h(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


HIDDEN = [
    ("LSTM", "h wrong batch", (_h(1, 3, 4), _h(1, 3, 4))),
    ("LSTM", "h too few layers", (_h(1, 2, 4), _h(1, 2, 4)), 2),
    ("LSTM", "h wrong rank", (_h(2, 4), _h(2, 4))),
    ("LSTM", "c wrong size", (_h(1, 2, 4), _h(1, 2, 5))),
    ("LSTM", "tensor instead of tuple", _h(1, 2, 4)),
    ("LSTM", "tuple of one", (_h(1, 2, 4),)),
    ("LSTM", "hx dtype", (_h(1, 2, 4, dtype=torch.float64), _h(1, 2, 4, dtype=torch.float64))),
    ("GRU", "h wrong batch", _h(1, 3, 4)),
    ("GRU", "h wrong rank", _h(2, 4)),
    ("GRU", "too few layers x directions", _h(2, 2, 4), 2, True),
    ("GRU", "tuple instead of tensor", (_h(1, 2, 4),)),
    ("GRU", "hx dtype", _h(1, 2, 4, dtype=torch.float64)),
    ("RNN", "h wrong size", _h(1, 2, 5)),
]


@pytest.mark.parametrize("case", HIDDEN, ids=[f"{c[0]}-{c[1]}" for c in HIDDEN])
def test_bad_hidden_state(case) -> None:
    kind, _, hx, *rest = case
    layers = rest[0] if rest else 1
    bi = rest[1] if len(rest) > 1 else False
    assert_same_error(*_call(kind, (3, 4), dict(num_layers=layers, bidirectional=bi),
                             torch.randn(5, 2, 3), hx))


def test_packed_with_wrong_hidden_batch() -> None:
    x = pack_padded_sequence(torch.randn(5, 3, 3), torch.tensor([5, 4, 2]))
    assert_same_error(*_call("GRU", (3, 4), {}, x, _h(1, 2, 4)))


def test_zero_length_in_packed_batch_is_rejected_when_packing() -> None:
    with pytest.raises(RuntimeError, match="greater than 0"):
        pack_padded_sequence(torch.randn(4, 2, 3), torch.tensor([3, 0]), enforce_sorted=False)


CONSTRUCTOR = [
    ("GRU", dict(proj_size=2)),
    ("RNN", dict(proj_size=2)),
    ("LSTM", dict(proj_size=-1)),
    ("LSTM", dict(proj_size=4)),
    ("LSTM", dict(proj_size=5)),
    ("LSTM", dict(hidden_size=0)),
    ("GRU", dict(hidden_size=-3)),
    ("LSTM", dict(hidden_size=2.5)),
    ("LSTM", dict(num_layers=0)),
    ("GRU", dict(num_layers=1.5)),
    ("LSTM", dict(dropout=1.5)),
    ("GRU", dict(dropout=-0.1)),
    ("LSTM", dict(dropout=True)),
    ("RNN", dict(nonlinearity="sigmoid")),
    ("LSTM", dict(input_size=0)),
    ("LSTM", dict(bias="yes")),
]


@pytest.mark.parametrize("kind,kwargs", CONSTRUCTOR, ids=[f"{k}-{kw}" for k, kw in CONSTRUCTOR])
def test_bad_constructor(kind, kwargs) -> None:
    full = dict(input_size=3, hidden_size=4)
    full.update(kwargs)
    ours, theirs = PAIRS[kind]
    assert_same_error(lambda: ours(**full), lambda: theirs(**full))


@pytest.mark.parametrize("kwargs", [dict(recurrent_dropout=1.0), dict(zoneout=-0.5),
                                    dict(weight_drop=True), dict(engine="gpu"), dict(init="xavier"),
                                    dict(init="chrono")])
def test_bad_variant_options(kwargs) -> None:
    with pytest.raises(ValueError):
        gatedrnn.LSTM(3, 4, **kwargs)


def test_layer_norm_needs_reset_after() -> None:
    with pytest.raises(ValueError, match="reset_after"):
        gatedrnn.GRU(3, 4, layer_norm=True, reset_after=False)


def test_dropout_warning_like_torch() -> None:
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        gatedrnn.GRU(3, 4, dropout=0.2)


CELLS = {"LSTMCell": (gatedrnn.LSTMCell, torch.nn.LSTMCell), "GRUCell": (gatedrnn.GRUCell, torch.nn.GRUCell),
         "RNNCell": (gatedrnn.RNNCell, torch.nn.RNNCell)}


def _cell_state(kind, *shape):
    return (_h(*shape), _h(*shape)) if kind == "LSTMCell" else _h(*shape)


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("bad", ["features", "batch", "rank", "hidden size"])
def test_bad_cell_input(kind, bad) -> None:
    x, hx = torch.randn(2, 3), _cell_state(kind, 2, 4)
    if bad == "features":
        x = torch.randn(2, 5)
    elif bad == "batch":
        hx = _cell_state(kind, 3, 4)
    elif bad == "rank":
        x = torch.randn(2, 2, 3)
    else:
        hx = _cell_state(kind, 2, 5)

    def run(i):
        torch.manual_seed(0)
        return CELLS[kind][i](3, 4)(x, hx)
    assert_same_error(lambda: run(0), lambda: run(1))
