"""``gatedrnn quantize RUN_FOLDER``: a trained run's model in int8, and what it costs in accuracy.

The run's checkpoint is loaded and verified (as ``gatedrnn sample`` loads it). The weights are
the best evaluation's where the run kept them (trained with selection on a validation set,
``select=True``: best-{step}.safetensors, the model its report quotes), else the last step's;
``weights="last"`` takes the last step's always. The model is scored on the task's test set in
float32, quantized with ``gatedrnn.quantize`` (recurrent layers; the output and
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
    (['after', 'before', 'file', 'metric', 'step', 'task', 'weights'], True)
    >>> report["weights"], report["step"]
    ('last', 20)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

import gatedrnn

from ..interop.io import check_fit, save_model
from .checkpoint import load_best, load_checkpoint
from .model import model_from_config
from .tasks import get_task
from .train import check_run_meta

FILE = "model-int8.safetensors"


WEIGHTS = ("best", "last")


def load_run(folder: str | os.PathLike, weights: str = "best") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained float32 model of a run folder (a bare-cell or a block model), in eval mode,
    and its checkpoint metadata, with ``meta["weights"]`` ("best" or "last") and
    ``meta["weights_step"]`` saying which weights it holds. ``weights="best"``: the best
    evaluation's where the run kept them, else the last step's; ``"last"``: the last step's."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    ckpt = load_checkpoint(folder)
    check_run_meta(ckpt.path, ckpt.meta)
    best = load_best(ckpt) if weights == "best" else None
    state, step = (ckpt.model_state, ckpt.meta["step"]) if best is None else (best[1], best[0])
    where = str(ckpt.weights_path if best is None else ckpt.path.parent / ckpt.meta["best"]["file"])
    with torch.device("meta"):  # names, shapes and dtypes first, without memory (see interop.io)
        check_fit(where, state, model_from_config(ckpt.meta["model"]).state_dict())
    model = model_from_config(ckpt.meta["model"])
    model.load_state_dict(state)
    return model.eval(), {**ckpt.meta, "weights": "last" if best is None else "best", "weights_step": step}


def quantize_run(folder: str | os.PathLike, out: str | os.PathLike | None = None,
                 linear: bool = False, weights: str = "best") -> dict[str, Any]:
    """Quantize the model of run ``folder`` (``weights``: see ``load_run``), score it before and
    after on the task's test set, and save it (``out``, by default ``FOLDER/model-int8.safetensors``).

    Returns {"task", "metric", "before", "after", "file", "weights", "step"}: ``before`` and
    ``after`` are the task's test metrics (``Task.evaluate``) of the float32 and the int8 model;
    ``weights`` and ``step`` say which weights were quantized ("best" or "last", and their step).
    """
    model, meta = load_run(folder, weights)
    task = get_task(meta["task"]["name"], **meta["task"]["args"])
    before = task.evaluate(model)
    qmodel = gatedrnn.quantize(model, linear=linear)
    after = task.evaluate(qmodel)
    path = Path(out) if out is not None else Path(folder) / FILE
    report = {"task": task.name, "metric": task.metric, "before": before, "after": after,
              "weights": meta["weights"], "step": meta["weights_step"]}
    save_model(qmodel, path, extra={**report, "model": meta["model"], "linear": linear})
    return {**report, "file": str(path)}


def describe(report: dict[str, Any]) -> str:
    """The report as lines: each test metric in float32 and int8, and where the model went."""
    which = "best evaluation's" if report["weights"] == "best" else "last"
    lines = [f"{report['task']}: test metrics, float32 -> int8 (the {which} weights, step {report['step']})"]
    for key, value in report["before"].items():
        after = report["after"][key]
        lines.append(f"  {key}: {value:.6g} -> {after:.6g} ({after - value:+.4g})")
    lines.append(f"int8 model written to {report['file']}")
    return "\n".join(lines)
