"""Safe model files: round trips, atomic writes, and clear errors for every kind of bad file."""

from __future__ import annotations

import ast
import doctest
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import gatedrnn
from gatedrnn.interop import io
from gatedrnn.interop.io import (
    CheckpointError,
    load_model,
    load_tensors,
    save_model,
    save_tensors,
    write_atomic,
)

MODULES = [
    gatedrnn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, batch_first=True),
    gatedrnn.LSTM(3, 4, peephole=True, layer_norm=True, zoneout=0.1, forget_bias=1.0),
    gatedrnn.GRU(3, 4, reset_after=False, bias=False, dtype=torch.float64),
    gatedrnn.GRU(3, 4, layer_norm=True, recurrent_dropout=0.2, weight_drop=0.1),
    gatedrnn.RNN(3, 4, nonlinearity="relu", num_layers=2, dropout=0.5),
]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "model.safetensors"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: repr(m))
def test_a_model_comes_back_with_its_config_and_outputs(module: Any, path: Path) -> None:
    save_model(module, path)
    loaded = load_model(path)
    assert type(loaded) is type(module) and loaded.get_config() == module.get_config()
    assert not loaded.training  # loaded for inference
    x = torch.randn(2, 5, 3, dtype=module.weight_ih_l0.dtype)
    module.eval()
    with torch.no_grad():
        for got, want in zip(torch.utils._pytree.tree_leaves(loaded(x)),
                             torch.utils._pytree.tree_leaves(module(x)), strict=True):
            torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_any_model_saves_its_weights_and_loads_into_a_twin(path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(gatedrnn.GRU(3, 4, batch_first=True)).eval()
    save_model(net, path, extra={"epoch": 7})
    twin = torch.nn.Sequential(gatedrnn.GRU(3, 4, batch_first=True))
    assert load_model(path, twin) is twin
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), twin.state_dict().values()))
    assert load_tensors(path)[1]["extra"] == {"epoch": 7}
    with pytest.raises(ValueError, match=f"{path}.*without a gatedrnn config"):
        load_model(path)
    with pytest.raises(CheckpointError, match=f"{path}.*differs from the model's in "
                                              r"\['batch_first', 'hidden_size'\]"):
        load_model(path, torch.nn.Sequential(gatedrnn.GRU(3, 5)))
    with pytest.raises(CheckpointError, match=f"{path}.*do not fit.*missing \\['1.bias', '1.weight'\\]"):
        load_model(path, torch.nn.Sequential(gatedrnn.GRU(3, 4, batch_first=True), torch.nn.Linear(1, 1)))


tensor_dicts = st.dictionaries(
    st.text("abcdefgh._", min_size=1, max_size=8),
    st.tuples(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.bfloat16, torch.bool]),
              st.lists(st.integers(0, 3), max_size=3)),
    max_size=4,
)


@settings(max_examples=25, deadline=None)
@given(spec=tensor_dicts, meta=st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5)))
def test_tensors_and_metadata_round_trip(tmp_path_factory: Any, spec: dict, meta: dict) -> None:
    path = tmp_path_factory.mktemp("t") / "t.safetensors"
    tensors = {k: torch.randn(shape).to(dtype) for k, (dtype, shape) in spec.items()}
    save_tensors(path, tensors, meta)
    got, got_meta = load_tensors(path)
    assert got_meta == meta and got.keys() == tensors.keys()
    for k in tensors:
        assert got[k].dtype == tensors[k].dtype and torch.equal(got[k], tensors[k])


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_a_truncated_file_is_a_checkpoint_error_naming_the_path(tmp_path_factory: Any, data: Any) -> None:
    path = tmp_path_factory.mktemp("t") / "m.safetensors"
    save_model(gatedrnn.LSTM(3, 4), path)
    whole = path.read_bytes()
    path.write_bytes(whole[: data.draw(st.integers(0, len(whole) - 1))])
    with pytest.raises(CheckpointError, match=str(path)):
        load_model(path)


