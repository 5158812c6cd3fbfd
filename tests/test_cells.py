"""The equations in cells.py and the cell modules, against torch.nn's cells and by hand."""

from __future__ import annotations

import doctest
import importlib
import warnings
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.equations.cells import CellOptions, gru_cell, lstm_cell

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


@pytest.mark.parametrize("name", ["gatedrnn.equations.cells", "gatedrnn.modules.lstm_gru_rnn",
                                  "gatedrnn.modules.rnn_cells", "gatedrnn.modules.init"])
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@settings(max_examples=30, deadline=None)
@given(pair=st.sampled_from(PAIRS), B=st.integers(1, 4), I=st.integers(1, 5), H=st.integers(1, 9),
       bias=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64]), seed=st.integers(0, 999))
def test_fused_streaming_step_matches_torch(pair, B, I, H, bias, dtype, seed) -> None:  # noqa: E741
    """Under no_grad the cells take the numba step (the reference step would fail loudly); it
    must equal torch.nn's cell."""
    ours_cls, ref_cls, kw = pair
    ours = ours_cls(I, H, bias=bias, dtype=dtype, engine="fused", **kw)
    ref = ref_cls(I, H, bias=bias, dtype=dtype, **kw)
    ref.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, I, generator=g, dtype=dtype)
    hx = torch.randn(B, H, generator=g, dtype=dtype)
    if ours_cls is gatedrnn.LSTMCell:
        hx = (hx, torch.randn(B, H, generator=g, dtype=dtype))
    with torch.no_grad(), mock.patch.object(ours, "_reference_step", None):
        a = ours(x, hx)
    with torch.no_grad():
        b = ref(x, hx)
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
        cell.weight_ih.mul_(2.0)  # in place: the next step must see it
        after = cell(x)[0]
        cell.weight_hh = torch.nn.Parameter(torch.zeros(16, 4))  # replaced: likewise
        replaced = cell(x)[0]
    ref = torch.nn.LSTMCell(3, 4)
    ref.load_state_dict(cell.state_dict())
    with torch.no_grad():
        assert not torch.equal(before, after)
        assert torch.allclose(replaced, ref(x)[0], atol=2e-6)


# --- variants on the cells ----------------------------------------------------------------------

CELL_VARIANTS = [
    (gatedrnn.LSTMCell, gatedrnn.LSTM, {"layer_norm": True}),
    (gatedrnn.LSTMCell, gatedrnn.LSTM, {"peephole": True}),
    (gatedrnn.LSTMCell, gatedrnn.LSTM, {"layer_norm": True, "peephole": True}),
    (gatedrnn.GRUCell, gatedrnn.GRU, {"layer_norm": True}),
    (gatedrnn.GRUCell, gatedrnn.GRU, {"reset_after": False}),
]


@pytest.mark.parametrize("cell_cls,module_cls,kw", CELL_VARIANTS)
def test_variant_cell_is_one_step_of_the_module(cell_cls, module_cls, kw) -> None:
    """A cell with a variant equals one step of the module with it (same parameters, _l0 removed)."""
    torch.manual_seed(0)
    f64 = torch.float64
    cell = cell_cls(3, 4, dtype=f64, **kw)
    module = module_cls(3, 4, dtype=f64, engine="reference", **kw)
    for p in cell.parameters():  # perturb the LN gains and biases away from 1 and 0
        p.data.add_(0.1 * torch.randn_like(p))
    module.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
    x = torch.randn(5, 3, dtype=f64)
    h = torch.randn(5, 4, dtype=f64)
    hx = (h, torch.randn(5, 4, dtype=f64)) if cell_cls is gatedrnn.LSTMCell else h
    out = cell(x, hx)
    _, state = module(x[None], tuple(s[None] for s in hx) if isinstance(hx, tuple) else hx[None])
    for a, b in zip(out if isinstance(out, tuple) else (out,),
                    state if isinstance(state, tuple) else (state,)):
        assert torch.allclose(a, b[0], atol=1e-12)
    args = (x.requires_grad_(), *(hx if isinstance(hx, tuple) else (hx,)))
    assert torch.autograd.gradcheck(lambda x, *s: cell(x, s if len(s) == 2 else s[0]), args)


@pytest.mark.parametrize("cls,kw", [(gatedrnn.LSTMCell, {"zoneout": 0.3, "zoneout_cell": 0.6}),
                                    (gatedrnn.GRUCell, {"zoneout": 0.3})])
