"""``num_heads`` on LSTM and GRU: head-wise recurrence against an independent loop.

The oracle below is written from the issue's text, not from ``gatedrnn.equations.cells``: one sequence at a
time (packing, sorting, batch-first and unbatched input are the module's business), 1-D vector
ops, the parameters read by name from ``state_dict(keep_vars=True)`` (so autograd reaches them),
and the recurrent product as an explicit loop over heads and gates. Every engine must give its
outputs, final states and the gradients of every parameter, input and initial state to 1e-9 in
float64, over random configurations. The rest: errors, torch's machinery around the re-shaped
weight_hh, configs and files, num_heads = 1 being torch.nn bit for bit, and ONNX export.
"""

from __future__ import annotations

import copy
import io
import os
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from gatedrnn.engines import one_step
from oracle_check import assert_like_oracle, run_form

DT = torch.float64
TOL = 1e-9  # float64: the engines and the oracle differ by summation order only (~1e-15 seen)
CLASSES = {"LSTM": gatedrnn.LSTM, "GRU": gatedrnn.GRU}


def _sig(v):
    return 1.0 / (1.0 + torch.exp(-v))


def _rec(w_hh, h, gate, nh):
    """The recurrent input of one gate, (H,): dense rows gate·H … (gate+1)·H − 1 of W_hh (G·H, H)
    times h, or per head j the rows gate·d … of R_j (G·d, d) times h[j·d:(j+1)·d]."""
    H = h.shape[0]
    if w_hh.dim() == 2:
        return w_hh[gate * H:(gate + 1) * H] @ h
    d = H // nh
    return torch.cat([w_hh[j, gate * d:(gate + 1) * d] @ h[j * d:(j + 1) * d] for j in range(nh)])


def _bias(p, name, gate, H):
    b = p.get(name)
    return 0.0 if b is None else b[gate * H:(gate + 1) * H]


def _step(kind, p, x, state, H, nh, reset_after):
    """One step of one sequence: x (I,), state [h] or [h, c], each (H,)."""
    def pre(gate):  # W_ih x + b_ih of one gate
        return p["weight_ih"][gate * H:(gate + 1) * H] @ x + _bias(p, "bias_ih", gate, H)

    def rec(gate, v):  # W_hh v + b_hh of one gate
        return _rec(p["weight_hh"], v, gate, nh) + _bias(p, "bias_hh", gate, H)

    if kind == "LSTM":
        h, c = state
        i, f = _sig(pre(0) + rec(0, h)), _sig(pre(1) + rec(1, h))
        g, o = torch.tanh(pre(2) + rec(2, h)), _sig(pre(3) + rec(3, h))
        c_new = f * c + i * g
        return [o * torch.tanh(c_new), c_new]
    (h,) = state
    r, z = _sig(pre(0) + rec(0, h)), _sig(pre(1) + rec(1, h))
    n = torch.tanh(pre(2) + (r * rec(2, h) if reset_after else rec(2, r * h)))
    return [(1 - z) * n + z * h]


def oracle(module, seq, init):
    """One sequence seq (T, I) through the network; init[k] the state list of layer·direction k.
    Returns (output (T, D·H), the final state lists)."""
    kind, H, nh = module.mode, module.hidden_size, module.num_heads
    D = 2 if module.bidirectional else 1
    params = module.state_dict(keep_vars=True)
    layer_in, finals = seq, []
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            p = {k[:-len(sfx)]: v for k, v in params.items() if k.endswith(sfx)}
            state = list(init[layer * D + d])
            ys = [None] * seq.shape[0]
            for t in (reversed(range(seq.shape[0])) if d else range(seq.shape[0])):
                state = _step(kind, p, layer_in[t], state, H, nh, module.__dict__.get(
                    "reset_after", True))
                ys[t] = state[0]
            outs.append(torch.stack(ys))
            finals.append(state)
        layer_in = torch.cat(outs, dim=-1)
    return layer_in, finals


