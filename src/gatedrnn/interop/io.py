"""Saving and loading models without pickle: safetensors for the tensors, JSON for the rest.

``torch.load`` of a pickled checkpoint runs whatever code the file names. A gatedrnn model file is
one safetensors file instead: a JSON header (with our metadata: format version, the module's
``get_config()``, a SHA-256 of the tensors) and raw tensor bytes. Loading parses JSON and copies
bytes; nothing in the file is ever executed.

Layers, from low to high (the toolkit's checkpoints reuse the lower two):
    write_atomic(path, data)        temp file in the same directory, fsync, os.replace
    save_tensors / load_tensors     tensors + JSON metadata, versioned and checksummed
    save_model / load_model         a gatedrnn module (or any module's weights) and its config

Every failure to read names the path: ``ValueError`` for a corrupt, truncated or foreign file,
or one written by an incompatible format version.

Example:
    >>> import os, tempfile, torch, gatedrnn
    >>> from gatedrnn.interop.io import load_model, save_model
    >>> path = os.path.join(tempfile.mkdtemp(), "gru.safetensors")
    >>> save_model(gatedrnn.GRU(3, 4, reset_after=False), path)
    >>> load_model(path)
    GRU(3, 4, reset_after=False)
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import gatedrnn

FORMAT = "gatedrnn.safetensors"
FORMAT_VERSION = 1  # bump when a file written now could not be read by the reader of then


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same directory (so ``os.replace`` is a rename on one
    file system), are flushed and fsynced, then renamed over ``path``; the directory is fsynced
    so the rename itself survives a crash.

    Example:
        >>> import os, tempfile
        >>> from pathlib import Path
        >>> from gatedrnn.interop.io import write_atomic
        >>> path = os.path.join(tempfile.mkdtemp(), "note.txt")
        >>> write_atomic(path, b"hello")
        >>> Path(path).read_bytes()
        b'hello'
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Whatever went wrong (disk full, KeyboardInterrupt), leave no temp file behind.
        Path(tmp).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename durable; Windows has no directory fds
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, Any] | None = None) -> None:
    """Write ``tensors`` and JSON-serialisable ``metadata`` to ``path``, atomically.

    Example:
        >>> import os, tempfile, torch
        >>> from gatedrnn.interop.io import load_tensors, save_tensors
        >>> path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
        >>> save_tensors(path, {"w": torch.ones(2)}, {"step": 3})
        >>> load_tensors(path)
        ({'w': tensor([1., 1.])}, {'step': 3})
    """
    # safetensors refuses tensors that share memory, and stores views whole: copy each one.
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "sha256": _digest(flat),
              "metadata": json.dumps(metadata or {})}
    write_atomic(path, st_save(flat, metadata=header))


def _header(path: Path, data: bytes) -> dict[str, str]:
    """The safetensors ``__metadata__`` of ``data``, with a ValueError naming ``path`` if unreadable."""
    if len(data) < 8:
        raise ValueError(f"{path}: not a gatedrnn model file (only {len(data)} bytes; truncated?)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError(f"{path}: truncated or not a safetensors file (header of {n} bytes "
                         f"announced, {len(data) - 8} present)")
    try:
        header = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(tensors, metadata)`` written by ``save_tensors``; see the module docstring."""
    path = Path(path)
    data = path.read_bytes()
    meta = _header(path, data)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a gatedrnn model file (no '{FORMAT}' format marker)")
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ValueError(f"{path}: written in gatedrnn file format version {version}, but this "
                         f"gatedrnn reads version {FORMAT_VERSION}; use a matching gatedrnn release")
    try:
        tensors = st_load(data)
    except SafetensorError as e:
        raise ValueError(f"{path}: corrupt or truncated tensor data ({e})") from None
    if _digest(tensors) != meta.get("sha256"):
        raise ValueError(f"{path}: checksum mismatch, the tensor data is corrupt")
    try:
        extra = json.loads(meta.get("metadata", "{}"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt metadata ({e})") from None
    return tensors, extra


def save_model(module: torch.nn.Module, path: str | os.PathLike, *,
               extra: dict[str, Any] | None = None) -> None:
    """Save ``module``'s parameters and buffers, and its ``get_config()`` when it has one.

    A gatedrnn LSTM/GRU/RNN loads back with ``load_model(path)`` alone. Any other module (for
    example a model that contains gatedrnn layers) saves its weights; load them with
    ``load_model(path, model)``, since rebuilding arbitrary code from a file is what we refuse to do.
    ``extra`` is stored as JSON next to the config (training step, metrics, ...).

    Example:
        >>> import os, tempfile, torch, gatedrnn
        >>> from gatedrnn.interop.io import load_model, save_model
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 3))
        >>> path = os.path.join(tempfile.mkdtemp(), "net.safetensors")
        >>> save_model(net, path, extra={"epoch": 3})
        >>> load_model(path, torch.nn.Sequential(torch.nn.Linear(2, 3)))
        Sequential(
          (0): Linear(in_features=2, out_features=3, bias=True)
        )
    """
    config = module.get_config() if hasattr(module, "get_config") else None
    meta = {"config": config, "extra": extra or {}, "gatedrnn_version": gatedrnn.__version__}
    save_tensors(path, module.state_dict(), meta)


def load_model(path: str | os.PathLike, model: torch.nn.Module | None = None,
               device: str | torch.device | None = None) -> torch.nn.Module:
    """Load a model saved by ``save_model``: rebuilt from its config, or into ``model``.

    The state dict must match exactly (no missing or unexpected keys). The module comes back in
    evaluation mode when rebuilt; a given ``model`` keeps its mode.

    Example:
        >>> import os, tempfile, gatedrnn
        >>> from gatedrnn.interop.io import load_model, save_model
        >>> path = os.path.join(tempfile.mkdtemp(), "lstm.safetensors")
        >>> save_model(gatedrnn.LSTM(3, 4, peephole=True), path)
        >>> load_model(path).peephole
        True
    """
    tensors, meta = load_tensors(path)
    if model is None:
        config = meta.get("config")
        if not isinstance(config, dict):
            raise ValueError(f"{path}: holds weights without a gatedrnn config; pass the model to "
                             "load them into: load_model(path, model)")
        try:
            model = gatedrnn.from_config(config)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: its config does not build a gatedrnn module ({e})") from None
        model.eval()
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ValueError(f"{path}: its tensors do not fit the model ({e})") from None
    return model if device is None else model.to(device)
