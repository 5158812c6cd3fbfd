"""Saving and loading models without pickle: safetensors for the tensors, JSON for the rest.

``torch.load`` of a pickled checkpoint runs whatever code the file names. A gatedrnn model file is
one safetensors file instead: a JSON header (with our metadata: format version, the module's
``get_config()``, a SHA-256) and raw tensor bytes. Loading parses JSON and copies bytes; nothing
in the file is ever executed, and nothing is trusted before it is checked:
    - one SHA-256 covers every setting in the header and every tensor's name, dtype, shape, bytes;
    - the header is parsed only when it is small and shallow (no RecursionError, no huge parse);
    - a config must have exactly its class's keys, each of the right type and range;
    - the tensors a config describes (names and shapes, by arithmetic) must be the file's before
      any module is built; then the model is built on the meta device (no memory), and its
      tensors' names, shapes and dtypes must be the file's before anything real is allocated;
    - loading into a given model checks the file's config against the model's, and never casts.
Every failure raises ``CheckpointError`` (a ValueError) naming the file and the problem.

Layers, from low to high (the toolkit's checkpoints reuse them):
    write_atomic(path, data)        temp file in the same directory, fsync, os.replace
    save_tensors / load_tensors     tensors + JSON metadata, versioned and checksummed
    save_model / load_model         a gatedrnn module (or any module's weights) and its config

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
import itertools
import json
import math
import os
import re
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import gatedrnn
from gatedrnn.modules import quantized_convert as quantized

from .shapes import config_misfit

FORMAT = "gatedrnn.safetensors"
# Bump when a file written now could not be read by the reader of then (2: the digest covers the
# header's settings, and the configs of every gatedrnn module inside the saved one).
FORMAT_VERSION = 2
MAX_HEADER = 16 << 20  # bytes; our headers are a few kB (safetensors itself allows 100 MB)
MAX_DEPTH = 32  # nesting of JSON objects and arrays; our headers nest 3 deep, configs ~4


class CheckpointError(ValueError):
    """A model file or checkpoint is missing, damaged, foreign, or does not fit what it is loaded
    into. The message names the file and the problem."""


# --- atomic writes ----------------------------------------------------------------------------

_writing: set[str] = set()  # this process's temp files in flight (threads may save concurrently)
_writing_lock = threading.Lock()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process, or a platform without signal 0: keep its file
        pass
    return True


def _clean_stale_temps(path: Path) -> None:
    """Remove temp files that killed writes to ``path`` left behind; a write still in flight (by
    a live process, or another thread of this one) keeps its file."""
    ours = re.compile(rf"\.{re.escape(path.name)}\.(?:w(\d+)\.[0-9a-f]{{8}}|[a-z0-9_]{{8}})\.tmp")
    for tmp in path.parent.iterdir():
        match = ours.fullmatch(tmp.name)  # (the second form: mkstemp's, from older gatedrnn)
        if match is None:
            continue
        pid = int(match[1]) if match[1] else None
        with _writing_lock:
            if tmp.name in _writing or (pid is not None and pid != os.getpid() and _alive(pid)):
                continue
            tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same directory (so ``os.replace`` is a rename on one
    file system), are flushed and fsynced, then renamed over ``path``; the directory is fsynced
    so the rename itself survives a crash. Temp files of earlier writes to ``path`` that were
    killed (SIGKILL, power cut) are removed first; the writer's pid in the name tells which.

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
    _clean_stale_temps(path)
    tmp = path.parent / f".{path.name}.w{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with _writing_lock:
        _writing.add(tmp.name)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Whatever went wrong (disk full, KeyboardInterrupt), leave no temp file behind.
        tmp.unlink(missing_ok=True)
        raise
    finally:
        with _writing_lock:
            _writing.discard(tmp.name)
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the rename durable; Windows has no directory fds
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# --- bounded JSON -----------------------------------------------------------------------------

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def json_depth(text: str | bytes) -> int:
    """The deepest nesting of objects and arrays in JSON ``text``, counted without parsing (so a
    hostile file cannot drive ``json.loads`` into a RecursionError): strings out, brackets counted."""
    data = text.encode() if isinstance(text, str) else text
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(1 if b in b"[{" else -1 for b in brackets), default=0)


def parse_json(where: str, text: str | bytes, limit: int = MAX_HEADER) -> Any:
    """``json.loads`` of text that is at most ``limit`` bytes and ``MAX_DEPTH`` deep, else a
    CheckpointError naming ``where``."""
    if len(text) > limit:
        raise CheckpointError(f"{where}: {len(text)} bytes of JSON, more than the {limit} allowed")
    if json_depth(text) > MAX_DEPTH:
        raise CheckpointError(f"{where}: JSON nested more than {MAX_DEPTH} deep")
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{where}: corrupt JSON ({e})") from None


# --- tensors + metadata -----------------------------------------------------------------------

def _digest(tensors: dict[str, torch.Tensor], settings: dict[str, str]) -> str:
    """SHA-256 over the header's settings (canonical JSON), then each tensor's name, dtype, shape
    and bytes in name order: a change anywhere but in JSON whitespace changes it."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
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
    text = json.dumps(metadata or {}, allow_nan=False)
    if json_depth(text) > MAX_DEPTH:
        raise ValueError(f"{path}: metadata nested more than {MAX_DEPTH} deep cannot be read back")
    settings = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "metadata": text}
    write_atomic(path, st_save(flat, metadata={**settings, "sha256": _digest(flat, settings)}))


