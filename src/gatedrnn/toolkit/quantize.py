"""``gatedrnn quantize RUN_FOLDER``: a trained run's model in int8, and what it costs in accuracy.

The run's checkpoint is loaded and verified (as ``gatedrnn sample`` loads it), scored on the
task's test set in float32, quantized with ``gatedrnn.quantize`` (recurrent layers; the output and
embedding layers too with ``linear=True`` for nn.Linear), scored again, and saved with
``gatedrnn.interop.save_model`` as ``model-int8.safetensors`` in the run folder (or ``out``),
its metadata holding the task and both scores.

Example:
    >>> import tempfile
    >>> from gatedrnn.toolkit.train import TrainConfig, train
    >>> folder = tempfile.mkdtemp()
    >>> _ = train(TrainConfig(task="adding", task_args={"length": 20}, cell="lstm", hidden=16,
    ...                       steps=20, out=folder, progress=False))
    >>> report = quantize_run(folder)
    >>> sorted(report), report["file"].endswith("model-int8.safetensors")
    (['after', 'before', 'file', 'metric', 'task'], True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

import gatedrnn

from ..interop.io import check_fit, save_model
from .checkpoint import load_checkpoint
from .model import model_from_config
from .tasks import get_task
from .train import check_run_meta

FILE = "model-int8.safetensors"


def load_run(folder: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained float32 model of a run folder (a bare-cell or a block model), in eval mode,
    and its checkpoint metadata."""
    ckpt = load_checkpoint(folder)
    check_run_meta(ckpt.path, ckpt.meta)
    with torch.device("meta"):  # names, shapes and dtypes first, without memory (see interop.io)
        check_fit(str(ckpt.weights_path), ckpt.model_state,
                  model_from_config(ckpt.meta["model"]).state_dict())
    model = model_from_config(ckpt.meta["model"])
    model.load_state_dict(ckpt.model_state)
    return model.eval(), ckpt.meta


def quantize_run(folder: str | os.PathLike, out: str | os.PathLike | None = None,
                 linear: bool = False) -> dict[str, Any]:
    """Quantize the model of run ``folder``, score it before and after on the task's test set, and
    save it (``out``, by default ``FOLDER/model-int8.safetensors``).

    Returns {"task", "metric", "before", "after", "file"}: ``before`` and ``after`` are the task's
    test metrics (``Task.evaluate``) of the float32 and the int8 model.
    """
    model, meta = load_run(folder)
    task = get_task(meta["task"]["name"], **meta["task"]["args"])
    before = task.evaluate(model)
    qmodel = gatedrnn.quantize(model, linear=linear)
    after = task.evaluate(qmodel)
    path = Path(out) if out is not None else Path(folder) / FILE
    report = {"task": task.name, "metric": task.metric, "before": before, "after": after}
    save_model(qmodel, path, extra={**report, "model": meta["model"], "linear": linear})
    return {**report, "file": str(path)}


def describe(report: dict[str, Any]) -> str:
    """The report as lines: each test metric in float32 and int8, and where the model went."""
    lines = [f"{report['task']}: test metrics, float32 -> int8"]
    for key, value in report["before"].items():
        after = report["after"][key]
        lines.append(f"  {key}: {value:.6g} -> {after:.6g} ({after - value:+.4g})")
    lines.append(f"int8 model written to {report['file']}")
    return "\n".join(lines)
