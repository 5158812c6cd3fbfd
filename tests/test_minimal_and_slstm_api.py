"""MinGRU, MinLSTM and SLSTM as torch.nn-style modules: parameters, streaming steps, packing,
configs and state_dicts, and the errors torch.nn.GRU raises for the same mistakes."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import gatedrnn
from gatedrnn import from_config

DT = torch.float64
CLASSES = [gatedrnn.MinGRU, gatedrnn.MinLSTM, gatedrnn.SLSTM]


def test_parameter_names_and_shapes():
    m = gatedrnn.SLSTM(3, 8, num_layers=2, bidirectional=True, num_heads=4)
    shapes = {k: tuple(v.shape) for k, v in m.named_parameters()}
    assert shapes["weight_ih_l0"] == (32, 3) and shapes["weight_ih_l1_reverse"] == (32, 16)
    assert shapes["weight_hh_l1"] == (4, 8, 2) and shapes["bias_hh_l0_reverse"] == (32,)
    assert tuple(gatedrnn.SLSTM(3, 8).weight_hh_l0.shape) == (32, 8)
    assert {k: tuple(v.shape) for k, v in gatedrnn.MinGRU(3, 5).named_parameters()} == \
        {"weight_ih_l0": (10, 3), "bias_ih_l0": (10,)}
    assert [k for k, _ in gatedrnn.MinLSTM(3, 5, bias=False).named_parameters()] == ["weight_ih_l0"]
    assert tuple(gatedrnn.MinLSTM(3, 5).weight_ih_l0.shape) == (15, 3)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("engine", ["reference", "fused"])
@pytest.mark.parametrize("unbatched", [False, True])
def test_streaming_step_equals_the_sequence_call(cls, engine, unbatched):
    torch.manual_seed(0)
    kw = {"num_heads": 2} if cls is gatedrnn.SLSTM else {}
    m = cls(3, 4, num_layers=2, engine=engine, dtype=DT, **kw)
    x = torch.randn(6, 3, dtype=DT) if unbatched else torch.randn(6, 2, 3, dtype=DT)
    _, state0 = m(x[:1])  # a non-zero initial state
    out, state = m(x[1:], state0)
    s = state0
    for t in range(1, 6):
        y, s = m.step(x[t], s)
        torch.testing.assert_close(y, out[t - 1], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(s, state, atol=1e-12, rtol=1e-12)
    y0, s0 = m.step(x[0])  # zeros by default
    torch.testing.assert_close(s0, state0, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cls", CLASSES)
def test_packed_equals_per_sequence_runs(cls):
    torch.manual_seed(1)
    m = cls(3, 4, num_layers=2, bidirectional=True, dtype=DT)
    seqs = [torch.randn(L, 3, dtype=DT) for L in (2, 5, 3)]
    out, state = m(pack_sequence(seqs, enforce_sorted=False))
    padded, lengths = pad_packed_sequence(out, batch_first=True)
    for b, s in enumerate(seqs):
        y, st = m(s)
        torch.testing.assert_close(padded[b, :len(s)], y, atol=1e-12, rtol=1e-12)
        pairs = [(state, st)] if isinstance(st, torch.Tensor) else zip(state, st)
        for whole, alone in pairs:
            torch.testing.assert_close(whole[:, b], alone, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("cls", CLASSES)
def test_config_and_state_dict_round_trip(cls):
    kw = {"num_heads": 2} if cls is gatedrnn.SLSTM else {}
    m = cls(3, 4, num_layers=2, bias=False, batch_first=True, dropout=0.25, bidirectional=True,
            engine="reference", dtype=DT, **kw)
    cfg = json.loads(json.dumps(m.get_config()))
    assert cfg["type"] == cls.__name__ and cfg["dtype"] == "float64"
    twin = cls.from_config(cfg)
    assert type(twin) is cls and twin.get_config() == cfg
    twin.load_state_dict(m.state_dict())
    x = torch.randn(2, 5, 3, dtype=DT)
    m.eval()
    twin.eval()
    torch.testing.assert_close(twin(x), m(x))
    with pytest.raises(ValueError, match="type"):
        from_config({**cfg, "type": "GRU2"})


@pytest.mark.parametrize("cls", CLASSES)
def test_empty_batch(cls):
    out, state = cls(3, 4, num_layers=2, bidirectional=True)(torch.randn(5, 0, 3))
    assert out.shape == (5, 0, 8)
    for s in (state,) if isinstance(state, torch.Tensor) else state:
        assert s.shape == (4, 0, 4)


def test_dropout_between_layers_only_in_training():
    m = gatedrnn.MinGRU(3, 4, num_layers=2, dropout=0.5)
    x = torch.randn(4, 2, 3)
    m.eval()
    torch.testing.assert_close(m(x)[0], m(x)[0])
    m.train()
    torch.manual_seed(0)
    a = m(x)[0]
    torch.manual_seed(1)
    assert not torch.equal(a, m(x)[0])


def test_num_heads_checks():
    with pytest.raises(ValueError, match="divisible"):
        gatedrnn.SLSTM(3, 10, num_heads=4)
    with pytest.raises(TypeError):
        gatedrnn.MinGRU(3, 8, num_heads=2)


# --- errors: the exception class torch.nn.GRU raises for the same mistake ------------------------

def _hx(cls, shape):
    z = torch.zeros(shape)
    return (z, z, z, z) if cls is gatedrnn.SLSTM else z


MISTAKES = {
    "input size": lambda cls: ((torch.randn(5, 2, 4),), {}),
    "4-D input": lambda cls: ((torch.randn(5, 2, 3, 1),), {}),
    "hx shape": lambda cls: ((torch.randn(5, 2, 3), _hx(cls, (1, 3, 6))), {}),
    "empty sequence": lambda cls: ((torch.randn(0, 2, 3),), {}),
    "dtype": lambda cls: ((torch.randn(5, 2, 3, dtype=DT),), {}),
    "unbatched input, batched hx": lambda cls: ((torch.randn(5, 3), _hx(cls, (1, 2, 6))), {}),
    "hx dtype": lambda cls: ((torch.randn(5, 2, 3), _hx(cls, (1, 2, 6)).double()
                              if cls is not gatedrnn.SLSTM else (torch.zeros(1, 2, 6, dtype=DT),) * 4), {}),
}


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_errors_have_torch_nn_classes(cls, mistake):
    args, _ = MISTAKES[mistake](cls)
    with pytest.raises(Exception) as theirs:
        torch.nn.GRU(3, 6)(*(a if isinstance(a, torch.Tensor) else a[0] for a in args))
    with pytest.raises(type(theirs.value)):
        cls(3, 6)(*args)


@pytest.mark.parametrize("cls", CLASSES)
def test_constructor_and_state_type_errors(cls):
    with pytest.raises(ValueError):
        cls(3, 6, engine="cuda")
    with pytest.raises(ValueError):
        cls(3, 6, dropout=1.5)
    with pytest.raises(ValueError):
        cls(3, 0)
    with pytest.raises(TypeError):
        cls(3, 6, bias=1)
    wrong = torch.zeros(1, 2, 6) if cls is gatedrnn.SLSTM else (torch.zeros(1, 2, 6),) * 4
    with pytest.raises(TypeError):
        cls(3, 6)(torch.randn(5, 2, 3), wrong)
    with pytest.raises(RuntimeError, match="float32/float64"):
        cls(3, 6, engine="fused", dtype=torch.bfloat16)(torch.randn(5, 2, 3, dtype=torch.bfloat16))


def test_scan_is_for_the_min_cells_only():
    with pytest.raises(ValueError, match="scan"):
        gatedrnn.SLSTM(3, 6, engine="scan")


def test_step_errors():
    with pytest.raises(RuntimeError, match="bidirectional"):
        gatedrnn.MinGRU(3, 4, bidirectional=True).step(torch.randn(2, 3))
    with pytest.raises(RuntimeError, match="input_size"):
        gatedrnn.MinGRU(3, 4).step(torch.randn(2, 5))
    with pytest.raises(ValueError):
        gatedrnn.MinGRU(3, 4).step(torch.randn(1, 2, 3))


def test_headwise_product_is_a_block_diagonal_product():
    from gatedrnn.equations.cells import headwise_product

    B, G, nh, d = 3, 4, 3, 2
    H = nh * d
    w = torch.randn(nh, G * d, d, dtype=DT)
    dense = torch.zeros(G * H, H, dtype=DT)  # the same map as one (G·H, H) matrix
    for j in range(nh):
        for g in range(G):
            dense[g * H + j * d:g * H + (j + 1) * d, j * d:(j + 1) * d] = w[j, g * d:(g + 1) * d]
    h = torch.randn(B, H, dtype=DT)
    torch.testing.assert_close(headwise_product(h, w), h @ dense.T)
    torch.testing.assert_close(headwise_product(h, dense), h @ dense.T)


def test_head_wise_module_equals_its_dense_twin():
    """SLSTM(num_heads=2) and SLSTM(num_heads=1) whose W_hh is the block-diagonal expansion."""
    torch.manual_seed(3)
    heads = gatedrnn.SLSTM(3, 4, num_heads=2, dtype=DT, engine="fused")
    dense = gatedrnn.SLSTM(3, 4, dtype=DT, engine="fused")
    sd = heads.state_dict()
    w = sd.pop("weight_hh_l0")
    full = torch.zeros(16, 4, dtype=DT)
    for j in range(2):
        for g in range(4):
            full[g * 4 + j * 2:g * 4 + j * 2 + 2, j * 2:j * 2 + 2] = w[j, g * 2:g * 2 + 2]
    dense.load_state_dict({**sd, "weight_hh_l0": full})
    x = torch.randn(5, 2, 3, dtype=DT)
    torch.testing.assert_close(heads(x), dense(x), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["gatedrnn.modules.minimal", "gatedrnn.modules.slstm",
                                  "gatedrnn.engines.kernels.minrnn",
                                  "gatedrnn.engines.kernels.slstm", "gatedrnn.equations.cells"])
def test_docstring_examples_run(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("cls", CLASSES)
def test_fits_code_written_for_torch_nn_rnns(cls):
    """The toolkit's SequenceModel reads proj_size, bidirectional and the state's first entry."""
    from gatedrnn.toolkit.model import SequenceModel

    model = SequenceModel(cls(3, 4, batch_first=True, bidirectional=True), output_size=2)
    out = model(torch.randn(5, 7, 3))
    assert out.shape == (5, 2)
    out.sum().backward()
    assert model.rnn.weight_ih_l0.grad is not None


@pytest.mark.parametrize("cls", CLASSES)
def test_last_engine_says_what_ran(cls):
    """As the core modules: ``last_engine`` names the engine of the last call, auto's pick too."""
    m = cls(3, 4)
    assert m.last_engine is None
    x = torch.randn(5, 2, 3)
    m(x)
    assert m.last_engine == "fused"  # auto on CPU float32
    m.engine = "reference"
    m(x)
    assert m.last_engine == "reference"
    m.engine = "auto"
    m.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert m.last_engine == "reference"  # the fused kernels run float32/float64 only
    if cls is not gatedrnn.SLSTM:
        m.to(torch.float32).engine = "scan"
        m(x)
        assert m.last_engine == "scan"
