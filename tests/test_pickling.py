"""torch.save / torch.load of gatedrnn's modules, with torch's weights_only unpickler (torch >= 2.6's
default), patched and unpatched.

- A model saved while ``gatedrnn.patch_torch()`` is in force loads wherever the program lists
  torch's classes in ``torch.serialization.safe_globals`` (pytorch/examples' word_language_model
  pattern), with the patch or without it.
- A model torch.nn saved loads under the patch, with weights_only and without, as gatedrnn's class.
- What gatedrnn admits to the unpickler is safe: its nine module classes and nothing else, and
  the pickled state of every module (every option, after forwards) names no other global than
  torch's default allowlist holds.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.modules.rnn
from torch import nn

import gatedrnn
from gatedrnn.modules.patch import SAFE_CLASSES, TORCH_CLASSES

RNN_TYPES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
CLASS = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


@pytest.fixture(autouse=True)
def _unpatched():
    gatedrnn.unpatch_torch()
    yield
    gatedrnn.unpatch_torch()


class WordModel(nn.Module):
    """word_language_model's RNNModel, in short: embedding, dropout, a recurrent net, a decoder."""

    def __init__(self, rnn_type: str, ntoken: int = 20, ninp: int = 6, nhid: int = 5) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ("LSTM", "GRU"):
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, 2, dropout=0.2)
        else:
            self.rnn = nn.RNN(ninp, nhid, 2, nonlinearity=rnn_type[4:].lower(), dropout=0.2)
        self.decoder = nn.Linear(nhid, ntoken)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.drop(self.encoder(tokens)))
        return self.decoder(self.drop(out))


def _save(model: nn.Module, path: Any) -> None:
    with open(path, "wb") as f:
        torch.save(model, f)


def _load_as_word_language_model_does(path: Any) -> Any:
    """main.py's load, as it is written there: torch's classes by their torch.nn paths."""
    with open(path, "rb") as f:
        safe_globals = [
            WordModel,
            torch.nn.modules.dropout.Dropout,
            torch.nn.modules.linear.Linear,
            torch.nn.modules.rnn.GRU,
            torch.nn.modules.rnn.LSTM,
            torch.nn.modules.rnn.RNN,
            torch.nn.modules.sparse.Embedding,
        ]
        with torch.serialization.safe_globals(safe_globals):
            model = torch.load(f)
    model.rnn.flatten_parameters()
    return model


