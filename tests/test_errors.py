"""Bad input raises what torch.nn raises, class for class; what torch.nn accepts, gatedrnn accepts.

The property tests give random constructor arguments and random forward inputs (wrong ranks,
dtypes, sizes, hx shapes and arities, lists, bool and float sizes) to torch.nn and to gatedrnn on
every engine: both accept (and then agree) or both raise the same class. The hand-written cases
below them pin the messages of gatedrnn's own options.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import gatedrnn

ENGINES = ("reference", "fused", "native", "auto")
MODULES = {"LSTM": (gatedrnn.LSTM, torch.nn.LSTM), "GRU": (gatedrnn.GRU, torch.nn.GRU),
           "RNN": (gatedrnn.RNN, torch.nn.RNN)}
CELL_PAIRS = {"LSTMCell": (gatedrnn.LSTMCell, torch.nn.LSTMCell),
              "GRUCell": (gatedrnn.GRUCell, torch.nn.GRUCell),
              "RNNCell": (gatedrnn.RNNCell, torch.nn.RNNCell)}


def _outcome(fn):
    """(result, None) or (None, exception), with torch's warnings silenced for both sides."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(), None
    except Exception as e:  # noqa: BLE001 - we compare whatever both libraries raise
        return None, e


def assert_same_outcome(ours_fn, torch_fn, tol: float = 1e-5):
    """Both raise the same class (ours may be a subclass), or both return and agree."""
    want, theirs = _outcome(torch_fn)
    got, ours = _outcome(ours_fn)
    if theirs is not None:
        assert ours is not None, f"gatedrnn accepted what torch.nn rejects with {theirs!r}"
        assert isinstance(ours, type(theirs)), (ours, theirs)
        assert str(ours), "the message must name the problem"
        return None
    assert ours is None, f"gatedrnn raised {ours!r} where torch.nn accepts"
    a, b = (torch.utils._pytree.tree_leaves(o) for o in (got, want))
    assert len(a) == len(b)
    for u, v in zip(a, b):
        if isinstance(u, torch.Tensor):
            assert u.shape == v.shape and u.dtype == v.dtype
            assert torch.allclose(u, v, atol=tol, equal_nan=True), (u - v).abs().max()
    return got


# --- random constructor arguments -----------------------------------------------------------------

SIZES = st.sampled_from([3, 3, 3, 1, True, 0, -1, 2.0, "3"])
FLAGS = st.sampled_from([False, False, True, 0, 1, "no", None])
DROPOUT = st.sampled_from([0.0, 0.0, 0.3, 1.0, 1.5, -0.1, True, "0"])


@st.composite
def module_args(draw):
    kind = draw(st.sampled_from(sorted(MODULES)))
    kw = {"input_size": draw(SIZES), "hidden_size": draw(st.sampled_from([4, 4, 1, True, 0, 4.5])),
          "num_layers": draw(st.sampled_from([1, 1, 2, 0, True])), "bias": draw(FLAGS),
          "batch_first": draw(FLAGS), "dropout": draw(DROPOUT), "bidirectional": draw(FLAGS)}
    if kind == "LSTM":
        kw["proj_size"] = draw(st.sampled_from([0, 0, 2, 4, 5, -1, 2.0, True]))
    if kind == "RNN":
        kw["nonlinearity"] = draw(st.sampled_from(["tanh", "relu", "sigmoid"]))
    drop = draw(st.lists(st.sampled_from(sorted(kw)[2:]), unique=True))  # keep the two sizes
    return kind, {k: v for k, v in kw.items() if k not in drop}


@st.composite
def cell_args(draw):
    kind = draw(st.sampled_from(sorted(CELL_PAIRS)))
    kw = {"input_size": draw(SIZES), "hidden_size": draw(st.sampled_from([4, 4, True, 0, 4.5])),
          "bias": draw(st.sampled_from([True, False, 1, 0, "tanh", None]))}
    if kind == "RNNCell":
        kw["nonlinearity"] = draw(st.sampled_from(["tanh", "relu", "sigmoid"]))
    return kind, kw


