"""The six sequence classes show their real parameters (``inspect.signature``, IDEs, the API page):
torch.nn's arguments first, in torch.nn's order, then gatedrnn's keyword-only options; positional
calls work as torch.nn's; every docstring has the sections of torch.nn's pages."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import gatedrnn

TORCH_ARGS = {
    "LSTM": ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
             "bidirectional", "proj_size", "device", "dtype"],
    "GRU": ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
            "bidirectional", "device", "dtype"],
    "RNN": ["input_size", "hidden_size", "num_layers", "nonlinearity", "bias", "batch_first",
            "dropout", "bidirectional", "device", "dtype"],
}
OPTIONS = {
    "LSTM": ["engine", "layer_norm", "peephole", "recurrent_dropout", "zoneout", "zoneout_cell",
             "weight_drop", "forget_bias", "init", "chrono_max_len", "num_heads"],
    "GRU": ["engine", "reset_after", "layer_norm", "recurrent_dropout", "zoneout", "weight_drop",
            "forget_bias", "init", "chrono_max_len", "num_heads"],
    "RNN": ["engine"],
    "MinGRU": ["engine"],
    "MinLSTM": ["engine"],
    "SLSTM": ["engine", "num_heads"],
}
SIX = ["LSTM", "GRU", "RNN", "MinGRU", "MinLSTM", "SLSTM"]


@pytest.mark.parametrize("name", SIX)
def test_signature_lists_the_real_parameters(name: str) -> None:
    params = inspect.signature(getattr(gatedrnn, name)).parameters
    positional = [p for p, v in params.items() if v.kind is v.POSITIONAL_OR_KEYWORD]
    keyword = [p for p, v in params.items() if v.kind is v.KEYWORD_ONLY]
    assert positional == TORCH_ARGS.get(name, TORCH_ARGS["GRU"])
    assert keyword == OPTIONS[name]
    assert all(not p.startswith("_") for p in params)
    assert not any(v.kind in (v.VAR_POSITIONAL, v.VAR_KEYWORD) for v in params.values())
    assert params["num_layers"].default == 1 and params["engine"].default == "auto"


@pytest.mark.parametrize("name", ["LSTM", "GRU", "RNN"])
def test_positional_calls_build_what_torch_builds(name: str) -> None:
    args = {"LSTM": (3, 6, 2, False, True, 0.0, True, 4), "GRU": (3, 6, 2, False, True, 0.0, True),
            "RNN": (3, 6, 2, "relu", False, True, 0.0, True)}[name]
    ours, theirs = getattr(gatedrnn, name)(*args), getattr(nn, name)(*args)
    assert ours.mode == theirs.mode and ours.extra_repr().startswith(theirs.extra_repr())
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}


def test_options_of_another_class_name_their_owner() -> None:
    with pytest.raises(TypeError, match="LSTM only"):
        gatedrnn.GRU(3, 4, zoneout_cell=0.1)
    with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
        gatedrnn.GRU(3, 4, proj_size=2)
    with pytest.raises(TypeError, match="num_heads"):
        gatedrnn.MinGRU(3, 4, num_heads=2)
    assert gatedrnn.RNN(3, 4, nonlinearity="relu", dtype=torch.float64).weight_ih_l0.dtype == \
        torch.float64


@pytest.mark.parametrize("name", SIX)
def test_docstring_has_torch_nn_sections(name: str) -> None:
    doc = inspect.getdoc(getattr(gatedrnn, name)) or ""
    for section in ("Args:", "Inputs:", "Outputs:", "Attributes:", "Raises:", "Engines:", "Example:"):
        assert f"\n{section}" in doc, (name, section)
    params = inspect.signature(getattr(gatedrnn, name)).parameters
    args = doc.split("\nArgs:")[1].split("\n\n")[0]
    assert [line.split(":")[0].strip() for line in args.splitlines()
            if line.startswith("    ") and not line.startswith("     ")] == list(params)