def test_cell_zoneout_fresh_mask_in_training_expectation_in_eval(cls, kw) -> None:
    torch.manual_seed(0)
    cell = cls(3, 200, **kw)
    plain = cls(3, 200)
    plain.load_state_dict(cell.state_dict())
    x = torch.randn(50, 3)
    lstm = cls is gatedrnn.LSTMCell
    hx = (torch.randn(50, 200), torch.randn(50, 200)) if lstm else torch.randn(50, 200)
    olds = hx if lstm else (hx,)
    with torch.no_grad():
        news = plain(x, hx)
        news = news if lstm else (news,)
        masks = []
        for _ in range(2):
            got = cell(x, hx)
            got = got if lstm else (got,)
            keeps = []
            for g, old, new, p in zip(got, olds, news, (kw["zoneout"], kw.get("zoneout_cell"))):
                keep = torch.isclose(g, old, atol=1e-7)
                assert torch.all(keep | torch.isclose(g, new, atol=1e-7))  # each unit: old or new
                assert abs(keep.float().mean().item() - p) < 0.02  # the rate
                keeps.append(keep)
            masks.append(keeps[0])
        assert not torch.equal(masks[0], masks[1])  # a fresh mask per call
        cell.eval()
        got = cell(x, hx)
        for g, old, new, p in zip(got if lstm else (got,), olds, news,
                                  (kw["zoneout"], kw.get("zoneout_cell"))):
            assert torch.allclose(g, p * old + (1 - p) * new, atol=1e-6)


def test_cell_initialisation_options() -> None:
    H = 6
    cell = gatedrnn.LSTMCell(3, H, forget_bias=1.0)
    assert torch.allclose((cell.bias_ih + cell.bias_hh)[H:2 * H], torch.ones(H))
    cell = gatedrnn.LSTMCell(3, H, init="chrono", chrono_max_len=50)
    b = cell.bias_ih + cell.bias_hh
    assert torch.all((b[H:2 * H] >= 0) & (b[H:2 * H] <= torch.log(torch.tensor(49.0))))
    assert torch.allclose(b[:H], -b[H:2 * H])
    gru = gatedrnn.GRUCell(3, H, init="orthogonal")
    w = gru.weight_hh[:H].detach()
    assert torch.allclose(w @ w.T, torch.eye(H), atol=1e-5)
    with pytest.raises(TypeError, match="LSTM only"):
        gatedrnn.GRUCell(3, H, peephole=True)
    with pytest.raises(ValueError, match="reset_after"):
        gatedrnn.GRUCell(3, H, layer_norm=True, reset_after=False)
    with pytest.raises(ValueError, match="zoneout"):
        gatedrnn.LSTMCell(3, H, zoneout=1.0)


# --- the streaming path (streaming.cell_call reads tensors by address) ----------------------------


def _torch_twin(cell: torch.nn.Module) -> torch.nn.Module:
    kind = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn_tanh": torch.nn.RNNCell}[cell.cell_mode]
    ref = kind(cell.input_size, cell.hidden_size, dtype=cell.weight_ih.dtype)
    ref.load_state_dict(cell.state_dict())
    return ref


@pytest.mark.parametrize("cls", [gatedrnn.LSTMCell, gatedrnn.GRUCell, gatedrnn.RNNCell])
def test_streaming_step_follows_dtype_and_layout_changes(cls) -> None:
    """What a cache of the weights would get wrong: .double() keeps the parameters' identity and
    version, and .data = (a strided view) keeps the address; each call must see the change."""
    torch.manual_seed(0)
    cell = cls(3, 4)
    x, h = torch.randn(2, 3), torch.randn(2, 4)
    hx = (h, torch.randn(2, 4)) if cls is gatedrnn.LSTMCell else h
    with torch.no_grad():
        cell(x, hx)  # a first float32 call
        cell.double()
        x64 = x.double()
        hx64 = tuple(t.double() for t in hx) if isinstance(hx, tuple) else hx.double()
        got, want = cell(x64, hx64), _torch_twin(cell)(x64, hx64)
        for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
            assert a.dtype == torch.float64 and torch.allclose(a, b, atol=1e-12)
        cell.float()
        w = cell.weight_hh.data
        cell.weight_hh.data = w.t().contiguous().t()  # same values, column-major
        assert not cell.weight_hh.is_contiguous()
        got, want = cell(x, hx), _torch_twin(cell)(x, hx)
        for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
            assert torch.allclose(a, b, atol=2e-6)


@pytest.mark.parametrize("module", [False, True], ids=["cell", "one-step module"])
def test_streaming_step_is_visible_to_tracing(module: bool) -> None:
    """torch.jit.trace (and so the TorchScript ONNX exporter) must record torch ops: a trace of
    the numba step would replay the traced call's numbers for any input."""
    torch.manual_seed(0)
    net = gatedrnn.GRU(3, 4) if module else gatedrnn.GRUCell(3, 4)
    shapes = ((1, 2, 3), (1, 2, 4)) if module else ((2, 3), (2, 4))

    class State(torch.nn.Module):  # the new state only: h' of the cell, h_n of the module
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            out = self.net(x, h)
            return out[1] if module else out

    run = State()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the shape checks, as in torch.nn
        traced = torch.jit.trace(run, tuple(torch.randn(s) for s in shapes), check_trace=False)
        args = tuple(torch.randn(s) for s in shapes)
        assert torch.allclose(traced(*args), run(*args), atol=1e-6)