@st.composite
def configs(draw):
    kind = draw(st.sampled_from(sorted(CLASSES)))
    nh = draw(st.sampled_from([1, 2, 4]))
    return dict(
        kind=kind, num_heads=nh, H=nh * draw(st.integers(1, 3)), I=draw(st.integers(1, 3)),
        layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()), bias=draw(st.booleans()),
        reset_after=draw(st.booleans()) if kind == "GRU" else True,
        form=draw(st.sampled_from(["padded", "packed", "unbatched"])),
        with_state=draw(st.booleans()),
        lengths=draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)),
        seed=draw(st.integers(0, 2**16)),
    )


def _build(cfg, engine):
    kw = {} if cfg["kind"] == "LSTM" else {"reset_after": cfg["reset_after"]}
    return CLASSES[cfg["kind"]](cfg["I"], cfg["H"], num_layers=cfg["layers"], bias=cfg["bias"],
                                batch_first=cfg["batch_first"], bidirectional=cfg["bidirectional"],
                                engine=engine, dtype=DT, num_heads=cfg["num_heads"], **kw)


def check_against_oracle(cfg, engine):
    """Outputs, final states and every gradient, per sequence."""
    torch.manual_seed(cfg["seed"])
    module = _build(cfg, engine)
    H, D = cfg["H"], 2 if cfg["bidirectional"] else 1
    LD, nstate = cfg["layers"] * D, 2 if cfg["kind"] == "LSTM" else 1
    lengths = cfg["lengths"] if cfg["form"] != "unbatched" else cfg["lengths"][:1]
    if cfg["form"] == "padded":
        lengths = [max(lengths)] * len(lengths)
    B = len(lengths)
    seqs = [torch.randn(L, cfg["I"], dtype=DT, requires_grad=True) for L in lengths]
    parts, hx = [], None
    if cfg["with_state"]:
        parts = [torch.randn(LD, B, H, dtype=DT, requires_grad=True) for _ in range(nstate)]
        hx = parts[0] if nstate == 1 else tuple(parts)
    out, state = run_form(module, seqs, hx, cfg["form"], cfg["batch_first"], nstate)
    assert module.last_engine == engine
    inits = [[[torch.zeros(H, dtype=DT)] * nstate for _ in range(LD)] if hx is None else
             [[q[k, b] for q in parts] for k in range(LD)] for b in range(B)]
    assert_like_oracle(out, state, lengths, inits, lambda b, init: oracle(module, seqs[b], init),
                       list(module.parameters()) + seqs + parts, TOL)


@settings(max_examples=60)
@given(configs())
def test_reference_engine_matches_the_independent_equations(cfg):
    check_against_oracle(cfg, "reference")


@settings(max_examples=60)
@given(configs())
def test_fused_engine_matches_the_independent_equations(cfg):
    check_against_oracle(cfg, "fused")


# --- the module around the weight ------------------------------------------------------------------


def test_weight_hh_is_head_wise_and_torch_keeps_track_of_it():
    m = gatedrnn.GRU(3, 8, num_layers=2, bidirectional=True, num_heads=4)
    names = [n for n, _ in m.named_parameters()]
    assert names == [n for n, _ in torch.nn.GRU(3, 8, num_layers=2, bidirectional=True)
                     .named_parameters()]  # names and their order are torch.nn's
    for k, group in enumerate(m._all_weights):
        assert m.all_weights[k][1].shape == (4, 6, 2)
        assert getattr(m, group[1]).shape == (4, 6, 2)
    for which in (m, copy.deepcopy(m), pickle.loads(pickle.dumps(m)), m.double()):
        flat = dict(zip(which._flat_weights_names, which._flat_weights))
        assert all(flat[n] is getattr(which, n) for n in which._flat_weights_names)
        assert not which._weights_have_changed()
    assert m.weight_hh_l1_reverse.dtype == DT


