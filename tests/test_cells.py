"""The equations in cells.py and the cell modules, against torch.nn's cells and by hand."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.cells import CellOptions, gru_cell, lstm_cell

PAIRS = [(gatedrnn.LSTMCell, torch.nn.LSTMCell, {}), (gatedrnn.GRUCell, torch.nn.GRUCell, {}),
         (gatedrnn.RNNCell, torch.nn.RNNCell, {}),
         (gatedrnn.RNNCell, torch.nn.RNNCell, {"nonlinearity": "relu"})]


@settings(max_examples=30, deadline=None)
@given(pair=st.sampled_from(PAIRS), B=st.integers(0, 4), I=st.integers(1, 5), H=st.integers(1, 6),
       bias=st.booleans(), unbatched=st.booleans(), give_hx=st.booleans(), seed=st.integers(0, 999))
def test_cell_modules_match_torch(pair, B, I, H, bias, unbatched, give_hx, seed) -> None:  # noqa: E741
    ours_cls, ref_cls, kw = pair
    ours = ours_cls(I, H, bias=bias, dtype=torch.float64, **kw)
    ref = ref_cls(I, H, bias=bias, dtype=torch.float64, **kw)
    ref.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(seed)
    shape = (H,) if unbatched else (B, H)
    x = torch.randn((I,) if unbatched else (B, I), generator=g, dtype=torch.float64)
    hx = None
    if give_hx:
        hx = torch.randn(shape, generator=g, dtype=torch.float64)
        if ours_cls is gatedrnn.LSTMCell:
            hx = (hx, torch.randn(shape, generator=g, dtype=torch.float64))
    a, b = ours(x, hx), ref(x, hx)
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert torch.allclose(u, v, atol=1e-12)


def test_lstm_equations_by_hand() -> None:
    """One step written out scalar by scalar, with peepholes, against lstm_cell."""
    torch.manual_seed(0)
    H, I = 2, 3
    f64 = torch.float64
    w = {"w_ih": torch.randn(4 * H, I, dtype=f64), "w_hh": torch.randn(4 * H, H, dtype=f64),
         "b_ih": torch.randn(4 * H, dtype=f64), "peephole": torch.randn(3, H, dtype=f64)}
    x, h, c = (torch.randn(1, n, dtype=torch.float64) for n in (I, H, H))
    (h1, c1), _ = lstm_cell(x, (h, c), w, CellOptions("lstm"))
    a = w["w_ih"] @ x[0] + w["w_hh"] @ h[0] + w["b_ih"]
    s = torch.sigmoid
    i = s(a[:H] + w["peephole"][0] * c[0])
    f = s(a[H:2 * H] + w["peephole"][1] * c[0])
    g = torch.tanh(a[2 * H:3 * H])
    c_new = f * c[0] + i * g
    o = s(a[3 * H:] + w["peephole"][2] * c_new)
    assert torch.allclose(c1[0], c_new) and torch.allclose(h1[0], o * torch.tanh(c_new))


def test_gru_forms_differ_only_in_where_reset_acts() -> None:
    """With r = 1 both forms coincide; in general they differ (b_hn sits inside r ⊙ (...))."""
    torch.manual_seed(0)
    H, I = 3, 2
    w = {"w_ih": torch.randn(3 * H, I), "w_hh": torch.randn(3 * H, H), "b_hh": torch.randn(3 * H)}
    x, h = torch.randn(4, I), torch.randn(4, H)
    after = gru_cell(x, (h,), w, CellOptions("gru", reset_after=True))[0][0]
    before = gru_cell(x, (h,), w, CellOptions("gru", reset_after=False))[0][0]
    assert not torch.allclose(after, before)
    w["b_ih"] = torch.cat([torch.full((H,), 50.0), torch.zeros(2 * H)])  # saturate r to 1
    after = gru_cell(x, (h,), w, CellOptions("gru", reset_after=True))[0][0]
    before = gru_cell(x, (h,), w, CellOptions("gru", reset_after=False))[0][0]
    assert torch.allclose(after, before, atol=1e-6)


@pytest.mark.parametrize("name", ["gatedrnn.cells", "gatedrnn.modules", "gatedrnn.cell_modules",
                                  "gatedrnn.init"])
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@settings(max_examples=30, deadline=None)
@given(pair=st.sampled_from(PAIRS), B=st.integers(1, 4), I=st.integers(1, 5), H=st.integers(1, 9),
       bias=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 999))
def test_fused_streaming_step_matches_torch(pair, B, I, H, bias, dtype, seed) -> None:  # noqa: E741
    """Under no_grad the cells take the numba step; it must equal torch.nn's cell."""
    ours_cls, ref_cls, kw = pair
    ours = ours_cls(I, H, bias=bias, dtype=dtype, engine="fused", **kw)
    ref = ref_cls(I, H, bias=bias, dtype=dtype, **kw)
    ref.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, I, generator=g, dtype=dtype)
    hx = torch.randn(B, H, generator=g, dtype=dtype)
    if ours_cls is gatedrnn.LSTMCell:
        hx = (hx, torch.randn(B, H, generator=g, dtype=dtype))
    with torch.no_grad():
        a, b = ours(x, hx), ref(x, hx)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert torch.allclose(u, v, atol=tol), (u - v).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_step_cho_gru_matches_reference(dtype) -> None:
    torch.manual_seed(0)
    cell = gatedrnn.GRUCell(3, 5, dtype=dtype, reset_after=False)
    x, h = torch.randn(4, 3, dtype=dtype), torch.randn(4, 5, dtype=dtype)
    expected = cell(x, h)  # grad enabled: the reference equations
    with torch.no_grad():
        got = cell(x, h)
    assert torch.allclose(got, expected.detach(), atol=1e-12 if dtype == torch.float64 else 2e-6)


def test_fused_step_sees_updated_weights() -> None:
    cell = gatedrnn.LSTMCell(3, 4)
    x = torch.randn(2, 3)
    with torch.no_grad():
        before = cell(x)[0]
        cell.weight_ih.mul_(2.0)  # in place: the cached numpy view must notice
        after = cell(x)[0]
        cell.weight_hh = torch.nn.Parameter(torch.zeros(16, 4))  # replaced: likewise
        replaced = cell(x)[0]
    ref = torch.nn.LSTMCell(3, 4)
    ref.load_state_dict(cell.state_dict())
    with torch.no_grad():
        assert not torch.equal(before, after)
        assert torch.allclose(replaced, ref(x)[0], atol=2e-6)