def _settings(path: Path, data: bytes) -> dict[str, str]:
    """The safetensors ``__metadata__`` of ``data``, parsed with bounds, or a CheckpointError."""
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a gatedrnn model file (only {len(data)} bytes; truncated?)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise CheckpointError(f"{path}: truncated or not a safetensors file (header of {n} bytes "
                              f"announced, {len(data) - 8} present)")
    header = parse_json(f"{path} (safetensors header)", data[8:8 + n])
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gatedrnn model file (no '{FORMAT}' format marker)")
    version = meta.get("format_version")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: written in gatedrnn file format version {version}, but this "
                              f"gatedrnn reads version {FORMAT_VERSION}; use a matching gatedrnn release")
    if set(meta) != {"format", "format_version", "metadata", "sha256"}:
        raise CheckpointError(f"{path}: unexpected header fields {sorted(meta)}")
    return meta


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(tensors, metadata)`` written by ``save_tensors``, verified; see the module docstring."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    meta = _settings(path, data)
    try:
        tensors = st_load(data)
    except SafetensorError as e:
        raise CheckpointError(f"{path}: corrupt or truncated tensor data ({e})") from None
    settings = {k: v for k, v in meta.items() if k != "sha256"}
    if _digest(tensors, settings) != meta["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupt")
    extra = parse_json(f"{path} (metadata)", meta["metadata"])
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: the metadata is not a JSON object")
    return tensors, extra


# --- configs ----------------------------------------------------------------------------------

def _is_int(v: Any, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_real(v: Any, lo: float = -math.inf, hi: float = math.inf, hi_open: bool = False) -> bool:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v
    return ok and (v < hi if hi_open else v <= hi)


_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
# What each key of a module's get_config() may hold. A key not named here (a newer option) must
# at least have the type of the value a freshly built module reports.
CONFIG_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "input_size": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "hidden_size": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "num_layers": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "proj_size": (lambda v: _is_int(v, 0), "an integer >= 0"),
    "chrono_max_len": (lambda v: v is None or _is_int(v, 1), "null or an integer >= 1"),
    "num_heads": (lambda v: _is_int(v, 1), "an integer >= 1"),
    "dropout": (lambda v: _is_real(v, 0, 1), "a number in [0, 1]"),
    "forget_bias": (lambda v: v is None or _is_real(v), "null or a finite number"),
    "init": (lambda v: v in ("torch", "orthogonal", "chrono"), "'torch', 'orthogonal' or 'chrono'"),
    "nonlinearity": (lambda v: v in ("tanh", "relu"), "'tanh' or 'relu'"),
    "dtype": (lambda v: v in _FLOAT_DTYPES + ("qint8",), f"one of {_FLOAT_DTYPES + ('qint8',)}"),
    "engine": (lambda v: isinstance(v, str), "a string"),
    # torch.nn takes any truth value for its own switches (bias=1); JSON keeps bools and ints.
    **{k: ((lambda v: isinstance(v, int) and v in (0, 1)), "true, false, 0 or 1") for k in
       ("bias", "batch_first", "bidirectional")},
    **{k: ((lambda v: isinstance(v, bool)), "true or false") for k in
       ("layer_norm", "peephole", "reset_after")},
    **{k: ((lambda v: _is_real(v, 0, 1, hi_open=True)), "a number in [0, 1)") for k in
       ("recurrent_dropout", "zoneout", "zoneout_cell", "weight_drop")},
}


