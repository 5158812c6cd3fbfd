"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint in a run folder is two files:
    weights-{step:08d}.safetensors   model weights ("model.*"), optimizer tensors ("optim.{id}.{key}"),
                                     RNG states ("rng.*"); a gatedrnn.interop.io file, so its own
                                     SHA-256 covers every tensor and setting in it
    checkpoint.json                  format, step, the model's get_config(), the task and training
                                     settings, the optimizer's non-tensor state, the weights file's
                                     name and SHA-256, and a ``checksum`` of all of that
    best-{step:08d}.safetensors      (runs that select on a validation set) the model weights of the
                                     best evaluation so far, named with their SHA-256 in
                                     checkpoint.json's ``best`` ({"step", "file", "sha256"})
Each file is written to a temporary name, fsynced and moved into place with ``os.replace``, and
checkpoint.json goes last: it is the commit point. A crash at any moment leaves either the old
checkpoint or the new one, never a mix; the checksums catch either file damaged later. Loading
never runs code: ``json`` and ``safetensors`` only parse data, with bounds on size and nesting,
and every field is checked before use. Every failure is a ``CheckpointError`` naming the file.

A run folder is never written over unasked: ``check_run_folder`` refuses one that holds the files
of a run (``RUN_FILES``) unless the run is resumed or overwritten, and ``clear_run_folder`` deletes
exactly those files before an overwrite, so nothing of the old run outlives it.

Example:
    >>> import tempfile, torch
    >>> model = torch.nn.Linear(2, 1); opt = torch.optim.Adam(model.parameters())
    >>> folder = tempfile.mkdtemp()
    >>> _ = save_checkpoint(folder, 3, model, opt, {"note": "hi"})
    >>> ckpt = load_checkpoint(folder)
    >>> ckpt.meta["step"], ckpt.meta["note"], sorted(ckpt.model_state) == ["bias", "weight"]
    (3, 'hi', True)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..interop.io import CheckpointError, load_tensors, parse_json, save_tensors, write_atomic
from .networks import CELLS

__all__ = ["CheckpointError", "Checkpoint", "atomic_write_json", "check_run_folder", "clear_run_folder",
           "load_best", "load_checkpoint", "run_files", "save_best", "save_checkpoint", "unused_folder"]

