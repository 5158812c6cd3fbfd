"""The cells' public face: torch.nn's signature, then gatedrnn's keyword-only options, and a
docstring with Args, Inputs, Outputs, the weights, the engines and an example."""

from __future__ import annotations

import inspect

import pytest
import torch

import gatedrnn
from gatedrnn.modules.recurrent import OPTIONS

CELLS = ("LSTMCell", "GRUCell", "RNNCell")


@pytest.mark.parametrize("name", CELLS)
def test_signature_is_torchs_then_the_options(name: str) -> None:
    ours = inspect.signature(getattr(gatedrnn, name)).parameters
    theirs = inspect.signature(getattr(torch.nn, name)).parameters
    positional = [p for p in ours.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == [(p.name, p.default) for p in theirs.values()]
    options = {p.name: p.default for p in ours.values() if p.kind is p.KEYWORD_ONLY}
    cls = getattr(gatedrnn, name)
    assert list(options) == list(cls._ACCEPTS)  # exactly the options the class takes, in order
    assert all(default == OPTIONS[key] for key, default in options.items())


def test_positional_calls_work_as_torchs() -> None:
    cell = gatedrnn.RNNCell(3, 4, False, "relu", None, torch.float64)
    ref = torch.nn.RNNCell(3, 4, False, "relu", None, torch.float64)
    assert (cell.bias, cell.nonlinearity, cell.weight_ih.dtype) == (ref.bias, "relu", torch.float64)
    lstm = gatedrnn.LSTMCell(3, 4, False, None, torch.float64, engine="reference")
    assert lstm.bias_ih is None and lstm.weight_hh.dtype == torch.float64


@pytest.mark.parametrize("name", CELLS)
def test_docstring_sections(name: str) -> None:
    doc = inspect.getdoc(getattr(gatedrnn, name))
    for section in ("Args:", "Inputs:", "Outputs:", "Attributes:", "Note: Engines", "Example:",
                    "weight_ih (Tensor):", "Raises:", "unbatched"):
        assert section in doc, (name, section)
    # The engines note is written once, on LSTMCell; the other two cells point to it.
    note = inspect.getdoc(gatedrnn.LSTMCell)
    assert name == "LSTMCell" or "As ``LSTMCell``'s" in doc, name
    for words in ("cache", "set_num_threads"):
        assert words in note