def test_flatten_parameters_keeps_head_wise_weights_from_cudnn(monkeypatch):
    dense, heads = gatedrnn.LSTM(3, 8), gatedrnn.LSTM(3, 8, num_heads=2)
    calls = []
    monkeypatch.setattr(torch.nn.RNNBase, "flatten_parameters", lambda self: calls.append(self))
    dense.flatten_parameters()
    heads.flatten_parameters()
    heads.to(DT)  # (torch's _apply flattens too)
    assert calls == [dense]


def test_default_and_orthogonal_init_per_head():
    torch.manual_seed(0)
    m = gatedrnn.LSTM(5, 12, num_heads=3, dtype=DT)
    bound = 12 ** -0.5  # U(−1/√H, 1/√H) with the full H, as torch.nn
    assert 0.8 * bound < m.weight_hh_l0.abs().max() <= bound
    o = gatedrnn.LSTM(5, 12, num_heads=3, init="orthogonal", dtype=DT)
    eye = torch.eye(4, dtype=DT)
    for j in range(3):
        for g in range(4):
            block = o.weight_hh_l0[j, g * 4:(g + 1) * 4]  # (d, d)
            torch.testing.assert_close(block @ block.T, eye)
    assert not o.bias_ih_l0.any()
    fb = gatedrnn.GRU(5, 12, num_heads=2, forget_bias=1.5, dtype=DT)
    torch.testing.assert_close((fb.bias_ih_l0 + fb.bias_hh_l0)[12:24],
                               torch.full((12,), 1.5, dtype=DT))
    ch = gatedrnn.LSTM(5, 12, num_heads=2, init="chrono", chrono_max_len=10, dtype=DT)
    b_f = (ch.bias_ih_l0 + ch.bias_hh_l0)[12:24]
    assert (b_f >= 0).all() and (b_f <= torch.log(torch.tensor(9.0))).all()


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_one_head_is_torch_nn_bit_for_bit(kind):
    torch.manual_seed(3)
    ours = CLASSES[kind](4, 6, num_layers=2, bidirectional=True, num_heads=1, engine="native")
    torch.manual_seed(3)
    ref = getattr(torch.nn, kind)(4, 6, num_layers=2, bidirectional=True)
    for (n, p), (n_ref, p_ref) in zip(ours.named_parameters(), ref.named_parameters()):
        assert n == n_ref and torch.equal(p, p_ref)
    x = torch.randn(5, 3, 4)
    for a, b in zip(ours(x), ref(x)):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(u, v)
    assert "num_heads" not in repr(ours) and ours.get_config()["num_heads"] == 1


def test_state_dict_round_trip_and_a_dense_dict_does_not_fit():
    torch.manual_seed(0)
    a = gatedrnn.LSTM(3, 8, num_heads=2, engine="reference", dtype=DT)
    b = gatedrnn.LSTM(3, 8, num_heads=2, engine="reference", dtype=DT)
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 2, 3, dtype=DT)
    assert torch.equal(a(x)[0], b(x)[0])
    with pytest.raises(RuntimeError, match="weight_hh_l0"):
        gatedrnn.LSTM(3, 8, dtype=DT).load_state_dict(a.state_dict())


def test_config_and_file_round_trip(tmp_path):
    from gatedrnn.interop.io import load_model, save_model

    m = gatedrnn.GRU(3, 8, num_layers=2, reset_after=False, num_heads=4, engine="reference")
    assert repr(m) == "GRU(3, 8, num_layers=2, engine='reference', reset_after=False, num_heads=4)"
    again = gatedrnn.from_config(m.get_config())
    assert again.get_config() == m.get_config() and again.weight_hh_l1.shape == (4, 6, 2)
    path = tmp_path / "gru.safetensors"
    save_model(m, path)
    loaded = load_model(path)
    assert loaded.get_config() == m.get_config()
    x = torch.randn(5, 2, 3)
    assert torch.equal(loaded(x)[0], m(x)[0])
    assert "num_heads" not in gatedrnn.RNN(3, 4).get_config()


