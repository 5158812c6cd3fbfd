"""The training loop: Adam, gradient clipping, evaluation, JSONL log, checkpoints, exact resume, DDP.

The learning rate is constant, or with ``decay_steps`` falls linearly to zero over the last
``decay_steps`` steps (the step's own number sets it, so a resumed run follows the same schedule).

Exact resume rests on one rule: everything random in step ``s`` is a function of (seed, rank, s).
The batch comes from a generator seeded with that triple, and the global torch generator (which
the modules use for dropout, zoneout and weight-drop masks) is reseeded from it too. So a run that
stops at step s and resumes from its checkpoint (weights, Adam state, RNG state, step) computes
bitwise the same numbers as one that never stopped; there is no data-loader state to save.

Non-finite values never reach the weights: each step checks the loss and the gradient norm
before ``opt.step()``, and the weights before each checkpoint; on a NaN or inf the run stops with a
``NonFiniteLossError`` that names the last good checkpoint, which stays in place.

Distributed: under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel
(gloo on CPU, nccl on GPU). Each rank draws its own batches (the rank is in the seed), gradients
are averaged by DDP, the logged loss is averaged across ranks, and only rank 0 evaluates and writes.

Example:
    >>> cfg = TrainConfig(task="adding", task_args={"length": 10}, cell="gru", hidden=8, steps=4,
    ...                   eval_every=2, progress=False)
    >>> result = train(cfg)
    >>> [r["step"] for r in result.history], len(result.losses)
    ([2, 4], 4)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from tqdm import tqdm

from ..engines import dispatch
from ..interop.io import check_fit, parse_json
from .blocks import BlockStack
from .checkpoint import (
    META_FILE,
    CheckpointError,
    check_run_folder,
    clear_run_folder,
    load_best,
    load_checkpoint,
    save_best,
    save_checkpoint,
)
from .defaults import resolve
from .model import SequenceModel, build_model, check_model_config, count_parameters
from .tasks import Batch, Task, get_task

LOG_FILE = "metrics.jsonl"


class NonFiniteLossError(RuntimeError):
    """The loss, the gradient or the weights became NaN or infinite; the step was not taken and
    the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Everything that defines a run. ``options`` are the recurrent module's keyword arguments
    (variants such as layer_norm or forget_bias, engine, bidirectional, dropout).

    The per-task settings (``task_args``, ``hidden``, ``steps``, ``lr``, ``batch``,
    ``decay_steps``, ``eval_every``, ``options``) left None are filled in when the configuration
    is made, from the table ``gatedrnn train`` uses (``gatedrnn.toolkit.defaults.resolve``): so
    ``TrainConfig(task="copy", cell="gru")`` holds, and trains, what ``gatedrnn train --task copy
    --cell gru`` does (hidden 256, lr 5e-3, ...). A value given is kept as it is: ``options={}``
    means no module options (not even the LSTM's chrono init on adding), ``task_args`` the task's
    constructor arguments. ``dataclasses.replace`` keeps the filled-in values; for another task's
    or cell's defaults, make a new TrainConfig.

    ``out`` must not hold a run (``FileExistsError``) unless ``resume`` continues it or
    ``overwrite`` replaces it (its files are deleted first).
    """

    task: str = "adding"
    task_args: dict[str, Any] | None = None
    cell: str = "gru"
    hidden: int | None = None
    layers: int = 1
    block: str | None = None  # None: the bare cell; "plain" or "conv": a BlockStack (blocks.py)
    select: bool = False  # also score the validation set at each evaluation (TrainResult.selected)
    decay_steps: int | None = None  # the learning rate falls linearly to 0 over the last decay_steps steps
    steps: int | None = None
    lr: float | None = None
    batch: int | None = None
    seed: int = 0
    clip: float = 1.0
    eval_every: int | None = None
    options: dict[str, Any] | None = None
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    device: str = "cpu"
    # The frozen engine="auto" table the run pins (gatedrnn.engines.dispatch.TABLES), so that its
    # numbers do not move when the shipped rules do; None: the shipped rules and any tuned plan.
    dispatch: str | None = "2026-11"

    def __post_init__(self) -> None:
        keys = ("task_args", "hidden", "steps", "lr", "batch", "decay_steps", "eval_every", "options")
        given = {k: getattr(self, k) for k in keys}
        for key, value in resolve(self.task, self.cell, self.block, **given).items():
            setattr(self, key, value)


@dataclass
class TrainResult:
    """What a run returns: the trained model (unwrapped), the evaluation records (also in
    metrics.jsonl), this process's per-step losses, and the run's size and time."""

    model: SequenceModel | BlockStack
    task: Task
    history: list[dict[str, Any]]
    losses: list[float]
    seconds: float
    parameters: int

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}

    # With select=True: the model weights at the ``selected`` record's step (also kept in the run
    # folder as best-{step}.safetensors); None otherwise. ``model`` holds the last step's weights.
    best_state: dict[str, Tensor] | None = None

    @property
    def selected(self) -> dict[str, Any]:
        """The evaluation record with the best validation score (early stopping on the
        validation set, never the test set); the final record when validation was not scored.
        Among records with equal scores, the one with the lowest validation cross-entropy where
        the task reports one (a small validation set ties often on accuracy), else the earliest."""
        return select_record(self.history, self.task)


def select_record(history: list[dict[str, Any]], task: Task) -> dict[str, Any]:
    """``TrainResult.selected`` of these records (the last one when none has a validation score)."""
    key = validation_key(task.metric)
    scored = [r for r in history if key in r]
    if not scored:
        return history[-1] if history else {}
    best = (min if task.lower_is_better else max)(r[key] for r in scored)
    ties = [r for r in scored if r[key] == best]
    return min(ties, key=lambda r: r.get("valid_ce", 0.0))  # min keeps the earliest of equals


def validation_key(metric: str) -> str:
    """The log's name of a metric measured on the validation set: test_acc -> valid_acc."""
    return "valid_" + metric.removeprefix("test_")


def seed_for(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers, e.g. (seed, rank, step): nearby triples give
    unrelated streams, unlike seed + step."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def _to(batch: Batch, device: torch.device) -> Batch:
    # torch's stubs give PackedSequence.to only the first overload of Tensor.to (dtype)
    return Batch(batch.x.to(device), batch.y.to(device))  # type: ignore[arg-type]


def _distributed(cfg: TrainConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device); joins the process group when torchrun started us."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        gpu = torch.cuda.is_available() and cfg.device != "cpu"
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if gpu else "gloo")
    if world > 1:
        rank = dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local}") if cfg.device != "cpu" and torch.cuda.is_available() \
            else torch.device("cpu")
        return rank, world, device
    return 0, 1, torch.device(cfg.device)


