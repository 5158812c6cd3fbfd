"""What an attack on the landed code found in argument handling: a half input to
float32 cells, and constructor arguments read by truthiness (``bidirectional="no"``) or taken as
ints when they are bools (``hidden_size=True``)."""

from __future__ import annotations

import warnings

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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(gatedrnn, name)(3, 4, **kw)
    except TypeError:
        return True
    return False


def _never_runs(name: str, engine: str, **kw) -> None:
    """TypeError when built, or at the call like torch.nn: never an output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            m = getattr(gatedrnn, name)(3, 4, engine=engine, **kw)
        except TypeError:
            return
    for grad in (False, True):
        with torch.set_grad_enabled(grad), pytest.raises(TypeError):
            m(torch.randn(5, 2, 3))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("kw", [{"bidirectional": v} for v in NOT_BOOL] + [{"num_layers": True},
                                                                           {"hidden_size": True}])
def test_modules_refuse_non_bool_bidirectional_and_bool_sizes(name, engine, kw) -> None:
    if engine == "reference" or (engine == "native" and "hidden_size" not in kw):
        _never_runs(name, engine, **kw)  # (already true at the call, without the call site)
    else:  # refused when built (checks.check_module, after torch's constructor)
        assert _refused_when_built(name, **kw)


@pytest.mark.parametrize("name", NEWER)
@pytest.mark.parametrize("value", NOT_BOOL)
def test_newer_modules_refuse_non_bool_bidirectional(name, value) -> None:
    assert _refused_when_built(name, bidirectional=value)


@pytest.mark.parametrize("name", NEWER)
def test_newer_modules_refuse_bool_sizes(name) -> None:
    assert _refused_when_built(name, num_layers=True)
    assert _refused_when_built(name, hidden_size=True)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("kw", [{"hidden_size": True}, {"input_size": True}, {"hidden_size": 4.0}])
def test_cells_refuse_bool_sizes_when_built(name, kw) -> None:
    args = {"input_size": 3, "hidden_size": 4, **kw}
    with pytest.raises(TypeError):  # (4.0: torch's constructor refuses it first)
        getattr(gatedrnn, name)(**args)


def test_the_checks_themselves() -> None:
    checks.check_sizes("LSTM", False, input_size=3, hidden_size=4)
    for value in NOT_BOOL:
        with pytest.raises(TypeError, match="bidirectional should be of type bool"):
            checks.check_sizes("LSTM", value)
    with pytest.raises(TypeError, match="num_layers should be of type int, got: bool"):
        checks.check_sizes("LSTM", num_layers=True)
    with pytest.raises(TypeError, match="bidirectional"):
        checks.check_constructor("MinGRU", 3, 4, 1, True, False, 0.0, 0, "no")
    checks.check_constructor("MinGRU", 3, 4, 1, True, False, 0.0, 0, True)
    with pytest.raises(TypeError, match="bidirectional"):
        checks.check_module(torch.nn.LSTM(3, 4, bidirectional="no"))