# Options added to LSTM and GRU after files were first written, with the value such files meant.
ADDED_KEYS: dict[str, Any] = {"num_heads": 1}


def check_config(where: str, config: Any) -> dict[str, Any]:
    """``config`` if it is a complete, well-typed ``get_config()`` of a gatedrnn module: exactly
    the keys its class reports, each of the right type and range; else a CheckpointError."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: the model config is not a JSON object")
    kind = config.get("type")
    cls: Any = getattr(gatedrnn, kind, None) if isinstance(kind, str) and kind.isidentifier() else None
    if kind not in getattr(gatedrnn, "__all__", ()) or not hasattr(cls, "get_config"):
        raise CheckpointError(f"{where}: config 'type' {kind!r} is not a gatedrnn module")
    probe = cls(1, 2).get_config()  # the key set (and value types) of this gatedrnn's class
    for key, value in ADDED_KEYS.items():
        if key in probe and key not in config:
            config[key] = value  # a file written before the option: its model had this value
    missing, unknown = sorted(set(probe) - set(config)), sorted(set(config) - set(probe))
    if missing or unknown:  # no silent defaults, and nothing passed on unchecked (a "device")
        raise CheckpointError(f"{where}: the {kind} config is missing the keys {missing} and has "
                              f"unknown keys {unknown}")
    for key, value in ((k, v) for k, v in config.items() if k != "type"):
        # (Callable[..., bool]: the lambda has a second parameter, p, that binds probe[key] now)
        same_type: tuple[Callable[..., bool], str] = (
            lambda v, p=probe[key]: type(v) is type(p), f"of type {type(probe[key]).__name__}")
        ok, wanted = CONFIG_CHECKS.get(key, same_type)
        if not ok(value):
            raise CheckpointError(f"{where}: config {key!r} must be {wanted}, got {value!r}")
    if (config["dtype"] == "qint8") != str(kind).startswith("Quantized"):
        raise CheckpointError(f"{where}: config 'dtype' {config['dtype']!r} does not fit {kind}")
    return config


def check_config_fits(where: str, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
    """Before anything is built: ``tensors`` must be exactly the parameters the checked ``config``
    describes, by arithmetic (``gatedrnn.interop.shapes``); else a CheckpointError naming ``where``."""
    tensors, config, why = quantized.float_form(tensors, config)  # int8 weights: their scales
    why = why or config_misfit(tensors, config)
    if why is not None:
        raise CheckpointError(f"{where}: {why}")


def _build(where: str, config: dict[str, Any]) -> torch.nn.Module:
    try:
        return quantized.from_config(config)  # gatedrnn.from_config's, the int8 modules too
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: its config does not build a gatedrnn module ({e})") from None


def check_fit(where: str, tensors: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    """Names, shapes and dtypes of ``tensors`` must be those of the state dict ``want``."""
    missing, unexpected = sorted(set(want) - set(tensors)), sorted(set(tensors) - set(want))
    if missing or unexpected:
        raise CheckpointError(f"{where}: its tensors do not fit the model (missing {missing}, "
                              f"unexpected {unexpected})")
    for name, ref in want.items():
        got = tensors[name]
        if got.shape != ref.shape:
            raise CheckpointError(f"{where}: tensor {name!r} has shape {tuple(got.shape)} in the "
                                  f"file, the model's is {tuple(ref.shape)}")
        if got.dtype != ref.dtype:
            raise CheckpointError(f"{where}: tensor {name!r} is {got.dtype} in the file, the "
                                  f"model's is {ref.dtype} (no silent casts)")


def check_device(where: str, device: str | torch.device) -> torch.device:
    """The device to load onto: the CPU, or a CUDA device that exists; anything else refused."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(f"{where}: {device!r} is not a device ({e})") from None
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if dev.type == "cuda" and not cuda:
        raise CheckpointError(f"{where}: device {str(dev)!r} asked for, but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= cuda:
        raise CheckpointError(f"{where}: device {str(dev)!r} does not exist ({cuda} CUDA devices)")
    if dev.type not in ("cpu", "cuda"):
        raise CheckpointError(f"{where}: cannot load onto device {str(dev)!r}; use 'cpu' or 'cuda'")
    return dev


def recurrent_configs(module: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """``get_config()`` of every gatedrnn module inside ``module`` (itself included, as "")."""
    kinds = tuple(getattr(gatedrnn, p + k) for k in ("LSTM", "GRU", "RNN", "MinGRU", "MinLSTM", "SLSTM")
                  for p in ("", "Quantized"))
    return {name: m.get_config() for name, m in module.named_modules() if isinstance(m, kinds)}


def save_model(module: torch.nn.Module, path: str | os.PathLike, *,
               extra: dict[str, Any] | None = None) -> None:
    """Save ``module``'s parameters and buffers, and the ``get_config()`` of every gatedrnn
    module in it (under "recurrent", by qualified name; "" is ``module`` itself).

    A gatedrnn LSTM/GRU/RNN/MinGRU/MinLSTM/SLSTM loads back with ``load_model(path)`` alone. Any
    other module (for example a model that contains gatedrnn layers) saves its weights; load them with
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
    meta = {"recurrent": recurrent_configs(module), "extra": extra or {},
            "gatedrnn_version": gatedrnn.__version__}
    save_tensors(path, module.state_dict(), meta)


def load_model(path: str | os.PathLike, model: torch.nn.Module | None = None,
               device: str | torch.device | None = None) -> torch.nn.Module:
    """Load a model saved by ``save_model``: rebuilt from its config, or into ``model``.

    Rebuilt, the module is on ``device`` ("cpu" when None), in evaluation mode. Into a given
    ``model``, each gatedrnn module inside it must have the file's config for it (the engine
    aside), and every tensor the model's name, shape and dtype; the model keeps its mode, and
    moves only when ``device`` is given. Any failure is a ``CheckpointError`` naming ``path``.

    Example:
        >>> import os, tempfile, gatedrnn
        >>> from gatedrnn.interop.io import load_model, save_model
        >>> path = os.path.join(tempfile.mkdtemp(), "lstm.safetensors")
        >>> save_model(gatedrnn.LSTM(3, 4, peephole=True), path)
        >>> load_model(path).peephole
        True
    """
    where = str(path)
    target = check_device(where, "cpu" if device is None else device)
    tensors, meta = load_tensors(path)
    if set(meta) != {"recurrent", "extra", "gatedrnn_version"}:
        raise CheckpointError(f"{where}: unexpected metadata fields {sorted(meta)}")
    saved = meta["recurrent"]
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where}: 'recurrent' is not a JSON object")
    for name, config in saved.items():
        check_config(f"{where} (module {name!r})" if name else where, config)
    rebuilt = model is None
    if model is None:
        if "" not in saved:
            raise CheckpointError(f"{where}: holds weights without a gatedrnn config; pass the "
                                  "model to load them into: load_model(path, model)")
        check_config_fits(where, tensors, saved[""])  # arithmetic first: nothing built yet
        with torch.device("meta"):  # dtypes, and the shapes again, from the module itself
            check_fit(where, tensors, _build(where, saved[""]).state_dict())
        model = _build(where, saved[""]).eval()
    else:
        have = recurrent_configs(model)
        if set(have) != set(saved):
            raise CheckpointError(f"{where}: the file has gatedrnn modules at {sorted(saved)}, the "
                                  f"model at {sorted(have)}")
        for name, config in saved.items():
            # The engine is how a module computes, not what: a file loads into any engine.
            diff = sorted(k for k in config if k != "engine" and config[k] != have[name].get(k))
            if diff:
                raise CheckpointError(f"{where}: the file's {config['type']} "
                                      f"{'at ' + repr(name) + ' ' if name else ''}differs from the "
                                      f"model's in {diff}: {[config[k] for k in diff]} in the file, "
                                      f"{[have[name].get(k) for k in diff]} in the model")
        check_fit(where, tensors, model.state_dict())
    model.load_state_dict(tensors)
    # A rebuilt model goes to the target (the CPU by default); a given one moves only when asked.
    return model.to(target) if rebuilt or device is not None else model