def test_a_config_from_before_the_option_loads_with_one_head():
    from gatedrnn.interop.io import check_config

    cfg = gatedrnn.LSTM(3, 4).get_config()
    del cfg["num_heads"]
    assert check_config("old file", cfg)["num_heads"] == 1


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -2, True, 2.0, "2", None])
def test_a_bad_num_heads_is_a_value_error(value):
    with pytest.raises(ValueError, match="num_heads must be a positive int"):
        gatedrnn.LSTM(3, 8, num_heads=value)


def test_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match=r"hidden_size \(6\) must be divisible by num_heads \(4\)"):
        gatedrnn.GRU(3, 6, num_heads=4)
    with pytest.raises(ValueError, match="num_heads=2 with proj_size=2"):
        gatedrnn.LSTM(3, 8, proj_size=2, num_heads=2)
    for cls in (gatedrnn.RNN, gatedrnn.LSTMCell, gatedrnn.GRUCell, gatedrnn.RNNCell):
        with pytest.raises(TypeError, match="unexpected keyword argument 'num_heads'"):
            cls(3, 8, num_heads=2)
    m = gatedrnn.LSTM(3, 8, num_heads=2, engine="native")
    with pytest.raises(ValueError, match=r"num_heads=2.*'auto', 'fused' or 'reference'"):
        m(torch.randn(4, 2, 3))


def test_auto_never_sends_heads_to_torch_ops():
    x = torch.randn(5, 32, 3, dtype=DT)  # float64 inference at B = 32: native for one head
    with torch.no_grad():
        assert gatedrnn.LSTM(3, 8, dtype=DT)._engine(x, False) == "native"
        assert gatedrnn.LSTM(3, 8, num_heads=2, dtype=DT)._engine(x, False) == "fused"
        assert gatedrnn.GRU(3, 8, num_heads=2, dtype=DT)._engine(x, False) == "fused"


def test_the_streaming_step_declines_heads():
    m = gatedrnn.GRU(3, 8, num_heads=2).eval()
    with torch.no_grad():
        assert one_step.module_call(m, torch.randn(1, 1, 3), torch.zeros(1, 1, 8)) is None


def test_one_streaming_step_with_heads_is_right():
    m = gatedrnn.LSTM(3, 8, num_layers=2, num_heads=2, engine="fused", dtype=DT).eval()
    x, hx = torch.randn(1, 2, 3, dtype=DT), (torch.randn(2, 2, 8, dtype=DT),) * 2
    with torch.no_grad():
        got = m(x, hx)
        m.engine = "reference"
        want = m(x, hx)
    torch.testing.assert_close(got[0], want[0], atol=TOL, rtol=TOL)


def test_torch_nn_conversion_refuses_heads():
    from gatedrnn.interop.torch_nn import from_torch, to_torch

    with pytest.raises(ValueError, match="num_heads=2.*no torch.nn equivalent"):
        to_torch(gatedrnn.LSTM(3, 8, num_heads=2))
    with pytest.raises(ValueError, match="num_heads"):
        from_torch(torch.nn.GRU(3, 8), num_heads=2)


@pytest.mark.slow  # (importing Keras takes seconds)
def test_keras_conversion_refuses_heads():
    os.environ.setdefault("KERAS_BACKEND", "torch")  # (as tests/test_interop_keras.py)
    keras_mod = pytest.importorskip("gatedrnn.interop.keras")
    with pytest.raises(ValueError, match="num_heads=2.*no Keras equivalent"):
        keras_mod.to_keras(gatedrnn.GRU(3, 8, num_heads=2))
    layer = pytest.importorskip("keras").layers.GRU(8)
    layer.build((None, None, 3))
    with pytest.raises(ValueError, match="num_heads=2.*recurrent kernel is dense"):
        keras_mod.from_keras(layer, num_heads=2)