def _same_outputs(a: nn.Module, b: nn.Module) -> None:
    tokens = torch.randint(0, 20, (7, 3))
    a.eval(), b.eval()
    with torch.no_grad():  # (engines agree to ~1e-6 in float32 at this size)
        torch.testing.assert_close(b(tokens), a(tokens), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rnn_type", RNN_TYPES)
def test_word_language_model_save_and_load_under_the_patch(rnn_type, tmp_path) -> None:
    path = tmp_path / "model.pt"
    with gatedrnn.patch_torch():
        model = WordModel(rnn_type)
        assert isinstance(model.rnn, gatedrnn.modules.recurrent.RNNBase)
        model(torch.randint(0, 20, (4, 2))).sum().backward()  # trained a step: last_engine set
        _save(model, path)
        back = _load_as_word_language_model_does(path)  # (patched: the list holds stand-ins)
    assert type(back.rnn) is type(model.rnn)
    _same_outputs(model, back)
    unpatched = _load_as_word_language_model_does(path)  # gatedrnn imported, torch's classes
    assert type(unpatched.rnn) is type(model.rnn)
    _same_outputs(model, unpatched)


@pytest.mark.parametrize("weights_only", [True, False])
@pytest.mark.parametrize("rnn_type", RNN_TYPES)
def test_a_model_torch_nn_saved_loads_under_the_patch(rnn_type, weights_only, tmp_path) -> None:
    """It comes back as gatedrnn's class (what ``torch.nn.LSTM`` names while patched), with
    torch.nn's parameters and gatedrnn's options at their defaults."""
    path = tmp_path / "model.pt"
    model = WordModel(rnn_type)
    assert type(model.rnn) is TORCH_CLASSES[CLASS[rnn_type]]
    _save(model, path)
    with gatedrnn.patch_torch():
        if weights_only:
            back = _load_as_word_language_model_does(path)
        else:
            back = torch.load(path, weights_only=False)
    ours = getattr(gatedrnn, CLASS[rnn_type])
    assert type(back.rnn) is ours and back.rnn.engine == "auto" and back.rnn.last_engine is None
    kw = {"nonlinearity": rnn_type[4:].lower()} if CLASS[rnn_type] == "RNN" else {}
    assert back.rnn.get_config() == ours(6, 5, 2, dropout=0.2, **kw).get_config()
    _same_outputs(model, back)
    assert type(_load_as_word_language_model_does(path).rnn) is TORCH_CLASSES[CLASS[rnn_type]]


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_cells_torch_nn_saved_load_under_the_patch(name, tmp_path) -> None:
    path = tmp_path / "cell.pt"
    cell = TORCH_CLASSES[name](3, 4)
    _save(cell, path)
    with gatedrnn.patch_torch():
        with torch.serialization.safe_globals([getattr(torch.nn, name)]):
            back = torch.load(path)
    assert type(back) is getattr(gatedrnn, name)
    x = torch.randn(2, 3)
    torch.testing.assert_close(back(x)[0], cell(x)[0], atol=1e-5, rtol=1e-5)


def test_a_stand_in_still_refuses_a_call_without_arguments() -> None:
    with gatedrnn.patch_torch():
        for name in ("LSTM", "GRUCell"):
            with pytest.raises(TypeError):
                getattr(nn, name)()
            assert repr(getattr(nn, name)) == repr(TORCH_CLASSES[name])  # torch's path


# --- what is admitted, and why it is safe --------------------------------------------------------

def _variants() -> list[nn.Module]:
    """Every class, every option (and sizes given as a tensor and a numpy integer)."""
    L, G, R = gatedrnn.LSTM, gatedrnn.GRU, gatedrnn.RNN
    return [
        L(3, 4), L(3, 4, 2, bidirectional=True, batch_first=True, dropout=0.1, proj_size=2),
        L(3, 4, layer_norm=True, peephole=True, recurrent_dropout=0.1, zoneout=0.1,
          zoneout_cell=0.1, weight_drop=0.1, forget_bias=1.0, init="chrono", chrono_max_len=10),
        L(3, 4, num_heads=2, init="orthogonal", engine="reference"), L(3, 4, engine="native"),
        G(3, 4, reset_after=False, zoneout=0.1, engine="fused"), G(3, 4, layer_norm=True,
                                                                   num_heads=2),
        R(3, 4, nonlinearity="relu", num_layers=np.int64(2), bias=False),
        gatedrnn.LSTMCell(torch.tensor(3), np.int64(4), bias=1, layer_norm=True, peephole=True,
                          zoneout=0.1, zoneout_cell=0.1, forget_bias=1.0),
        gatedrnn.GRUCell(3, 4, reset_after=False, init="chrono", chrono_max_len=np.int64(5)),
        gatedrnn.RNNCell(3, 4, nonlinearity="relu", engine="fused"),
        gatedrnn.MinGRU(3, 4, 2, bidirectional=True), gatedrnn.MinLSTM(3, 4, engine="scan"),
        gatedrnn.SLSTM(3, 4, num_heads=2, engine="fused"),
    ]


def _run(m: nn.Module) -> None:
    """A training forward and backward, then inference calls (the fast paths' caches, if any)."""
    cell = isinstance(m, nn.RNNCellBase)
    x = torch.randn(2, 3) if cell else torch.randn(5, 2, 3)
    m.train()
    out = m(x)
    (out[0] if isinstance(out, tuple) else out).sum().backward()
    m.eval()
    with torch.no_grad():
        m(x), m(x[0])
        if not cell and m.engine != "native":  # (torch's op records no gates)
            m(x, return_gates=True)


def _globals(blob: bytes) -> set[str]:
    """The GLOBALs the pickle of a torch.save file names, as torch's unpickler reads them
    (protocol 2's ``__builtin__.set`` is ``builtins.set``)."""
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    return torch._weights_only_unpickler.get_globals_in_pkl(io.BytesIO(data))


def test_every_modules_pickle_names_only_what_the_unpickler_allows() -> None:
    allowed = set(torch._weights_only_unpickler._get_allowed_globals())
    ours = {f"{c.__module__}.{c.__qualname__}" for c in SAFE_CLASSES}
    for m in _variants():
        _run(m)
        buf = io.BytesIO()
        torch.save(m, buf)
        names = _globals(buf.getvalue())
        assert names - allowed <= ours and (names & ours), (type(m).__name__, names - allowed)
        buf.seek(0)
        assert torch.serialization.get_unsafe_globals_in_checkpoint(buf) == []
        buf.seek(0)
        back = torch.load(buf)  # weights_only, nothing listed by the caller
        assert type(back) is type(m)
        for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items(), strict=True):
            assert k == k2 and torch.equal(a, b)
        for key in ("input_size", "hidden_size", "num_layers", "bias", "chrono_max_len"):
            value = getattr(back, key, None)
            assert value is None or type(value) in (int, bool), (key, type(value))
        if hasattr(back, "get_config"):
            json.dumps(back.get_config())


def test_import_admits_gatedrnns_module_classes_and_nothing_else() -> None:
    """In a fresh process: what ``import gatedrnn`` adds to torch's safe globals is gatedrnn's
    nine module classes (and any other module class of gatedrnn's own), never anything else."""
    code = (
        "import json, torch\n"
        "before = torch.serialization.get_safe_globals()\n"
        "import gatedrnn\n"
        "new = [g for g in torch.serialization.get_safe_globals() if g not in before]\n"
        "new = [g if isinstance(g, tuple) else (g, g.__module__ + '.' + g.__qualname__)\n"
        "       for g in new]\n"
        "print(json.dumps([[p, c.__module__, c.__qualname__, isinstance(c, type) and\n"
        "                   issubclass(c, torch.nn.Module)] for c, p in new]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    admitted = json.loads(out.stdout.strip().splitlines()[-1])
    assert {f"{c.__module__}.{c.__qualname__}" for c in SAFE_CLASSES} <= {a[0] for a in admitted}
    for path, module, qualname, is_module in admitted:
        assert path == f"{module}.{qualname}" and module.startswith("gatedrnn.") and is_module


def test_a_programs_own_safe_globals_block_keeps_gatedrnns_admission(tmp_path) -> None:
    """torch's ``safe_globals`` removes what it listed when its block ends; gatedrnn's entries are
    (class, path) pairs, so listing gatedrnn.LSTM in a block does not un-admit it."""
    path = tmp_path / "m.pt"
    _save(gatedrnn.LSTM(3, 4), path)
    with torch.serialization.safe_globals([gatedrnn.LSTM]):
        torch.load(path)
    assert type(torch.load(path)) is gatedrnn.LSTM