def _meta(cfg: TrainConfig, task: Task, model: SequenceModel | BlockStack, seconds: float) -> dict[str, Any]:
    return {"model": model.get_config(), "train": dataclasses.asdict(cfg), "seconds": seconds,
            "task": {"name": task.name, "args": task.config(), "metric": task.metric,
                     "lower_is_better": task.lower_is_better, "baseline": task.baseline,
                     "solved_below": task.solved_below, "vocab": task.vocab}}


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl. A last line cut short (the writer was killed mid-line) is
    dropped; any other damage is a CheckpointError naming the file and line."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = parse_json(str(path), line, limit=1 << 20)
        except CheckpointError:
            if number == len(lines):  # no newline after it: a torn final write
                break
            raise CheckpointError(f"{path}: line {number} is not a JSON record") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise CheckpointError(f"{path}: line {number} is not a record with an integer 'step'")
        records.append(record)
    return records


def _trim_log(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Keep the log records up to the checkpoint's step (a crash may have left later ones)."""
    records = [r for r in read_log(path) if r["step"] <= last_step]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def check_run_meta(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The toolkit's fields of a checkpoint (written by ``_meta``), each present and well typed."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise CheckpointError(f"{path}: {what}")

    need(isinstance(meta.get("task"), dict) and isinstance(meta.get("train"), dict)
         and "model" in meta and "seconds" in meta, "missing 'model', 'task', 'train' or 'seconds'")
    check_model_config(str(path), meta["model"])
    task = meta["task"]
    need(set(task) == {"name", "args", "metric", "lower_is_better", "baseline", "solved_below", "vocab"},
         f"the task record has the keys {sorted(task)}")
    need(isinstance(task["name"], str) and isinstance(task["args"], dict)
         and isinstance(task["metric"], str) and isinstance(task["lower_is_better"], bool)
         and isinstance(task["baseline"], (int, float)) and not isinstance(task["baseline"], bool)
         and (task["solved_below"] is None or isinstance(task["solved_below"], (int, float)))
         and (task["vocab"] is None or isinstance(task["vocab"], str)), "the task record is malformed")
    # These fields arrived later: checkpoints written before them still resume.
    later = {"block", "select", "decay_steps", "overwrite", "dispatch"}
    need(set(meta["train"]) | later == {f.name for f in dataclasses.fields(TrainConfig)},
         f"the training settings have the keys {sorted(meta['train'])}")
    seconds = meta["seconds"]
    need(isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0,
         f"'seconds' must be a number >= 0, got {seconds!r}")
    return meta


def _stopped(step: int, what: str, out: Path | None, last_good: int | None) -> str:
    """The one-line message of a run stopped by a non-finite value."""
    if out is None:
        kept = "No run folder was given, so nothing was saved."
    elif last_good is None:
        kept = f"No checkpoint had been written to {out} yet."
    else:
        kept = (f"The last good checkpoint is {out / META_FILE} (step {last_good}, "
                f"weights-{last_good:08d}.safetensors); continue from it with --resume.")
    return (f"at step {step} the {what}; stopped without updating the weights. {kept} "
            "Try a smaller --lr, a tighter --clip, or another --seed.")


def _resume(cfg: TrainConfig, task: Task, model: SequenceModel | BlockStack, opt: torch.optim.Optimizer
            ) -> tuple[int, float, tuple[dict[str, Any], dict[str, Tensor]] | None]:
    """Load the checkpoint in cfg.out into model and optimizer; returns (step, seconds so far,
    the checkpoint's best record and weights or None)."""
    assert cfg.out is not None  # train checks it before resuming
    ckpt = load_checkpoint(cfg.out)
    check_run_meta(ckpt.path, ckpt.meta)
    if ckpt.meta["model"] != model.get_config():
        raise CheckpointError(f"the checkpoint in {cfg.out} holds a different model: "
                              f"{ckpt.meta['model']} (this run builds {model.get_config()})")
    if ckpt.meta["task"]["name"] != task.name or ckpt.meta["task"]["args"] != task.config():
        raise CheckpointError(f"the checkpoint in {cfg.out} was trained on another task: "
                              f"{ckpt.meta['task']['name']} {ckpt.meta['task']['args']}")
    check_fit(str(ckpt.weights_path), ckpt.model_state, model.state_dict())  # no silent casts
    model.load_state_dict(ckpt.model_state)
    ckpt.restore_optimizer(opt)
    for group in opt.param_groups:  # a --lr given on resume wins over the saved one
        group["lr"] = cfg.lr
    ckpt.restore_rng()
    best = load_best(ckpt)
    if best is not None:
        check_fit(ckpt.meta["best"]["file"], best[1], model.state_dict())
    kept = None if best is None else (ckpt.meta["best"], best[1])
    return int(ckpt.meta["step"]), float(ckpt.meta.get("seconds", 0.0)), kept


def _check_memory(task: Task, cfg: TrainConfig) -> None:
    """Refuse, before allocating anything, a run that cannot fit in this machine's memory: the
    weights, gradients and Adam's two moments, plus the states and gates kept for backward."""
    assert cfg.hidden is not None and cfg.batch is not None and cfg.options is not None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return  # no sysconf (Windows): let the allocator answer
    with torch.device("meta"):
        model = build_model(task, cfg.cell, cfg.hidden, cfg.layers, cfg.block, **cfg.options)
    length = getattr(task, "length", 1)  # the synthetic tasks and text windows; real series are short
    directions = 2 if cfg.options.get("bidirectional") else 1
    per_layer = 8 if cfg.block is None else 24  # a block also keeps its norms and feed-forward
    activations = per_layer * cfg.batch * length * cfg.hidden * cfg.layers * directions
    floats = 4 * count_parameters(model) + activations
    if 4 * floats > total:
        raise ValueError(f"this run needs about {4 * floats / 2**30:.3g} GiB (weights, gradients, "
                         f"Adam state and activations), more than this machine's "
                         f"{total / 2**30:.3g} GiB of memory; use a smaller --hidden, --layers, "
                         "--batch or --length")


def train(cfg: TrainConfig, task: Task | None = None) -> TrainResult:
    """Train ``cfg.cell`` on ``cfg.task``; see the module docstring. ``task`` overrides the one
    named in ``cfg`` (for tasks built by hand); the per-task settings left None are the defaults
    of the task named in ``cfg``. Raises ``FileExistsError`` when ``cfg.out`` holds a run and
    neither ``cfg.resume`` nor ``cfg.overwrite`` is set."""
    # __post_init__ filled in every None; the asserts say so to the type checker
    assert cfg.task_args is not None and cfg.options is not None and cfg.hidden is not None
    assert cfg.steps is not None and cfg.eval_every is not None and cfg.decay_steps is not None
    assert cfg.lr is not None and cfg.batch is not None
    if cfg.seed < 0 or cfg.steps < 1 or cfg.eval_every < 1 or cfg.decay_steps < 0:
        raise ValueError("seed must be >= 0, steps and eval_every >= 1, decay_steps >= 0")
    out = Path(cfg.out) if cfg.out else None
    if out is not None:  # on every rank, before any rank writes (the barrier below)
        check_run_folder(out, resume=cfg.resume, overwrite=cfg.overwrite)
    rank, world, device = _distributed(cfg)
    if out is not None and world > 1:
        dist.barrier()
    task = task or get_task(cfg.task, **cfg.task_args)
    if device.type == "cpu":
        _check_memory(task, cfg)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts them)
    model = build_model(task, cfg.cell, cfg.hidden, cfg.layers, cfg.block, **cfg.options).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start, seconds, history = 0, 0.0, []
    best: tuple[dict[str, Any], dict[str, Tensor]] | None = None  # (its checkpoint record, weights)
    if cfg.resume:
        if out is None or not (out / META_FILE).exists():
            raise CheckpointError(f"nothing to resume: no {META_FILE} in {out}" if out else
                                  "nothing to resume: resume needs the run folder (out)")
        start, seconds, best = _resume(cfg, task, model, opt)
        if rank == 0:
            history = _trim_log(out / LOG_FILE, start)
    last_good = start if cfg.resume else None  # the step of the newest checkpoint on disk
    if out is not None and rank == 0:
        if cfg.overwrite:  # only now: a run refused above (memory, a bad option) deletes nothing
            clear_run_folder(out)
        out.mkdir(parents=True, exist_ok=True)
        if start == 0:
            (out / LOG_FILE).write_text("")
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    losses: list[float] = []
    interval: list[float] = []
    rules = dispatch.pin(cfg.dispatch)  # training and evaluation take the pinned table's engines
    bar = tqdm(total=cfg.steps, initial=start, file=sys.stderr, dynamic_ncols=True,
               disable=not cfg.progress or rank != 0, desc=f"{cfg.cell} {task.name}")
    tick = time.perf_counter()
    failed = True
    try:
        for step in range(start, cfg.steps):
            torch.manual_seed(seed_for(cfg.seed, rank, step, 1))  # dropout-type masks
            batch = _to(task.train_batch(torch.Generator().manual_seed(seed_for(cfg.seed, rank, step)),
                                         cfg.batch), device)
            loss = task.loss(net(batch.x), batch.y)
            mean = loss.detach().clone()
            if world > 1:
                dist.all_reduce(mean)  # every rank sees the same mean, so all stop together
                mean /= world
            value = mean.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # The norm before clipping; DDP has averaged the gradients, so every rank sees the same.
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip))
            if not (math.isfinite(value) and math.isfinite(grad_norm)):
                what = f"loss is {value}" if not math.isfinite(value) else f"gradient norm is {grad_norm}"
                raise NonFiniteLossError(_stopped(step + 1, what, out, last_good))
            if cfg.decay_steps:  # a function of the step alone, so resuming needs no scheduler state
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * min(1.0, (cfg.steps - step) / cfg.decay_steps)
            opt.step()
            losses.append(value)
            interval.append(value)
            bar.update(1)
            done = step + 1
            if done % cfg.eval_every and done != cfg.steps:
                if done % 10 == 0:
                    bar.set_postfix(loss=f"{value:.4g}", refresh=False)
                continue
            # A finite gradient with a huge --lr can still overflow the weights: never save those.
            # Every rank holds the same weights, so all stop together.
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise NonFiniteLossError(_stopped(done, "weights became non-finite", out, last_good))
            if rank == 0:
                seconds += time.perf_counter() - tick
                metrics = task.evaluate(model)
                if cfg.select:
                    metrics.update({validation_key(k): v for k, v in
                                    task.evaluate(model, split="validation").items()})
                record = {"step": done, "loss": sum(interval) / len(interval), "grad_norm": grad_norm,
                          "time": round(seconds, 3), **metrics}
                history.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4g}",
                                **{task.metric: f"{metrics[task.metric]:.4g}"})
                if cfg.select and select_record(history, task) is record:  # a new best: keep it
                    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    best = (save_best(out, done, state) if out is not None else {"step": done}, state)
                if out is not None:
                    with open(out / LOG_FILE, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    meta = _meta(cfg, task, model, seconds)
                    if best is not None:
                        meta["best"] = best[0]
                    save_checkpoint(out, done, model, opt, meta)
                tick = time.perf_counter()  # evaluation and checkpoints are not training time
            last_good = done if out is not None else None  # every rank names the same checkpoint
            interval = []
        failed = False
    finally:
        dispatch.pin(rules)
        bar.leave = not failed  # on a failure the error line alone stays on the terminal
        bar.close()
        if world > 1 and dist.is_initialized():
            dist.barrier()
    return TrainResult(model, task, history, losses, seconds, count_parameters(model),
                       None if best is None else best[1])