def _stricter(kw) -> bool:
    """Arguments torch.nn's constructors take and gatedrnn's refuse: a bool size, a bidirectional
    that is not a bool."""
    sizes = ("input_size", "hidden_size", "num_layers", "proj_size")
    return any(isinstance(kw.get(k), bool) for k in sizes) or \
        not isinstance(kw.get("bidirectional", False), bool)


def _both(pair, kw, engine):
    def ours():
        torch.manual_seed(0)
        return pair[0](**kw, engine=engine)

    def theirs():
        torch.manual_seed(0)
        return pair[1](**kw)
    return ours, theirs


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=60, deadline=None)
@given(args=st.one_of(module_args(), cell_args()))
def test_constructor_accepts_and_refuses_what_torch_does(args, engine) -> None:
    kind, kw = args
    pair = MODULES.get(kind) or CELL_PAIRS[kind]
    ours, theirs = _both(pair, kw, engine)
    if _stricter(kw) and _outcome(theirs)[1] is None:
        # torch.nn builds these and fails (or runs by truthiness) at the call; gatedrnn refuses
        # them when built, with the TypeError torch.nn's op raises at the call.
        assert isinstance(_outcome(ours)[1], (TypeError, type(None)))
        return
    m = assert_same_outcome(ours, theirs)
    if m is not None:
        assert isinstance(m, pair[1])


# --- random forward inputs ---------------------------------------------------------------------


def _tensor(draw, sizes: list[int], dtype_default: torch.dtype):
    """A tensor near the expected shape: a rank off by one, a size off by one or zero, another
    dtype, or not a tensor at all."""
    shape = list(sizes)
    how = draw(st.sampled_from(["ok"] * 5 + ["rank-", "rank+", "size", "dtype", "list"]))
    dtype = dtype_default
    if how == "rank-" and shape:
        shape = shape[1:]
    elif how == "rank+":
        shape = [1] + shape
    elif how == "size" and shape:
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw(st.sampled_from([0, shape[i] + 1, max(shape[i] - 1, 0)]))
    elif how == "dtype":
        dtype = torch.float64 if dtype_default == torch.float32 else torch.float32
    t = torch.randn(shape, dtype=dtype)
    return t.tolist() if how == "list" else t


@st.composite
def module_call(draw):
    kind = draw(st.sampled_from(sorted(MODULES)))
    layers, bi, bf = draw(st.integers(1, 2)), draw(st.booleans()), draw(st.booleans())
    proj = draw(st.sampled_from([0, 2])) if kind == "LSTM" else 0
    kw = {"input_size": 3, "hidden_size": 4, "num_layers": layers, "bidirectional": bi,
          "batch_first": bf}
    if proj:
        kw["proj_size"] = proj
    T, B = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    unbatched = draw(st.booleans())
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    x_shape = [T, 3] if unbatched else ([B, T, 3] if bf else [T, B, 3])
    x = _tensor(draw, x_shape, dtype)
    packed = not unbatched and draw(st.integers(0, 4)) == 0 and isinstance(x, torch.Tensor) \
        and x.dim() == 3 and x.shape[0] > 0 and x.shape[1] > 0
    if packed:
        n = x.shape[1] if not bf else x.shape[0]
        lengths = torch.tensor(draw(st.lists(st.integers(1, x.shape[0 if not bf else 1]),
                                             min_size=n, max_size=n)))
        x = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=False)
    LD = layers * (2 if bi else 1)
    h_shape = [LD, 4 if not proj else proj] if unbatched else [LD, B, proj or 4]
    c_shape = [LD, 4] if unbatched else [LD, B, 4]
    hx = None
    form = draw(st.sampled_from(["none", "right", "right", "tensor", "tuple1", "list"]))
    if packed and kind == "LSTM":
        form = "none"  # torch.nn.LSTM does not check a packed call's state (see the pinned test)
    if form != "none":
        h, c = _tensor(draw, h_shape, dtype), _tensor(draw, c_shape, dtype)
        wants_pair = kind == "LSTM"
        if form == "right":
            hx = (h, c) if wants_pair else h
        elif form == "tensor":
            hx = h
        elif form == "tuple1":
            hx = (h,)
        else:
            hx = [h, c] if wants_pair else [h]
    return kind, kw, dtype, x, hx


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=120, deadline=None)
@given(call=module_call())
def test_forward_accepts_and_refuses_what_torch_does(call, engine) -> None:
    kind, kw, dtype, x, hx = call
    ours, theirs = _both(MODULES[kind], {**kw, "dtype": torch.float32}, engine)
    m, ref = ours().eval(), theirs().eval()
    ref.load_state_dict(m.state_dict())
    assert_same_outcome(lambda: m(x, hx), lambda: ref(x, hx))


