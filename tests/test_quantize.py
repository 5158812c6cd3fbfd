"""int8 inference: the scheme, the reference engine against an independent int8 implementation, the
fast engine against the reference, quantized modules against float32, the input forms, and errors.

Save/load, dequantize, torch.ao and streaming are in tests/test_quantize_io.py.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_sequence

import gatedrnn
from gatedrnn.engines import stack
from gatedrnn.equations import quantized
from gatedrnn.equations.cells import CellOptions

# --- the scheme -------------------------------------------------------------------------------


@given(st.integers(1, 6), st.integers(1, 40), st.floats(1e-3, 1e3), st.integers(0, 2**31 - 1))
def test_quantize_rows_is_symmetric_per_row(R: int, C: int, scale: float, seed: int) -> None:
    W = torch.randn(R, C, generator=torch.Generator().manual_seed(seed)) * scale
    W[0] = 0  # a row of zeros gets scale 1 and zeros
    q, s = quantized.quantize_rows(W)
    assert q.dtype == torch.int8 and s.dtype == torch.float32 and s.shape == (R,)
    assert s[0] == 1 and not q[0].any()
    assert (q[1:].abs().amax(dim=1) == 127).all()  # the largest entry of each row maps to ±127
    assert ((quantized.dequantize_rows(q, s) - W).abs() <= s[:, None] / 2 * (1 + 1e-5)).all()
    q_neg, s_neg = quantized.quantize_rows(-W)
    assert torch.equal(q_neg, -q) and torch.equal(s_neg, s)


# --- the reference engine against the scheme written out independently -----------------------


def _rows(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = v.abs().amax(dim=-1) / 127
    s = torch.where(s > 0, s, torch.ones_like(s))
    return torch.round(v / s[:, None]).clamp(-127, 127).long(), s


def _product(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """v @ W.T by the scheme: both quantized per row, integer sums in int64, then float32."""
    v_q, v_s = _rows(v)
    w_q, w_s = _rows(w)
    return (v_q @ w_q.T).float() * v_s[:, None] * w_s


def _independent(mode: str, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w: dict,
                 sizes: list[int], reverse: bool, reset_after: bool) -> torch.Tensor:
    """One layer and direction of LSTM (with projection) / GRU (both forms) / RNN, in int8."""
    T, B = x.shape[:2]
    y = torch.zeros(T, B, h.shape[1])
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        n = sizes[t]
        u = _product(x[t, :n], w["w_ih"]) + w["b_ih"]
        if mode == "lstm":
            a = u + _product(h[:n], w["w_hh"]) + w["b_hh"]
            i, f, g, o = a.chunk(4, dim=1)
            c_new = torch.sigmoid(f) * c[:n] + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            if w["w_hr"] is not None:
                h_new = _product(h_new, w["w_hr"])
            c = torch.cat([c_new, c[n:]])
        elif mode == "gru":
            H = h.shape[1]
            u_r, u_z, u_n = u.chunk(3, dim=1)
            if reset_after:
                v_r, v_z, v_n = (_product(h[:n], w["w_hh"]) + w["b_hh"]).chunk(3, dim=1)
                r, z = torch.sigmoid(u_r + v_r), torch.sigmoid(u_z + v_z)
                cand = torch.tanh(u_n + r * v_n)
            else:
                v_r, v_z = (_product(h[:n], w["w_hh"][: 2 * H]) + w["b_hh"][: 2 * H]).chunk(2, dim=1)
                r, z = torch.sigmoid(u_r + v_r), torch.sigmoid(u_z + v_z)
                cand = torch.tanh(u_n + _product(r * h[:n], w["w_hh"][2 * H:]) + w["b_hh"][2 * H:])
            h_new = (1 - z) * cand + z * h[:n]
        else:
            a = u + _product(h[:n], w["w_hh"]) + w["b_hh"]
            h_new = torch.tanh(a) if mode == "rnn_tanh" else torch.relu(a)
        h = torch.cat([h_new, h[n:]])
        y[t, :n] = h_new
    return y


CASES = st.tuples(st.sampled_from(["lstm", "lstm-proj", "gru", "gru-cho", "rnn_tanh", "rnn_relu"]),
                  st.integers(1, 6), st.integers(1, 4), st.integers(1, 9), st.integers(1, 12),
                  st.booleans(), st.booleans(), st.integers(0, 2**31 - 1))


def _layer(case: tuple) -> tuple:
    """A random layer of ``case``: its float weights, the int8 engines' dict, input, state, sizes."""
    name, T, B, I, H, packed, reverse, seed = case
    gen = torch.Generator().manual_seed(seed)
    mode = name.split("-")[0]
    G = {"lstm": 4, "gru": 3}.get(mode, 1)
    P = max(1, H // 2) if name == "lstm-proj" else 0
    r = lambda *s: torch.randn(*s, generator=gen) * 0.5  # noqa: E731
    w = {"w_ih": r(G * H, I), "w_hh": r(G * H, P or H), "b_ih": r(G * H), "b_hh": r(G * H),
         "w_hr": r(P, H) if P else None}
    lengths = sorted(torch.randint(1, T + 1, (B,), generator=gen).tolist(), reverse=True)
    lengths[0] = T
    sizes = [sum(n > t for n in lengths) for t in range(T)] if packed else [B] * T
    x = r(T, B, I)
    state = (r(B, P or H),) + ((r(B, H),) if mode == "lstm" else ())
    opts = CellOptions(mode, reset_after=name != "gru-cho")
    return mode, w, quantized.quantize_weights(w), x, state, sizes, packed, reverse, opts


@given(CASES)
def test_reference_engine_is_the_scheme(case: tuple) -> None:
    mode, w, wq, x, state, sizes, packed, reverse, opts = _layer(case)
    batch_sizes = torch.tensor(sizes) if packed else None
    y, _, _ = quantized.run(x, state, wq, batch_sizes, reverse, opts, {}, False)
    c = state[1] if mode == "lstm" else state[0]
    want = _independent(mode, x, state[0], c, w, sizes, reverse, opts.reset_after)
    # Same integer sums; float32 rounding in another order (measured ≤ 1.5e-6 over 300 layers).
    torch.testing.assert_close(y, want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not stack.has_engine("lstm", "int8"), reason="the int8 kernels do not import")
@given(CASES)
@settings(max_examples=40)
def test_fast_engine_matches_reference(case: tuple) -> None:
    mode, _, wq, x, state, sizes, packed, reverse, opts = _layer(case)
    batch_sizes = torch.tensor(sizes) if packed else None
    fast = stack.engine_run(mode, "int8")
    y, final, _ = fast(x, state, wq, batch_sizes, reverse, opts, {}, False)
    y_ref, final_ref, _ = quantized.run(x, state, wq, batch_sizes, reverse, opts, {}, False)
    # Identical integer sums; float32 gates in another order (measured ≤ 1e-6 over 300 layers).
    torch.testing.assert_close(y, y_ref, atol=5e-6, rtol=1e-5)
    for a, b in zip(final, final_ref):
        torch.testing.assert_close(a, b, atol=5e-6, rtol=1e-5)


# --- modules against float32 -----------------------------------------------------------------

MODULES = [("LSTM", {}), ("LSTM", {"proj_size": 2}), ("LSTM", {"peephole": True}),
           ("LSTM", {"num_heads": 2}), ("LSTM", {"zoneout": 0.2, "zoneout_cell": 0.1}),
           ("GRU", {}), ("GRU", {"reset_after": False}), ("GRU", {"num_heads": 2}),
           ("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("MinGRU", {}), ("MinLSTM", {}),
           ("SLSTM", {}), ("SLSTM", {"num_heads": 2})]


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


@given(st.sampled_from(MODULES), st.sampled_from([4, 8, 16]), st.integers(1, 12), st.integers(1, 2),
       st.booleans(), st.booleans(), st.integers(0, 2**31 - 1))
@settings(max_examples=40)
def test_module_against_float(spec: tuple, H: int, I: int, L: int, bi: bool, bias: bool,
                              seed: int) -> None:
    name, kw = spec
    torch.manual_seed(seed)
    m = getattr(gatedrnn, name)(I, H, num_layers=L, bidirectional=bi, bias=bias, **kw).eval()
    q = gatedrnn.quantize(m)
    x = torch.randn(8, 3, I)
    with torch.no_grad():
        y, y_q = m(x)[0], q(x)[0]
    # Measured over H in {4, 16, 32}, I in {1, 5, 16}, 1-2 layers, both directions, T = 9: at most
    # 0.033 of max(1, max |y|) (the tanh RNN); 0.06 leaves room for the examples drawn here.
    assert _err(y_q, y) < 0.06


@given(st.sampled_from(["LSTM", "GRU"]), st.sampled_from([8, 16]), st.integers(1, 8),
       st.integers(0, 2**31 - 1))
@settings(max_examples=20)
def test_layer_norm_against_float(name: str, H: int, I: int, seed: int) -> None:
    # Layer norm rescales each product to unit variance, so a small network with it is sensitive
    # to any change of its weights: 2 layers, bidirectional, H = 4 moved by up to 1.3 with the
    # int8 weights alone (float32 arithmetic). One layer and a short sequence stay within 0.05.
    torch.manual_seed(seed)
    m = getattr(gatedrnn, name)(I, H, layer_norm=True).eval()
    q = gatedrnn.quantize(m)
    x = torch.randn(4, 2, I)
    with torch.no_grad():
        assert _err(q(x)[0], m(x)[0]) < 0.08
    assert q.last_engine == "int8"  # (the variants' kernels, int8_variants)


@pytest.mark.parametrize("name, kw", [("LSTMCell", {}), ("GRUCell", {}), ("GRUCell", {"reset_after": False}),
                                      ("RNNCell", {"nonlinearity": "relu"}),
                                      ("LSTMCell", {"peephole": True, "zoneout": 0.1})])
def test_cells_against_float(name: str, kw: dict) -> None:
    torch.manual_seed(0)
    cell = getattr(gatedrnn, name)(6, 16, **kw).eval()
    q = gatedrnn.quantize(cell)
    x, h = torch.randn(3, 6), torch.randn(3, 16) * 0.5
    hx = (h, h) if name == "LSTMCell" else h
    with torch.no_grad():
        a, b = cell(x, hx), q(x, hx)
        unbatched = q(x[0], (h[0], h[0]) if name == "LSTMCell" else h[0])
    a, b, u = (t[0] if isinstance(t, tuple) else t for t in (a, b, unbatched))
    assert _err(b, a) < 0.02  # measured ≤ 0.009 over H in {4, 16, 32}, I in {1, 5, 16}
    torch.testing.assert_close(u, b[0])


# --- the input forms run what the plain form runs ---------------------------------------------


@pytest.mark.parametrize("name", ["LSTM", "GRU", "MinGRU"])
def test_packed_unbatched_batch_first(name: str) -> None:
    torch.manual_seed(0)
    q = gatedrnn.quantize(getattr(gatedrnn, name)(3, 8, num_layers=2, bidirectional=True))
    seqs = [torch.randn(n, 3) for n in (4, 6, 2)]
    out, state = q(pack_sequence(seqs, enforce_sorted=False))
    qb = gatedrnn.quantize(getattr(gatedrnn, name)(3, 8, num_layers=2, bidirectional=True,
                                                   batch_first=True))
    qb.load_state_dict(q.state_dict())
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(out)
    h_n = state[0] if isinstance(state, tuple) else state
    for b, s in enumerate(seqs):
        y, st_ = q(s)  # unbatched: (T, I)
        torch.testing.assert_close(padded[: len(s), b], y, atol=1e-6, rtol=0)
        h = st_[0] if isinstance(st_, tuple) else st_
        torch.testing.assert_close(h_n[:, b], h, atol=1e-6, rtol=0)
        torch.testing.assert_close(qb(s[None])[0][0], y, atol=1e-6, rtol=0)


# --- errors ---------------------------------------------------------------------------------


def test_errors() -> None:
    q = gatedrnn.quantize(gatedrnn.LSTM(3, 4))
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="float32"):
        q(x.double())
    with pytest.raises(ValueError, match="float32"):
        q(x.half())
    q.train()
    with pytest.raises(RuntimeError, match="inference only"):
        q(x)
    cell = gatedrnn.quantize(gatedrnn.GRUCell(3, 4)).train()
    with pytest.raises(RuntimeError, match="inference only"):
        cell(x[0])
    with pytest.raises(RuntimeError, match="input_size"):
        gatedrnn.quantize(gatedrnn.GRU(3, 4))(torch.randn(5, 2, 7))
    with pytest.raises(ValueError, match="qint8"):
        gatedrnn.quantize(gatedrnn.LSTM(3, 4), dtype=torch.float16)
    with pytest.raises(ValueError, match="cannot quantize"):
        gatedrnn.quantize(gatedrnn.LSTM(3, 4), modules={torch.nn.Conv1d})
    with pytest.raises(ValueError, match="engine"):
        gatedrnn.QuantizedLSTM(3, 4, engine="fused")
    # The int8 engines belong to the quantized modules: float modules refuse them.
    for make in (lambda: gatedrnn.LSTM(3, 4, engine="int8"), lambda: gatedrnn.GRUCell(3, 4, engine="int8"),
                 lambda: gatedrnn.MinGRU(3, 4, engine="int8-reference")):
        with pytest.raises(ValueError, match="engine"):
            make()


def test_float_modules_never_run_int8() -> None:
    for m in (gatedrnn.LSTM(3, 4), gatedrnn.GRU(3, 4, reset_after=False), gatedrnn.MinGRU(3, 4)):
        with torch.no_grad():
            m(torch.randn(5, 1, 3))
            m(torch.randn(40, 16, 3))
        assert m.last_engine is not None and "int8" not in m.last_engine


def test_state_and_gates() -> None:
    torch.manual_seed(0)
    q = gatedrnn.quantize(gatedrnn.LSTM(3, 6, proj_size=2, num_layers=2))
    x, hx = torch.randn(5, 2, 3), (torch.randn(2, 2, 2), torch.randn(2, 2, 6))
    y, (h_n, c_n) = q(x, hx)
    assert q.last_engine == "int8" or not stack.has_engine("lstm", "int8")
    y_g, _, gates = q(x, hx, return_gates=True)  # the fast kernels record nothing: the reference
    assert q.last_engine == "int8-reference" and gates["input"].shape == (2, 5, 2, 6)
    torch.testing.assert_close(y_g, y, atol=5e-6, rtol=1e-5)
    assert h_n.shape == (2, 2, 2) and c_n.shape == (2, 2, 6)
    with pytest.raises(RuntimeError, match="hidden"):
        q(x, (torch.randn(2, 2, 6), torch.randn(2, 2, 6)))
