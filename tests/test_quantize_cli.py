"""`gatedrnn quantize RUN_FOLDER`: a trained run's model in int8, scored before and after."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gatedrnn
from gatedrnn.cli import main
from gatedrnn.interop.io import load_model
from gatedrnn.toolkit.quantize import load_run
from gatedrnn.toolkit.train import TrainConfig, train


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    train(TrainConfig(task="adding", task_args={"length": 20}, cell="lstm", hidden=16, steps=20,
                      out=str(folder), progress=False))
    return folder


def test_cli_quantize_writes_the_int8_model_and_scores(run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["quantize", str(run), "--linear"]) == 0
    printed = capsys.readouterr().out
    assert "test_mse" in printed and "model-int8.safetensors" in printed
    float_model, _ = load_run(run)
    qmodel = gatedrnn.quantize(float_model, linear=True)
    back = load_model(run / "model-int8.safetensors", gatedrnn.quantize(load_run(run)[0], linear=True))
    x = torch.randn(3, 20, 2)
    assert torch.equal(back(x), qmodel(x))
    assert isinstance(back.rnn, gatedrnn.QuantizedLSTM)


def test_cli_quantize_bad_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["quantize", str(tmp_path / "missing")]) == 1
    assert "no checkpoint" in capsys.readouterr().err