@st.composite
def cell_call(draw):
    kind = draw(st.sampled_from(sorted(CELL_PAIRS)))
    B, unbatched = draw(st.integers(1, 3)), draw(st.booleans())
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    x = _tensor(draw, [3] if unbatched else [B, 3], dtype)
    shape = [4] if unbatched else [B, 4]
    form = draw(st.sampled_from(["none", "right", "right", "tensor", "tuple1", "list"]))
    hx = None
    if form != "none":
        h, c = _tensor(draw, shape, dtype), _tensor(draw, shape, dtype)
        pair = kind == "LSTMCell"
        hx = {"right": (h, c) if pair else h, "tensor": h, "tuple1": (h,),
              "list": [h, c] if pair else [h]}[form]
    return kind, x, hx


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=120, deadline=None)
@given(call=cell_call(), grad=st.booleans())
def test_cell_forward_accepts_and_refuses_what_torch_does(call, grad, engine) -> None:
    kind, x, hx = call
    ours, theirs = _both(CELL_PAIRS[kind], {"input_size": 3, "hidden_size": 4}, engine)
    m, ref = ours(), theirs()
    ref.load_state_dict(m.state_dict())
    with torch.set_grad_enabled(grad):
        assert_same_outcome(lambda: m(x, hx), lambda: ref(x, hx))


# --- pinned cases: messages, and what the properties might draw rarely ---------------------------


def _h(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


PINNED = [
    ("LSTM", {}, torch.randn(2, 5, 2, 3), None),
    ("GRU", {}, torch.randn(3), None),
    ("RNN", {}, torch.randn(5, 2, 7), None),
    ("LSTM", {}, torch.randn(5, 2, 3, dtype=torch.float64), None),
    ("GRU", {}, torch.randn(0, 2, 3), None),
    ("LSTM", {}, torch.randn(0, 3), None),
    ("LSTM", {}, torch.randn(5, 2, 3), _h(1, 2, 4)),
    ("LSTM", {}, torch.randn(5, 2, 3), (_h(1, 2, 4),)),
    ("LSTM", {}, torch.randn(5, 2, 3), (_h(1, 2, 4, dtype=torch.float64),) * 2),
    ("LSTM", {"num_layers": 2}, torch.randn(5, 2, 3), (_h(1, 2, 4), _h(1, 2, 4))),
    ("GRU", {"bidirectional": True}, torch.randn(5, 2, 3), _h(1, 2, 4)),
    ("GRU", {}, torch.randn(5, 2, 3), (_h(1, 2, 4),)),
    ("GRU", {}, pack_padded_sequence(torch.randn(5, 3, 3), torch.tensor([5, 4, 2])), _h(1, 2, 4)),
    ("RNN", {}, [[1.0, 2.0, 3.0]], None),
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", PINNED, ids=range(len(PINNED)))
def test_pinned_bad_forward(case, engine) -> None:
    kind, kw, x, hx = case
    ours, theirs = _both(MODULES[kind], {"input_size": 3, "hidden_size": 4, **kw}, engine)
    m, ref = ours(), theirs()
    _, err = _outcome(lambda: ref(x, hx))
    assert err is not None, "torch.nn accepted this input; the test case is wrong"
    assert_same_outcome(lambda: m(x, hx), lambda: ref(x, hx))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind,hx", [("LSTMCell", (_h(2, 1, 1, 4),) * 2), ("GRUCell", _h(2, 1, 4)),
                                     ("RNNCell", _h(1, 2, 1, 4))])
def test_cell_hidden_of_rank_3_or_4_is_a_value_error(kind, hx, engine) -> None:
    ours, theirs = _both(CELL_PAIRS[kind], {"input_size": 3, "hidden_size": 4}, engine)
    with pytest.raises(ValueError, match="1D or 2D"):
        ours()(torch.randn(2, 3), hx)
    with pytest.raises(ValueError, match="1D or 2D"):
        theirs()(torch.randn(2, 3), hx)