def test_a_flipped_byte_in_the_tensors_fails_the_checksum(path: Path) -> None:
    save_model(gatedrnn.GRU(3, 4), path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{path}.*checksum"):
        load_model(path)


def test_foreign_and_future_files_are_refused(path: Path) -> None:
    save_file({"w": torch.ones(2)}, str(path))  # a valid safetensors file, but not ours
    with pytest.raises(ValueError, match="not a gatedrnn model file"):
        load_model(path)
    save_file({"w": torch.ones(2)}, str(path), metadata={"format": io.FORMAT, "format_version": "3"})
    with pytest.raises(CheckpointError, match=f"{path}.*version 3.*reads version 2"):
        load_model(path)
    torch.save(gatedrnn.GRU(3, 4).state_dict(), path)  # a pickle: never unpickled, only refused
    with pytest.raises(ValueError, match=str(path)):
        load_model(path)


def test_a_config_that_builds_nothing_is_a_value_error(path: Path) -> None:
    save_tensors(path, {}, {"recurrent": {"": {"type": "Transformer"}}, "extra": {},
                            "gatedrnn_version": "0"})
    with pytest.raises(CheckpointError, match=f"{path}.*'Transformer' is not a gatedrnn module"):
        load_model(path)


def test_write_atomic_leaves_the_old_file_when_the_write_fails(path: Path, monkeypatch) -> None:
    write_atomic(path, b"old")

    def fail(*args: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_loading_never_unpickles() -> None:
    # The whole point: no torch.load (pickle) and no pickle import anywhere in the module.
    tree = ast.parse(Path(io.__file__).read_text())
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    imports = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert "load" not in names and "pickle" not in imports  # no torch.load, no pickle.load


def test_docstring_examples_run() -> None:
    result = doctest.testmod(io, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.parametrize("make", [lambda: gatedrnn.MinGRU(3, 4, num_layers=2),
                                  lambda: gatedrnn.MinLSTM(3, 4, bidirectional=True),
                                  lambda: gatedrnn.SLSTM(3, 8, num_heads=2, batch_first=True)])
def test_newer_cells_save_and_load_alone(tmp_path, make) -> None:
    torch.manual_seed(0)
    model = make()
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    back = load_model(path)
    assert type(back) is type(model) and back.get_config() == model.get_config()
    x = torch.randn(5, 2, 3)
    assert torch.equal(back(x)[0], model(x)[0])


_SHAPE_CASES = [
    (name, kw) for name in ("LSTM", "GRU", "RNN", "MinGRU", "MinLSTM", "SLSTM")
    for kw in ({}, {"num_layers": 3, "bidirectional": True}, {"bias": False, "num_layers": 2})
] + [("LSTM", {"proj_size": 2, "num_layers": 2, "bidirectional": True}),
     ("LSTM", {"layer_norm": True, "peephole": True, "num_layers": 2, "bidirectional": True}),
     ("GRU", {"layer_norm": True, "num_heads": 2, "num_layers": 2}),
     ("LSTM", {"num_heads": 2, "bias": False}), ("SLSTM", {"num_heads": 2, "bidirectional": True})]


@pytest.mark.parametrize("name,kw", _SHAPE_CASES)
def test_the_config_arithmetic_is_the_modules_registration(name: str, kw: dict) -> None:
    """check_config_fits' names and shapes, computed without building, are the module's."""
    module = getattr(gatedrnn, name)(3, 4, **kw)
    cfg, state = module.get_config(), module.state_dict()
    io.check_config_fits("m", state, cfg)
    for change in ({"num_layers": cfg["num_layers"] + 1}, {"hidden_size": 10**9},
                   {"bidirectional": not cfg["bidirectional"]}, {"input_size": 5}):
        with pytest.raises(CheckpointError, match="^m: .*(do not fit|config's model has)"):
            io.check_config_fits("m", state, cfg | change)
