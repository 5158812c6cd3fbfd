"""Exact resume from a fresh process, and a library that leaves the global generators alone.

A reported bug: the resumed run differed from the straight one because a first import drew from
torch's global generator after the user had seeded it. Fresh processes are the point here: a
process that has already imported everything cannot see that kind of bug.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import gatedrnn
from gatedrnn import cli

SRC = str(Path(gatedrnn.__file__).parent.parent)


def python(code: str) -> str:
    """Run ``code`` in a fresh interpreter that imports this checkout; returns its stdout."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env = {k: v for k, v in env.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def cli_in_fresh_process(argv: list[str]) -> None:
    python(f"import sys; from gatedrnn.cli import main; sys.exit(main({argv!r}))")


RANDOM_OPTIONS = {
    "lstm": ["--zoneout", "0.1", "--zoneout-cell", "0.05", "--recurrent-dropout", "0.2",
             "--dropout", "0.25", "--weight-drop", "0.2"],
    "gru": ["--zoneout", "0.1", "--recurrent-dropout", "0.2", "--dropout", "0.25", "--weight-drop", "0.2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_resume_in_a_fresh_process_is_bitwise_the_straight_run(tmp_path: Path, cell: str) -> None:
    args = ["train", "--task", "adding", "--length", "12", "--cell", cell, "--hidden", "8", "--layers", "2",
            "--batch", "8", "--eval-every", "3", "--lr", "0.01", "--no-progress", *RANDOM_OPTIONS[cell]]
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    cli_in_fresh_process([*args, "--steps", "6", "--out", str(straight)])
    assert cli.main([*args, "--steps", "3", "--out", str(halves)]) == 0  # this process: warm imports
    cli_in_fresh_process([*args, "--steps", "6", "--out", str(halves), "--resume"])
    a = load_file(straight / "weights-00000006.safetensors")
    b = load_file(halves / "weights-00000006.safetensors")
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    for name in a:  # weights, Adam's moments and step, and the generator state
        assert torch.equal(a[name], b[name]), name


def test_the_issue_reproduction_in_a_fresh_process() -> None:
    out = python("""
        import torch, gatedrnn
        m = gatedrnn.LSTM(2, 16, zoneout=0.1)
        x = torch.randn(20, 16, 2)
        torch.manual_seed(5); a = m(x)[0]
        torch.manual_seed(5); b = m(x)[0]
        print(torch.equal(a, b))
    """)
    assert out.split() == ["True"]


def test_importing_and_first_calls_draw_from_no_global_generator() -> None:
    out = python("""
        import importlib, pkgutil, random
        import numpy as np, torch

        def seed():
            torch.manual_seed(7); np.random.seed(7); random.seed(7)

        def draw():
            return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())

        seed(); expected = draw()
        seed()
        import gatedrnn
        skipped = []
        for info in pkgutil.walk_packages(gatedrnn.__path__, "gatedrnn."):
            try:
                importlib.import_module(info.name)
            except ImportError:  # an optional extra (keras) that is not installed
                skipped.append(info.name)
        imports_clean = draw() == expected
        # The first calls (kernels compiled or loaded from cache) draw nothing either, when no
        # random option is on: only construction (initialisation) does.
        calls_clean = True
        for kind in ("LSTM", "GRU", "RNN"):
            for engine in ("fused", "reference"):
                module = getattr(gatedrnn, kind)(3, 4, num_layers=2, engine=engine)
                x = torch.randn(5, 2, 3)
                before = torch.get_rng_state()
                module(x)[0].sum().backward()
                calls_clean &= bool(torch.equal(torch.get_rng_state(), before))
        print(imports_clean, calls_clean, "gatedrnn.toolkit.train" in __import__("sys").modules, skipped)
    """)
    assert out.startswith("True True True"), out


def _step(module: torch.nn.Module, x: torch.Tensor) -> None:
    out = module(x)[0]
    out.sum().backward()


@pytest.mark.parametrize("engine", ["reference", "fused"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_calls_without_random_options_draw_nothing(kind: str, engine: str) -> None:
    torch.manual_seed(3)
    module = getattr(gatedrnn, kind)(3, 5, num_layers=2, engine=engine)
    x = torch.randn(4, 2, 3)
    before = torch.get_rng_state()
    _step(module.train(), x)
    with torch.no_grad():
        module.eval()(x)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("options", [
    {"zoneout": 0.1}, {"recurrent_dropout": 0.2}, {"weight_drop": 0.2}, {"dropout": 0.3},
], ids=lambda o: next(iter(o)))
def test_masks_are_drawn_in_training_only_and_replay_from_a_seed(options: dict[str, Any]) -> None:
    torch.manual_seed(3)
    module = gatedrnn.LSTM(3, 5, num_layers=2, **options)
    x = torch.randn(4, 2, 3)
    before = torch.get_rng_state()
    with torch.no_grad():
        module.eval()(x)
    assert torch.equal(torch.get_rng_state(), before)  # evaluation: no masks, no draws
    module.train()
    torch.manual_seed(11)
    a = module(x)[0]
    torch.manual_seed(11)
    b = module(x)[0]
    assert torch.equal(a, b)
    assert not torch.equal(a, module(x)[0])  # the masks are really random