@pytest.mark.parametrize("engine", ENGINES)
def test_cell_dtype_mismatch_is_a_runtime_error(engine) -> None:
    cell = gatedrnn.GRUCell(3, 4, engine=engine)
    with pytest.raises(RuntimeError):
        cell(torch.randn(2, 3, dtype=torch.float64), torch.zeros(2, 4, dtype=torch.float64))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", sorted(MODULES))
@pytest.mark.parametrize("name", ["weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_ih_l1"])
@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("T,B", [(3, 2), (1, 1), (20, 64)])
def test_a_weight_of_another_dtype_is_refused_as_torch_refuses_it(engine, kind, name, grad, T, B):
    """A weight made float64 through ``.data`` behind a float32 weight_ih_l0: torch's op raises a
    RuntimeError (its words differ by op), and so does every engine, whatever route the call
    takes (a fused kernel would otherwise read the weight converted)."""
    ours_cls, theirs_cls = MODULES[kind]
    outcomes = []
    for cls in (theirs_cls, ours_cls):
        kw = {} if cls is theirs_cls else {"engine": engine}
        m = cls(3, 4, num_layers=2, **kw)
        p = getattr(m, name)
        p.data = p.data.double()
        with torch.set_grad_enabled(grad):
            outcomes.append(_outcome(lambda: m(torch.randn(T, B, 3)))[1])  # noqa: B023
    assert type(outcomes[0]) is RuntimeError, outcomes[0]
    assert isinstance(outcomes[1], RuntimeError), outcomes[1]


@pytest.mark.parametrize("kwargs,error", [
    (dict(recurrent_dropout=1.0), ValueError), (dict(zoneout=-0.5), ValueError),
    (dict(weight_drop=True), ValueError), (dict(engine="gpu"), ValueError),
    (dict(engine=None), ValueError), (dict(init="xavier"), ValueError),
    (dict(init="chrono"), ValueError), (dict(init="chrono", chrono_max_len=2.5), TypeError),
    (dict(forget_bias=float("inf")), ValueError), (dict(forget_bias=float("nan")), ValueError),
    (dict(forget_bias=True), TypeError), (dict(forget_bias="1"), TypeError),
    (dict(layer_norm=1), TypeError), (dict(peephole="yes"), TypeError),
])
def test_bad_variant_options(kwargs, error) -> None:
    with pytest.raises(error):
        gatedrnn.LSTM(3, 4, **kwargs)


def test_gru_reset_after_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="reset_after"):
        gatedrnn.GRU(3, 4, reset_after=None)
    with pytest.raises(TypeError, match="reset_after"):
        gatedrnn.GRUCell(3, 4, reset_after=0)


def test_layer_norm_needs_reset_after() -> None:
    with pytest.raises(ValueError, match="reset_after"):
        gatedrnn.GRU(3, 4, layer_norm=True, reset_after=False)


def test_dropout_warning_like_torch() -> None:
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        gatedrnn.GRU(3, 4, dropout=0.2)


def test_unknown_rnn_cell_nonlinearity_is_refused_when_called_as_torch_does() -> None:
    cell = gatedrnn.RNNCell(3, 4, nonlinearity="sigmoid")
    with pytest.raises(RuntimeError, match="Unknown nonlinearity"):
        cell(torch.randn(2, 3))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("h_layers,c_layers", [(2, 1), (1, 2), (2, 2)])
def test_packed_lstm_state_is_checked_where_torch_reads_out_of_bounds(engine, h_layers, c_layers):
    """torch.nn.LSTM checks no state of a packed call: with c_0 of fewer layers its op reads out of
    bounds and the process dies (torch 2.13). gatedrnn raises RuntimeError on every engine."""
    m = gatedrnn.LSTM(3, 4, num_layers=2, engine=engine)
    x = pack_padded_sequence(torch.randn(5, 3, 3), torch.tensor([5, 3, 2]))
    hx = (torch.zeros(h_layers, 3, 4), torch.zeros(c_layers, 3, 4))
    if h_layers == c_layers == 2:
        assert m(x, hx)[0].data.shape == (10, 4)
    else:
        with pytest.raises(RuntimeError, match="Expected hidden"):
            m(x, hx)
