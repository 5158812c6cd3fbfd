"""Checkpoints without pickle: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint in a run folder is two files:
    weights-{step:08d}.safetensors   model weights ("model.*"), optimizer tensors ("optim.{id}.{key}"),
                                     RNG states ("rng.*")
    checkpoint.json                  format, step, the model's get_config(), the task and training
                                     settings, the optimizer's non-tensor state, the weights file's
                                     name and SHA-256
Each file is written to a temporary name, fsynced and moved into place with ``os.replace``, and
checkpoint.json goes last: it is the commit point. A crash at any moment leaves either the old
checkpoint or the new one, never a mix, and the hash catches a weights file damaged later.
Loading never runs code: ``json`` and ``safetensors`` only parse data.

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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from ..interop.io import write_atomic

FORMAT, VERSION = "gatedrnn-checkpoint", 1
META_FILE = "checkpoint.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupted or of an unknown format."""


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """``write_atomic`` (gatedrnn.interop.io: temp file, fsync, rename) of ``obj`` as indented JSON."""
    write_atomic(path, (json.dumps(obj, indent=1) + "\n").encode())


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


def _optimizer_join(tensors: dict[str, Tensor], saved: dict[str, Any],
                    opt: torch.optim.Optimizer) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, extra in saved["state"].items():
        state.setdefault(int(pid), {}).update(extra)
    groups = []
    # JSON turns tuples (Adam's betas) into lists; give each value back the type it has now.
    for group, current in zip(saved["param_groups"], opt.param_groups):
        groups.append({k: tuple(v) if isinstance(current.get(k), tuple) else v for k, v in group.items()})
    return {"state": state, "param_groups": groups}


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
    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    optim_tensors, optim_plain = _optimizer_split(optimizer)
    tensors.update(optim_tensors)
    tensors.update(rng_tensors())
    blob = save_tensors(tensors)
    weights = f"weights-{step:08d}.safetensors"
    write_atomic(folder / weights, blob)
    record = {"format": FORMAT, "version": VERSION, "step": step, **meta, "optimizer": optim_plain,
              "weights_file": weights, "sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_json(folder / META_FILE, record)
    for old in folder.glob("weights-*.safetensors"):
        if old.name != weights:
            old.unlink(missing_ok=True)
    return folder / META_FILE


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``meta`` from checkpoint.json and the tensors by group."""

    meta: dict[str, Any]
    tensors: dict[str, Tensor]

    @property
    def model_state(self) -> dict[str, Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Load the saved optimizer state into ``optimizer`` (built over the same parameters)."""
        optimizer.load_state_dict(_optimizer_join(self.tensors, self.meta["optimizer"], optimizer))

    def restore_rng(self) -> None:
        restore_rng(self.tensors)


def load_checkpoint(folder: str | os.PathLike) -> Checkpoint:
    """Read and verify the checkpoint in ``folder``; raises ``CheckpointError`` with the reason."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(f"no checkpoint in {folder}: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_path} is corrupted or truncated ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path} is not a gatedrnn checkpoint")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{meta_path} has format version {meta.get('version')}; "
                              f"this gatedrnn reads version {VERSION}")
    weights = folder / str(meta.get("weights_file", ""))
    if not weights.is_file():
        raise CheckpointError(f"checkpoint weights {weights} are missing")
    blob = weights.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise CheckpointError(f"{weights} is corrupted or truncated: its SHA-256 does not match "
                              f"the one recorded in {META_FILE}")
    try:
        tensors = load_tensors(blob)
    except SafetensorError as err:
        raise CheckpointError(f"{weights} is not a valid safetensors file ({err})") from None
    return Checkpoint(meta, tensors)
