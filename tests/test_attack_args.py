"""What an attack on the landed code found in argument handling: a half input to float32 cells,
and constructor arguments torch.nn builds and its op refuses at the first call
(``bidirectional="no"``, ``num_layers=True``). Sizes torch.nn builds and runs (``LSTM(3, True)``)
build here too; tests/test_torch_args.py compares every constructor with torch.nn's at run time."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import gatedrnn
from gatedrnn.modules import checks

ENGINES = ("auto", "fused", "reference", "native")
CELLS = ("LSTMCell", "GRUCell", "RNNCell")
MODULES = ("LSTM", "GRU", "RNN")
NEWER = ("MinGRU", "MinLSTM", "SLSTM")
NOT_BOOL = ("no", "yes", None, 0, 1)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_half_input_to_float32_cell_raises_as_torch(name, engine, with_state, grad) -> None:
    """torch.nn raises RuntimeError (mat1 and mat2 dtypes); every engine now does, state or not
    (the fused engine used to return float16 when no state was passed)."""
    cell = getattr(gatedrnn, name)(4, 6, engine=engine)
    x = torch.randn(1, 4, dtype=torch.float16)
    hx = None
    if with_state:
        h = torch.zeros(1, 6)
        hx = (h, h) if name == "LSTMCell" else h
    with torch.set_grad_enabled(grad), pytest.raises(RuntimeError):
        getattr(torch.nn, name)(4, 6)(x, hx)
    with torch.set_grad_enabled(grad), pytest.raises(RuntimeError, match="dtype"):
        cell(x, hx)
    with torch.set_grad_enabled(grad), pytest.raises(RuntimeError, match="dtype"):
        cell(x[0], None if hx is None else (hx[0][0], hx[1][0]) if name == "LSTMCell" else hx[0])


def test_half_cells_still_run_in_half() -> None:
    cell = gatedrnn.GRUCell(4, 6, engine="fused").to(torch.bfloat16)
    with torch.no_grad():
        h = cell(torch.randn(2, 4, dtype=torch.bfloat16))
    assert h.dtype == torch.bfloat16 and cell.last_engine in ("fused-float32", "reference")


def _refused_when_built(name: str, **kw) -> bool:
    """TypeError when ``name(input_size=3, hidden_size=4, **kw)`` is built."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(gatedrnn, name)(**{"input_size": 3, "hidden_size": 4, **kw})
    except TypeError:
        return True
    return False


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("kw", [{"bidirectional": v} for v in NOT_BOOL] + [{"num_layers": True}])
def test_modules_refuse_what_torchs_op_refuses(name, engine, kw) -> None:
    """torch.nn builds these and its op raises TypeError at the first call; gatedrnn refuses them
    when built (checks.check_op_args, after torch's constructor), with the same class."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_module = getattr(torch.nn, name)(3, 4, **kw)
    with pytest.raises(TypeError):
        torch_module(torch.randn(5, 2, 3))
    assert _refused_when_built(name, engine=engine, **kw)


@pytest.mark.parametrize("name", MODULES + NEWER)
def test_bool_sizes_build_as_torch_nn_builds_them(name) -> None:
    """torch.nn.LSTM(3, True) builds and runs a hidden size of 1 (so do GRU and the newer modules,
    which follow torch.nn's rules); torch.nn.RNN refuses it in its constructor, with TypeError."""
    if name == "RNN":
        with pytest.raises(TypeError):
            torch.nn.RNN(3, True)
        assert _refused_when_built(name, hidden_size=True)
        return
    m = getattr(gatedrnn, name)(3, True)
    assert type(m.hidden_size) is int and m.hidden_size == 1
    assert m(torch.randn(5, 2, 3))[0].shape == (5, 2, 1)


@pytest.mark.parametrize("name", NEWER)
@pytest.mark.parametrize("value", NOT_BOOL)
def test_newer_modules_refuse_non_bool_bidirectional(name, value) -> None:
    assert _refused_when_built(name, bidirectional=value)


@pytest.mark.parametrize("name", NEWER)
def test_newer_modules_refuse_a_bool_layer_count(name) -> None:
    assert _refused_when_built(name, num_layers=True)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("kw", [{"hidden_size": True}, {"input_size": True}])
def test_cells_take_bool_sizes_as_torch_nn(name, kw) -> None:
    args = {"input_size": 3, "hidden_size": 4, **kw}
    ours, theirs = getattr(gatedrnn, name)(**args), getattr(torch.nn, name)(**args)
    assert (ours.input_size, ours.hidden_size) == (theirs.input_size, theirs.hidden_size)
    assert type(ours.input_size) is int and type(ours.hidden_size) is int
    with pytest.raises(TypeError):  # torch's constructor refuses a float size first
        getattr(gatedrnn, name)(3, 4.0)


def test_the_checks_themselves() -> None:
    checks.check_op_args("LSTM", 2, False)
    for value in NOT_BOOL:
        with pytest.raises(TypeError, match="bidirectional should be of type bool"):
            checks.check_op_args("LSTM", 1, value)
    for value in (True, 2.0, torch.tensor([2]), torch.tensor(2.0), torch.tensor(True), "2"):
        with pytest.raises(TypeError, match="num_layers should be of type int"):
            checks.check_op_args("LSTM", value, False)
    for value in (np.int64(2), torch.tensor(2)):
        checks.check_op_args("LSTM", value, False)
    with pytest.raises(TypeError, match="bidirectional"):
        checks.check_constructor("MinGRU", 3, 4, 1, True, False, 0.0, 0, "no")
    assert checks.check_constructor("MinGRU", True, 4, np.int64(2), True, False, 0, 0, True) == \
        (1, 4, 2, 0.0)
    with pytest.raises(TypeError, match="bidirectional"):
        checks.check_module(torch.nn.LSTM(3, 4, bidirectional="no"))