# --- export ---------------------------------------------------------------------------------------


def test_the_torchscript_onnx_exporter_names_num_heads():
    m = gatedrnn.LSTM(3, 4, num_heads=2).eval()
    with pytest.raises(RuntimeError, match=r"num_heads=2.*dynamo=True"):
        torch.onnx.export(m, (torch.randn(5, 2, 3),), io.BytesIO(), dynamo=False)


@pytest.mark.slow
def test_torch_export_runs_the_head_wise_cells():
    m = gatedrnn.GRU(3, 4, num_heads=2, reset_after=False, engine="reference").eval()
    ep = torch.export.export(m, (torch.randn(6, 2, 3),))
    x = torch.randn(6, 2, 3)
    torch.testing.assert_close(ep.module()(x)[0], m(x)[0], atol=1e-6, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_dynamo_onnx_export_runs_on_onnxruntime_at_another_length(kind):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    m = CLASSES[kind](3, 4, num_layers=2, bidirectional=True, num_heads=2,
                      engine="reference").eval()
    buf = io.BytesIO()
    dyn = torch.export.Dim.DYNAMIC
    torch.onnx.export(m, (torch.randn(5, 2, 3),), buf, dynamo=True, input_names=["x"],
                      dynamic_shapes=({0: dyn, 1: dyn},), verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # two cores shared by everyone
    sess = ort.InferenceSession(buf.getvalue(), options)
    x = torch.randn(9, 3, 3)  # another length and batch size than traced
    got = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        y, state = m(x)
    want = [y, *state] if kind == "LSTM" else [y, state]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(torch.from_numpy(g), w, atol=1e-5, rtol=0)


@pytest.mark.parametrize("nh,G,d", [(1, 4, 3), (2, 3, 2), (4, 4, 1), (3, 2, 5)])
def test_the_export_form_of_the_head_wise_product_is_the_same_sum(monkeypatch, nh, G, d):
    from gatedrnn.equations.cells import headwise_product

    gen = torch.Generator().manual_seed(nh * 100 + G * 10 + d)
    h, w = torch.randn(5, nh * d, generator=gen, dtype=DT), torch.randn(nh, G * d, d, generator=gen,
                                                                       dtype=DT)
    eager = headwise_product(h, w)
    want = torch.stack([torch.cat([_rec(w, row, g, nh) for g in range(G)]) for row in h])
    torch.testing.assert_close(eager, want, atol=1e-12, rtol=1e-12)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    torch.testing.assert_close(headwise_product(h, w), eager, atol=1e-12, rtol=1e-12)


VARIANT_CASES = [
    ("LSTM", dict(layer_norm=True, peephole=True)),
    ("LSTM", dict(zoneout=0.2, zoneout_cell=0.1, recurrent_dropout=0.3, weight_drop=0.2)),
    ("GRU", dict(layer_norm=True, zoneout=0.2)),
    ("GRU", dict(reset_after=False, recurrent_dropout=0.3, weight_drop=0.2)),
]


@pytest.mark.parametrize("kind,opts", VARIANT_CASES, ids=[f"{k}-{sorted(o)}" for k, o in VARIANT_CASES])
def test_the_variants_run_with_heads_on_both_engines_alike(kind, opts):
    """Training mode, the same masks (the same seed before each call): fused equals reference."""
    results = []
    for engine in ("reference", "fused"):
        torch.manual_seed(0)
        m = CLASSES[kind](3, 8, num_layers=2, bidirectional=True, num_heads=4, engine=engine,
                          dtype=DT, **opts).train()
        x = torch.randn(6, 2, 3, dtype=DT, requires_grad=True)
        out, state = m(x)
        loss = out.pow(2).sum() + sum(s.sum() for s in (state if kind == "LSTM" else (state,)))
        results.append([out, *torch.autograd.grad(loss, [x, *m.parameters()])])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)
