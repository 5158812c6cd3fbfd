"""The variants through the modules: definitions, masks, initialisation, gate recording,
and the fused engine against the reference engine with the same masks."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import gatedrnn
from gatedrnn.engines.stack import StackSpec, draw_masks
from gatedrnn.equations.cells import CellOptions

OPTIONS = [
    ("LSTM", {}),
    ("LSTM", {"layer_norm": True}),
    ("LSTM", {"peephole": True}),
    ("LSTM", {"recurrent_dropout": 0.3}),
    ("LSTM", {"zoneout": 0.2, "zoneout_cell": 0.4}),
    ("LSTM", {"weight_drop": 0.5}),
    ("LSTM", {"layer_norm": True, "peephole": True, "zoneout": 0.1, "recurrent_dropout": 0.2,
              "weight_drop": 0.2, "proj_size": 3}),
    ("GRU", {}),
    ("GRU", {"reset_after": False}),
    ("GRU", {"layer_norm": True}),
    ("GRU", {"recurrent_dropout": 0.3}),
    ("GRU", {"recurrent_dropout": 0.3, "reset_after": False}),
    ("GRU", {"zoneout": 0.3}),
    ("GRU", {"weight_drop": 0.5}),
    ("GRU", {"layer_norm": True, "zoneout": 0.1, "recurrent_dropout": 0.2, "weight_drop": 0.2}),
]
CLASSES = {"LSTM": gatedrnn.LSTM, "GRU": gatedrnn.GRU}


def _forward_backward(m, x, hx, seed):
    torch.manual_seed(seed)
    out, state, gates = m(x, hx, return_gates=True)
    flat = [out.data if hasattr(out, "batch_sizes") else out]
    flat += list(state) if isinstance(state, tuple) else [state]
    g = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in flat)
    params = list(m.parameters())
    grads = torch.autograd.grad(loss, [x.data if hasattr(x, "batch_sizes") else x] + params,
                                allow_unused=True)
    return [t.detach() for t in flat] + [v.detach() for v in gates.values()] + \
        [torch.zeros(()) if g is None else g for g in grads]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind,opts", OPTIONS, ids=[f"{k}-{o}" for k, o in OPTIONS])
def test_fused_equals_reference_float64(kind, opts, training) -> None:
    """Same seed, same masks: the fused engine's outputs, gates and every gradient match."""
    results = []
    for engine in ("reference", "fused"):
        torch.manual_seed(0)
        m = CLASSES[kind](3, 5, num_layers=2, bidirectional=True, dtype=torch.float64,
                          engine=engine, **opts)
        m.train(training)
        g = torch.Generator().manual_seed(1)
        x = torch.randn(6, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
        results.append(_forward_backward(m, x, None, seed=7))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-10, rtol=1e-9), (a - b).abs().max()


def test_forget_bias_sets_the_total() -> None:
    m = gatedrnn.LSTM(4, 6, num_layers=2, bidirectional=True, forget_bias=1.0)
    for names in m._all_weights:
        total = getattr(m, names[2]) + getattr(m, names[3])
        assert torch.allclose(total[6:12], torch.ones(6))


def test_chrono_initialisation() -> None:
    T = 50
    m = gatedrnn.LSTM(2, 400, init="chrono", chrono_max_len=T)
    total = (m.bias_ih_l0 + m.bias_hh_l0).detach()
    b_i, b_f = total[:400], total[400:800]
    assert torch.all(b_f >= 0) and torch.all(b_f <= math.log(T - 1) + 1e-6)
    assert torch.allclose(b_i, -b_f)
    # log U(1, T-1): the mean of exp(b_f) is (1 + T - 1) / 2
    assert abs(b_f.exp().mean().item() - T / 2) < 3


def test_orthogonal_initialisation() -> None:
    m = gatedrnn.GRU(3, 8, init="orthogonal")
    for k in range(3):
        block = m.weight_hh_l0[8 * k:8 * (k + 1)].detach()
        assert torch.allclose(block @ block.T, torch.eye(8), atol=1e-5)


def test_layer_norm_parameters_are_named_and_initialised() -> None:
    m = gatedrnn.LSTM(3, 4, bidirectional=True, layer_norm=True, peephole=True)
    names = dict(m.named_parameters())
    for sfx in ("_l0", "_l0_reverse"):
        for which, size in (("x", 16), ("h", 16), ("c", 4)):
            assert torch.equal(names[f"layer_norm_{which}_weight{sfx}"], torch.ones(size))
            assert torch.equal(names[f"layer_norm_{which}_bias{sfx}"], torch.zeros(size))
        assert names[f"weight_peephole{sfx}"].shape == (3, 4)
    assert "layer_norm_c_weight_l0" not in dict(gatedrnn.GRU(3, 4, layer_norm=True).named_parameters())


def _masks(p_rec=0.0, zoneout=0.0, training=True, T=400, B=64, H=32):
    opts = CellOptions("lstm", zoneout=zoneout, zoneout_cell=zoneout, training=training)
    spec = StackSpec(1, 1, recurrent_dropout=p_rec, training=training)
    return draw_masks(opts, spec, T, B, H, H, torch.zeros(()))


