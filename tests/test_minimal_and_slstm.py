"""MinGRU, MinLSTM and SLSTM against an independent implementation of their papers' equations.

The oracle below is written from the issue's text, not from ``gatedrnn.equations.cells``: one sequence at a
time (so packing, sorting and batch-first are all the module's business), scalar-free vector
ops on 1-D tensors, the parameters read by their public names, the head-wise product as an
explicit loop over heads. Every engine must give its outputs, final states and gradients in
float64 to 1e-9 over random configurations.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gatedrnn
from oracle_check import assert_like_oracle, run_form

DT = torch.float64
TOL = 1e-9
CLASSES = {"mingru": gatedrnn.MinGRU, "minlstm": gatedrnn.MinLSTM, "slstm": gatedrnn.SLSTM}


def _sig(v):
    return 1.0 / (1.0 + torch.exp(-v))


def _g(v):  # the paper's positive activation: v + 0.5 for v >= 0, σ(v) otherwise
    return torch.where(v >= 0, v + 0.5, _sig(v))


def _oracle_step(kind, p, x, state, H, num_heads):
    """One step for one sequence: x (I,), state a list of (H,) vectors; p the parameter dict of
    one layer and direction, keyed 'weight_ih', 'bias_ih', ... ."""
    pre = p["weight_ih"] @ x
    if "bias_ih" in p:
        pre = pre + p["bias_ih"]
    if kind == "mingru":
        (h,) = state
        z, cand = _sig(pre[:H]), _g(pre[H:])
        return [(1 - z) * h + z * cand]
    if kind == "minlstm":
        (h,) = state
        f, i, cand = _sig(pre[:H]), _sig(pre[H:2 * H]), _g(pre[2 * H:])
        return [f / (f + i) * h + i / (f + i) * cand]
    h, c, n, m = state
    w_hh = p["weight_hh"]
    if num_heads == 1:
        rec = w_hh @ h
    else:
        d = H // num_heads
        parts = [[None] * num_heads for _ in range(4)]
        for j in range(num_heads):
            out_j = w_hh[j] @ h[j * d:(j + 1) * d]  # (4d,): gates i|f|z|o of units j·d …
            for gate in range(4):
                parts[gate][j] = out_j[gate * d:(gate + 1) * d]
        rec = torch.cat([torch.cat(parts[gate]) for gate in range(4)])
    pre = pre + rec
    if "bias_hh" in p:
        pre = pre + p["bias_hh"]
    ii, ff, zz, oo = pre[:H], pre[H:2 * H], pre[2 * H:3 * H], pre[3 * H:]
    log_sig_f = -torch.log1p(torch.exp(-ff))
    m_new = torch.max(log_sig_f + m, ii)
    i = torch.exp(ii - m_new)
    f = torch.exp(log_sig_f + m - m_new)
    c_new = f * c + i * torch.tanh(zz)
    n_new = f * n + i
    return [_sig(oo) * c_new / n_new, c_new, n_new, m_new]


def oracle(module, kind, seq, init):
    """Run one sequence seq (T, I) through the network; init[k] the state list of layer·dir k.
    Returns (output (T, D·H), final states: one list of vectors per layer·direction)."""
    H, D = module.hidden_size, 2 if module.bidirectional else 1
    params = dict(module.named_parameters())
    layer_in, finals = seq, []
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            p = {k[:-len(sfx)]: v for k, v in params.items() if k.endswith(sfx)}
            state = list(init[layer * D + d])
            ys = [None] * seq.shape[0]
            for t in (reversed(range(seq.shape[0])) if d else range(seq.shape[0])):
                state = _oracle_step(kind, p, layer_in[t], state, H, module.num_heads)
                ys[t] = state[0]
            outs.append(torch.stack(ys))
            finals.append(state)
        layer_in = torch.cat(outs, dim=-1)
    return layer_in, finals


def _zero_state(kind, H, LD):
    return [[torch.zeros(H, dtype=DT) for _ in range(4 if kind == "slstm" else 1)]
            for _ in range(LD)]


@st.composite
def configs(draw):
    kind = draw(st.sampled_from(sorted(CLASSES)))
    engines = ["reference", "fused"] + ([] if kind == "slstm" else ["scan"])
    heads = draw(st.sampled_from([1, 2])) if kind == "slstm" else 1
    return dict(
        kind=kind, engine=draw(st.sampled_from(engines)), num_heads=heads,
        H=heads * draw(st.integers(1, 3)), I=draw(st.integers(1, 3)),
        layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()), bias=draw(st.booleans()),
        form=draw(st.sampled_from(["padded", "packed", "unbatched"])),
        with_state=draw(st.booleans()),
        lengths=draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)),
        seed=draw(st.integers(0, 2**16)),
    )


def _build(cfg):
    kw = {"num_heads": cfg["num_heads"]} if cfg["kind"] == "slstm" else {}
    return CLASSES[cfg["kind"]](cfg["I"], cfg["H"], num_layers=cfg["layers"], bias=cfg["bias"],
                                batch_first=cfg["batch_first"],
                                bidirectional=cfg["bidirectional"], engine=cfg["engine"],
                                dtype=DT, **kw)


@settings(max_examples=60)
@given(configs())
def test_modules_match_the_independent_equations(cfg):
    """Outputs, final states and every gradient, per sequence, on every engine and layout."""
    torch.manual_seed(cfg["seed"])
    kind, H = cfg["kind"], cfg["H"]
    module = _build(cfg)
    D = 2 if cfg["bidirectional"] else 1
    LD, nstate = cfg["layers"] * D, 4 if kind == "slstm" else 1
    lengths = cfg["lengths"] if cfg["form"] != "unbatched" else cfg["lengths"][:1]
    if cfg["form"] == "padded":
        lengths = [max(lengths)] * len(lengths)
    B = len(lengths)
    seqs = [torch.randn(L, cfg["I"], dtype=DT, requires_grad=True) for L in lengths]
    hx = None
    if cfg["with_state"]:
        parts = [torch.randn(LD, B, H, dtype=DT) for _ in range(nstate)]
        if kind == "slstm":  # a normaliser state is positive in any real run
            parts[2] = parts[2].abs() + 0.5
        parts = [q.requires_grad_() for q in parts]
        hx = parts[0] if nstate == 1 else tuple(parts)

    out, state = run_form(module, seqs, hx, cfg["form"], cfg["batch_first"], nstate)
    inits = [_zero_state(kind, H, LD) if hx is None else
             [[parts_k[k, b] for parts_k in ([hx] if nstate == 1 else hx)] for k in range(LD)]
             for b in range(B)]
    assert_like_oracle(out, state, lengths, inits,
                       lambda b, init: oracle(module, kind, seqs[b], init),
                       list(module.parameters()) + seqs + ([] if hx is None else parts), TOL,
                       allow_unused=True)
