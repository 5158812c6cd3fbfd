"""Adding a cell is its equations and one declaration: a toy cell (a gated leaky integrator) is
registered through ``gatedrnn.equations.kinds`` and runs through a module on the reference engine,
packed and bidirectional included, against a loop written here. And the six sequence classes
share one forward."""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pack_sequence

import gatedrnn
from gatedrnn.engines import stack
from gatedrnn.equations import kinds
from gatedrnn.modules import declared

DT = torch.float64


def leaky_cell(x, state, w):
    """h' = (1 − λ) ⊙ h + λ ⊙ tanh(a_c), λ = σ(a_λ), [a_λ | a_c] = W_ih x + b_ih + W_hh h + b_hh."""
    (h,) = state
    a = x @ w["w_ih"].T + h @ w["w_hh"].T
    for b in ("b_ih", "b_hh"):
        if w.get(b) is not None:
            a = a + w[b]
    a_leak, a_c = a.chunk(2, dim=-1)
    leak, candidate = torch.sigmoid(a_leak), torch.tanh(a_c)
    return ((1 - leak) * h + leak * candidate,), {"leak": leak, "candidate": candidate}


def _leaky_module(monkeypatch):
    monkeypatch.setitem(kinds.CELLS, "leaky", kinds.CellKind("leaky", leaky_cell, 2,
                                                             ("leak", "candidate")))

    class Leaky(declared.DeclaredRNN):
        kind = "leaky"

    monkeypatch.setitem(declared.CLASSES, "Leaky", Leaky)  # (restored: the class leaves with it)
    return Leaky


def _by_hand(m, x, layers, directions):
    """The network on one sequence x (T, I), as the equations say: y (T, D·H), h_n (L·D, H)."""
    finals = []
    for layer in range(layers):
        outs = []
        for d in range(directions):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w = {k: getattr(m, n + sfx) for k, n in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"),
                                                      ("b_ih", "bias_ih"), ("b_hh", "bias_hh"))}
            h = torch.zeros(1, m.hidden_size, dtype=DT)
            ys = [torch.empty(0)] * x.shape[0]
            for t in (reversed(range(x.shape[0])) if d else range(x.shape[0])):
                (h,), _ = leaky_cell(x[t:t + 1], (h,), w)
                ys[t] = h[0]
            outs.append(torch.stack(ys))
            finals.append(h[0])
        x = torch.cat(outs, dim=-1)
    return x, torch.stack(finals)


def test_a_declared_toy_cell_runs_through_a_module(monkeypatch) -> None:
    Leaky = _leaky_module(monkeypatch)
    torch.manual_seed(0)
    m = Leaky(3, 4, num_layers=2, bidirectional=True, dtype=DT)
    assert [n for n, _ in m.named_parameters()][:4] == [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert m.weight_ih_l1.shape == (8, 8) and m.weight_hh_l0.shape == (8, 4)
    seqs = [torch.randn(T, 3, dtype=DT) for T in (5, 3, 2)]
    out, h_n, gates = m(pack_sequence(seqs, enforce_sorted=False), return_gates=True)
    assert m.last_engine == "reference"  # the only engine it declares: auto falls back to it
    padded, lengths = torch.nn.utils.rnn.pad_packed_sequence(out)
    assert sorted(gates) == ["candidate", "leak"] and gates["leak"].shape == (4, 5, 3, 4)
    for i, x in enumerate(seqs):
        y, h = _by_hand(m, x, 2, 2)
        torch.testing.assert_close(padded[:lengths[i], i], y)
        torch.testing.assert_close(h_n[:, i], h)
    # the other input forms and the config round trip come with the house
    y, h = m(seqs[0])  # unbatched
    torch.testing.assert_close(y, _by_hand(m, seqs[0], 2, 2)[0])
    again = gatedrnn.from_config(m.get_config())
    assert type(again) is Leaky and again.get_config() == m.get_config()


def test_a_declared_toy_cell_streams_with_step(monkeypatch) -> None:
    Leaky = _leaky_module(monkeypatch)
    m = Leaky(3, 4, dtype=DT)
    x = torch.randn(6, 2, 3, dtype=DT)
    y, h = m(x)
    state = None
    for t in range(6):
        y_t, state = m.step(x[t], state)
    torch.testing.assert_close(y_t, y[-1])
    torch.testing.assert_close(state, h)


def test_engines_come_from_the_declaration(monkeypatch) -> None:
    assert stack.engine_run("lstm", "reference") is stack.engine_run("mingru", "reference")
    assert not stack.has_engine("slstm", "scan")
    monkeypatch.setitem(kinds.CELLS, "leaky", kinds.CellKind(
        "leaky", leaky_cell, 2, ("leak", "candidate"),
        engines={"reference": kinds.REFERENCE, "twice": "gatedrnn.equations.reference:run"}))
    assert stack.engine_run("leaky", "twice") is stack.engine_run("leaky", "reference")


def test_the_six_sequence_classes_share_one_forward() -> None:
    classes = (gatedrnn.LSTM, gatedrnn.GRU, gatedrnn.RNN, gatedrnn.MinGRU, gatedrnn.MinLSTM,
               gatedrnn.SLSTM)
    assert len({cls.forward for cls in classes}) == 1
    assert gatedrnn.MinGRU.forward is gatedrnn.LSTM.forward