def test_recurrent_dropout_mask_rate_and_scale() -> None:
    torch.manual_seed(0)
    m = _masks(p_rec=0.3)["recurrent"]
    assert m.shape == (64, 32)
    assert torch.all((m == 0) | torch.isclose(m, torch.tensor(1 / 0.7)))
    assert abs((m == 0).float().mean().item() - 0.3) < 0.03
    assert "recurrent" not in _masks(p_rec=0.3, training=False)


def test_recurrent_dropout_is_the_same_mask_at_every_step() -> None:
    """W_hh (m ⊙ h) = (W_hh diag m) h: a run with mask m equals a maskless run with scaled columns.
    This holds only if the one mask is used at every step."""
    for kind, opts in (("LSTM", {}), ("GRU", {}), ("GRU", {"reset_after": False})):
        torch.manual_seed(0)
        m = CLASSES[kind](3, 6, recurrent_dropout=0.4, dtype=torch.float64, engine="reference", **opts)
        x = torch.randn(9, 2, 3, dtype=torch.float64)
        torch.manual_seed(5)
        dropped = m(x)[0]
        torch.manual_seed(5)
        mask = torch.empty(2, 6, dtype=torch.float64).bernoulli_(0.6) / 0.6
        plain = CLASSES[kind](3, 6, dtype=torch.float64, **opts).eval()
        plain.load_state_dict(m.state_dict())
        assert mask.shape[0] == 2
        for b in range(2):  # the mask is per sequence, so scale columns row by row
            with torch.no_grad():
                plain.weight_hh_l0.copy_(m.weight_hh_l0 * mask[b])
            assert torch.allclose(plain(x[:, b:b + 1])[0], dropped[:, b:b + 1], atol=1e-12)


def test_zoneout_masks_are_fresh_every_step() -> None:
    torch.manual_seed(0)
    d = _masks(zoneout=0.25)["zoneout_h"]
    assert d.shape == (400, 64, 32)
    assert abs(d.mean().item() - 0.25) < 0.01
    # fresh per step: two consecutive steps agree where they would by chance, p^2 + (1-p)^2
    agree = (d[1:] == d[:-1]).float().mean().item()
    assert abs(agree - (0.25 ** 2 + 0.75 ** 2)) < 0.01
    assert _masks(zoneout=0.25, training=False)["zoneout_h"].dim() == 0


def test_zoneout_in_eval_is_the_expectation() -> None:
    torch.manual_seed(0)
    m = gatedrnn.GRU(3, 4, zoneout=0.3, dtype=torch.float64, engine="reference").eval()
    plain = gatedrnn.GRU(3, 4, dtype=torch.float64)
    plain.load_state_dict(m.state_dict())
    x = torch.randn(1, 2, 3, dtype=torch.float64)
    h0 = torch.randn(1, 2, 4, dtype=torch.float64)
    new = plain(x, h0)[1]
    assert torch.allclose(m(x, h0)[1], 0.3 * h0 + 0.7 * new)


def test_weight_drop_fresh_mask_per_call_and_rate() -> None:
    torch.manual_seed(0)
    m = gatedrnn.LSTM(8, 64, weight_drop=0.4)
    w1, w2 = m._weights(0)["w_hh"], m._weights(0)["w_hh"]
    assert abs((w1 == 0).float().mean().item() - 0.4) < 0.03
    assert not torch.equal(w1 == 0, w2 == 0)
    m.eval()
    assert m._weights(0)["w_hh"] is m.weight_hh_l0


@pytest.mark.parametrize("kind,opts", OPTIONS, ids=[f"{k}-{o}" for k, o in OPTIONS])
def test_eval_mode_is_deterministic(kind, opts) -> None:
    m = CLASSES[kind](3, 5, num_layers=2, dropout=0.3, **opts).eval()
    x = torch.randn(5, 2, 3)
    assert torch.equal(m(x)[0], m(x)[0])


def test_gate_recording_shapes_and_padding() -> None:
    torch.manual_seed(0)
    m = gatedrnn.LSTM(3, 5, num_layers=2, bidirectional=True)
    lengths = torch.tensor([2, 6, 4])
    x = pack_padded_sequence(torch.randn(6, 3, 3), lengths, enforce_sorted=False)
    out, (h, c), gates = m(x, return_gates=True)
    assert sorted(gates) == ["candidate", "cell", "forget", "input", "output"]
    for v in gates.values():
        assert v.shape == (4, 6, 3, 5)
    for b, n in enumerate(lengths.tolist()):
        assert torch.all(gates["forget"][:, n:, b] == 0)
        assert torch.all(gates["forget"][:, :n, b] > 0)
    # the forward direction's last recorded cell is c_n
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(gates["cell"][0, n - 1, b], c[0, b])
    g = gatedrnn.GRU(3, 5)(torch.randn(4, 3), return_gates=True)[2]
    assert sorted(g) == ["candidate", "reset", "update"] and g["reset"].shape == (1, 4, 5)


def test_return_gates_off_returns_torch_shapes() -> None:
    out = gatedrnn.GRU(3, 5)(torch.randn(4, 2, 3))
    assert len(out) == 2
