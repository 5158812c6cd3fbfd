"""Data-parallel training under torchrun: two CPU processes (gloo) against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["train", "--task", "adding", "--length", "20", "--cell", "gru", "--hidden", "16", "--steps", "30",
        "--eval-every", "5", "--lr", "0.01", "--no-progress"]


def run(cmd: list[str], out: Path) -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = subprocess.run([*cmd, *ARGS, "--out", str(out)], capture_output=True, text=True, timeout=180,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_train_like_one(tmp_path: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "gatedrnn"]
    ddp = run(torchrun, tmp_path / "ddp")
    single = run([sys.executable, "-m", "gatedrnn"], tmp_path / "single")
    # Only rank 0 wrote: one record per evaluation, no duplicates, and one weights file.
    assert [r["step"] for r in ddp] == [5, 10, 15, 20, 25, 30]
    assert len(list((tmp_path / "ddp").glob("weights-*.safetensors"))) == 1
    # Rank 1 trained on other batches, so the averaged loss differs from the single process's ...
    assert ddp[0]["loss"] != single[0]["loss"]
    # ... but the curves have the same shape: both fall, and end close to each other.
    for curve in (ddp, single):
        assert curve[-1]["loss"] < 0.5 * curve[0]["loss"]
    assert abs(ddp[-1]["test_mse"] - single[-1]["test_mse"]) < 0.5 * single[-1]["test_mse"]