FORMAT, VERSION = "gatedrnn-checkpoint", 2
META_FILE = "checkpoint.json"
_WEIGHTS = re.compile(r"weights-[0-9]{8}\.safetensors")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``write_atomic`` (gatedrnn.interop.io: temp file, fsync, rename) of ``obj`` as indented JSON."""
    write_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


def checksum(record: dict[str, Any]) -> str:
    """SHA-256 of ``record`` without its "checksum" field, as canonical JSON (so whitespace,
    which cannot change a value, is free, and any change of a key or value is caught)."""
    rest = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _optimizer_split(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The optimizer's state_dict as (tensors for safetensors, the rest for JSON)."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state": plain}


# The ranges torch.optim's constructors enforce ("Invalid learning rate: -1", ...), for the
# settings of the optimizers torch ships; a saved value outside them would be refused by the
# optimizer's constructor, but load_state_dict takes it silently and the next save carries it on.
_RANGES: dict[str, tuple[float, float, bool]] = {  # key: (low, high, high is open)
    "lr": (0.0, math.inf, False), "eps": (0.0, math.inf, False),
    "weight_decay": (0.0, math.inf, False), "momentum": (0.0, math.inf, False),
    "dampening": (0.0, math.inf, False), "alpha": (0.0, math.inf, False),
    "lr_decay": (0.0, math.inf, False), "initial_accumulator_value": (0.0, math.inf, False),
    "rho": (0.0, 1.0, False), "betas": (0.0, 1.0, True), "momentum_decay": (0.0, math.inf, False),
}


def _in_range(key: str, value: Any) -> bool:
    """``value`` (a number, or a tuple of them: betas) is inside torch.optim's range for ``key``;
    NaN never is (torch's ``0.0 <= lr`` is False for it too)."""
    if key not in _RANGES or isinstance(value, bool):
        return True
    lo, hi, open_hi = _RANGES[key]
    values = value if isinstance(value, tuple) else (value,)
    return all(isinstance(v, (int, float)) and lo <= v and (v < hi if open_hi else v <= hi)
               for v in values)


def _optimizer_join(where: str, tensors: dict[str, Tensor], saved: Any,
                    opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The state_dict to load into ``opt``, after checking that the saved one fits it: the same
    groups with the same settings' types, and moment tensors shaped like their parameters."""
    current = opt.state_dict()["param_groups"]
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    plain = saved.get("state") if isinstance(saved, dict) else None
    if not isinstance(groups, list) or not isinstance(plain, dict) or len(groups) != len(current):
        raise CheckpointError(f"{where}: the optimizer state does not fit this optimizer")
    out_groups = []
    for group, now in zip(groups, current):
        if not isinstance(group, dict) or set(group) != set(now) or group["params"] != now["params"]:
            raise CheckpointError(f"{where}: the optimizer's settings do not fit this optimizer "
                                  f"(saved keys {sorted(group) if isinstance(group, dict) else group})")
        fixed = {}
        for key, value in group.items():
            # JSON turns tuples (Adam's betas) into lists; give each value back the type it has now.
            want = now[key]
            value = tuple(value) if isinstance(want, tuple) and isinstance(value, list) else value
            numeric = isinstance(want, float) and isinstance(value, int) and not isinstance(value, bool)
            if not (type(value) is type(want) or numeric) or (
                    isinstance(want, tuple) and [type(v) for v in value] != [type(v) for v in want]):
                raise CheckpointError(f"{where}: optimizer setting {key!r} is {value!r}, expected "
                                      f"a {type(want).__name__}")
            if not _in_range(key, value):
                lo, hi, open_hi = _RANGES[key]
                raise CheckpointError(f"{where}: optimizer setting {key!r} is {value!r}, outside "
                                      f"torch.optim's range [{lo}, {hi}{')' if open_hi else ']'}")
            fixed[key] = value
        out_groups.append(fixed)
    params = {i: q for g, og in zip(opt.param_groups, current) for i, q in zip(og["params"], g["params"])}
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            param = params.get(int(pid)) if pid.isdigit() else None
            moment = value.dim() > 0  # Adam's step is a scalar; its moments are shaped like the param
            if param is None or (moment and (value.shape, value.dtype) != (param.shape, param.dtype)):
                raise CheckpointError(f"{where}: optimizer tensor {name!r} fits no parameter")
            state.setdefault(int(pid), {})[key] = value
    for pid, extra in plain.items():
        if not pid.isdigit() or int(pid) not in params or not isinstance(extra, dict):
            raise CheckpointError(f"{where}: optimizer state {pid!r} fits no parameter")
        state.setdefault(int(pid), {}).update(extra)
    return {"state": state, "param_groups": out_groups}


def rng_tensors() -> dict[str, Tensor]:
    """The torch generators' states (CPU, and CUDA when present)."""
    out = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def restore_rng(tensors: dict[str, Tensor]) -> None:
    """Put back the generator states that ``rng_tensors`` saved."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(folder: str | os.PathLike, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> Path:
    """Write the checkpoint of ``step`` into ``folder`` and delete older weights files.

    ``meta`` (JSON-serialisable) is stored in checkpoint.json beside the format fields. Returns the
    path of checkpoint.json.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    optim_tensors, optim_plain = _optimizer_split(optimizer)
    tensors.update(optim_tensors)
    tensors.update(rng_tensors())
    weights = f"weights-{step:08d}.safetensors"
    save_tensors(folder / weights, tensors, {"step": step})
    record = {"format": FORMAT, "version": VERSION, "step": step, **meta, "optimizer": optim_plain,
              "weights_file": weights,
              "sha256": hashlib.sha256((folder / weights).read_bytes()).hexdigest()}
    atomic_write_json(folder / META_FILE, {**record, "checksum": checksum(record)})
    best = meta.get("best", {}).get("file") if isinstance(meta.get("best"), dict) else None
    for old in [*folder.glob("weights-*.safetensors"), *folder.glob("best-*.safetensors")]:
        if old.name not in (weights, best):  # only once the commit point names the new files
            old.unlink(missing_ok=True)
    return folder / META_FILE


def save_best(folder: str | os.PathLike, step: int, state: dict[str, Tensor]) -> dict[str, Any]:
    """Write the model weights ``state`` of the evaluation at ``step`` as best-{step}.safetensors
    and return the record that ``save_checkpoint``'s meta carries as ``"best"``. Until a
    checkpoint names it, the file is not part of the run (a crash leaves the previous best)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"best-{step:08d}.safetensors"
    save_tensors(folder / name, {f"model.{k}": v for k, v in state.items()}, {"step": step})
    return {"step": step, "file": name, "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()}


def load_best(ckpt: Checkpoint) -> tuple[int, dict[str, Tensor]] | None:
    """The (step, model state) of the best evaluation that checkpoint ``ckpt`` names (runs with
    selection on a validation set), verified as the checkpoint's own weights are; None when the
    run kept no best weights."""
    best = ckpt.meta.get("best")
    if best is None:
        return None
    path = ckpt.path.parent / best["file"]
    if not path.is_file():
        raise CheckpointError(f"the best weights {path} are missing")
    if hashlib.sha256(path.read_bytes()).hexdigest() != best["sha256"]:
        raise CheckpointError(f"{path} is corrupted or truncated: its SHA-256 does not match "
                              f"the one recorded in {META_FILE}")
    tensors, extra = load_tensors(path)
    if extra != {"step": best["step"]} or not all(k.startswith("model.") for k in tensors):
        raise CheckpointError(f"{path} does not belong to {ckpt.path}")
    return best["step"], {k[len("model."):]: v for k, v in tensors.items()}


# Every file a run writes into its folder (train's log, checkpoint and weights; compare's analysis;
# the figures plots.py draws) and the tables a compare report adds beside its cells' folders.
# Overwriting deletes exactly these (and the temporary files of their atomic writes), so a folder
# named by mistake (--out ~) loses nothing else.
RUN_FILES = ("metrics.jsonl", META_FILE, "weights-*.safetensors", "best-*.safetensors",
             "analysis.safetensors",
             "learning_curves.png", "gradient_norms.png", "gates_*.png")
REPORT_FILES = (*RUN_FILES, "results.md", "results.csv")


def run_files(folder: str | os.PathLike, report: bool = False) -> list[Path]:
    """The files of a run in ``folder`` (``RUN_FILES``, and temporary files of killed writes);
    with ``report``, those of a compare report: ``REPORT_FILES``, and the runs in the sub-folders
    named by cells."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = {p for pattern in (REPORT_FILES if report else RUN_FILES)
             for glob in (pattern, f".{pattern}.w*.tmp") for p in folder.glob(glob) if not p.is_dir()}
    if report:
        for cell in CELLS:
            found.update(run_files(folder / cell))
    return sorted(found)


def check_run_folder(folder: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                     report: bool = False, cli: bool = False) -> None:
    """Refuse to write a run (``report``: a compare report) into ``folder`` when it holds one
    (``run_files``), unless resuming it or overwriting it: a ``FileExistsError`` whose message
    names the ways out, spelt as the command line's flags (``cli``) or as Python's arguments."""
    flags = ("--resume", "--overwrite", "another --out") if cli else ("resume=True", "overwrite=True",
                                                                      "another out")
    if report:  # a report is never continued
        flags = ("", *flags[1:])
    if resume and overwrite:
        raise ValueError(f"{flags[0]} continues the run in {folder} and {flags[1]} replaces it: "
                         "give one of them")
    found = run_files(folder, report)
    if not found or resume or overwrite:
        return
    shown = [str(p.relative_to(folder)) for p in found]
    names = ", ".join(shown[:3]) + (", ..." if len(shown) > 3 else "")
    ways = ([f"to continue it, pass {flags[0]}"] if flags[0] else []) + [
        f"to replace it, pass {flags[1]} (its files are deleted first)", f"or choose {flags[2]}"]
    raise FileExistsError(f"{folder} already holds {'a report' if report else 'a run'} ({names}); "
                          + "; ".join(ways))


def clear_run_folder(folder: str | os.PathLike, report: bool = False) -> None:
    """Delete the files of the run (``report``: the compare report) in ``folder``, and the cells'
    sub-folders that this leaves empty; any other file stays."""
    folder = Path(folder)
    for path in run_files(folder, report):
        path.unlink(missing_ok=True)
    if report:
        for cell in CELLS:
            sub = folder / cell
            if sub.is_dir() and not any(sub.iterdir()):
                sub.rmdir()


def unused_folder(folder: str | os.PathLike, report: bool = False) -> Path:
    """``folder`` if it holds no run (``report``: no report), else the first of ``folder-2``,
    ``folder-3``, ... that holds none."""
    base, n = Path(folder), 1
    path = base
    while run_files(path, report):
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


@dataclass
class Checkpoint:
    """A loaded, verified checkpoint: ``meta`` from checkpoint.json and the tensors by group."""

    meta: dict[str, Any]
    tensors: dict[str, Tensor]
    path: Path

    @property
    def model_state(self) -> dict[str, Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}

    @property
    def weights_path(self) -> Path:
        return self.path.parent / self.meta["weights_file"]

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Load the saved optimizer state into ``optimizer`` (built over the same parameters)."""
        state = _optimizer_join(str(self.path), self.tensors, self.meta["optimizer"], optimizer)
        try:
            optimizer.load_state_dict(state)
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{self.path}: the optimizer state does not fit ({e})") from None

    def restore_rng(self) -> None:
        restore_rng(self.tensors)


def _check_record(path: Path, meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gatedrnn checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has format version {meta.get('version')!r}; "
                              f"this gatedrnn reads version {VERSION}")
    missing = sorted({"step", "optimizer", "weights_file", "sha256", "checksum"} - set(meta))
    if missing:
        raise CheckpointError(f"{path} is incomplete: it has no {missing}")
    if meta["checksum"] != checksum(meta):
        raise CheckpointError(f"{path} is corrupted: its checksum does not match its contents")
    step, name = meta["step"], meta["weights_file"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: 'step' must be an integer >= 0, got {step!r}")
    if not isinstance(name, str) or not _WEIGHTS.fullmatch(name) or name != f"weights-{step:08d}.safetensors":
        raise CheckpointError(f"{path}: 'weights_file' must be weights-{step:08d}.safetensors, got {name!r}")
    if not isinstance(meta["sha256"], str) or not re.fullmatch("[0-9a-f]{64}", meta["sha256"]):
        raise CheckpointError(f"{path}: 'sha256' is not a SHA-256 digest")
    if not isinstance(meta["optimizer"], dict):
        raise CheckpointError(f"{path}: 'optimizer' is not a JSON object")
    best = meta.get("best")
    if best is not None:
        b_step = best.get("step") if isinstance(best, dict) else None
        if (isinstance(b_step, bool) or not isinstance(b_step, int) or not 0 < b_step <= step
                or best.get("file") != f"best-{b_step:08d}.safetensors"
                or not isinstance(best.get("sha256"), str)
                or not re.fullmatch("[0-9a-f]{64}", best["sha256"])):
            raise CheckpointError(f"{path}: 'best' must be {{step <= {step}, file "
                                  "best-{step:08d}.safetensors, sha256}}, got " + repr(best)[:200])
    return meta


def load_checkpoint(folder: str | os.PathLike) -> Checkpoint:
    """Read and verify the checkpoint in ``folder``; raises ``CheckpointError`` with the reason."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"no checkpoint in {folder}: {META_FILE} is missing")
    try:
        text = meta_path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{meta_path}: cannot read ({e.strerror or e})") from None
    meta = _check_record(meta_path, parse_json(str(meta_path), text))
    weights = folder / meta["weights_file"]
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {weights} are missing")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != meta["sha256"]:
        raise CheckpointError(f"{weights} is corrupted or truncated: its SHA-256 does not match "
                              f"the one recorded in {META_FILE}")
    tensors, extra = load_tensors(weights)
    if extra != {"step": meta["step"]} or "rng.torch" not in tensors:
        raise CheckpointError(f"{weights} does not belong to {meta_path}")
    return Checkpoint(meta, tensors, meta_path)
