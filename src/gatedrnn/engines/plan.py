"""A tuned plan: this machine's measured borders between the engines, saved for later processes.

``gatedrnn.tune()`` (or ``gatedrnn tune``) times the engines on this machine and writes a plan;
``engine="auto"`` then follows the plan's entries where one matches a call and the shipped rules
(``dispatch.TABLE``) elsewhere, as FFTW follows its saved wisdom and cuDNN its benchmark cache.
An entry is a ``dispatch.Row``: borders in batch, work T·B·H (N·H for a cell) and, where it moves
the border, hidden size H, for one cell kind, dtype, mode, input kind (plain, packed, proj_size)
and thread count, so it also decides the shapes between and beyond the ones measured. A plan
file of the first version (no hidden-size borders) is read with its entries deciding any H.

The plan is a small JSON file, ``plan.json`` under the user's cache directory (``$XDG_CACHE_HOME``
or ``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows, then
``gatedrnn/``). ``GATEDRNN_PLAN=/path/file.json`` names another file; ``GATEDRNN_PLAN=off``
ignores every plan (the test suite sets it; the published runs pin a frozen table instead). A
plan is used only on the machine and build it was measured on: it records the CPU's feature flags,
torch's version and a hash of the shipped table and the engines' sources, and each entry its thread
count (read per call). It is written atomically (a temporary file, then ``os.replace``); a damaged
file is ignored with one warning and never breaks a forward. It is read once per process, at the
first call that asks ``auto``.

Example:
    >>> from gatedrnn.engines import plan
    >>> plan.default_path().name
    'plan.json'
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import machine
from .rows import Row

ENV = "GATEDRNN_PLAN"
VERSION = 2  # 2: entries may have hidden-size borders (min_hidden, max_hidden)
READABLE = (1, 2)  # a version-1 entry has no hidden-size border: it decides any hidden size
ENGINES = ("native", "fused", "fused-float32")  # what an entry may name: auto's CPU choices
_LOG = logging.getLogger("gatedrnn")
_WARNED: set[str] = set()  # the files a warning was given for (one per file and process)
_FIELDS = {f.name: f for f in dataclasses.fields(Row)}
_BOOLS = {"torch_op", "simple", "proj", "training", "triton", "amx", "bf16"}
_COUNTS = {"min_batch", "min_work", "min_threads", "min_hidden"}
_LIMITS = {"max_batch", "max_work", "max_threads", "max_hidden"}
_HERE = Path(__file__).resolve().parent
# The sources whose change can move a border: the kernels and the fast paths that route to them.
_SOURCES = ("kernels/*.py", "one_step.py", "step_grad.py", "lean_path.py", "stack.py")


class PlanWarning(UserWarning):
    """A plan file that could not be read (damaged, truncated, or not a plan): it is ignored."""


@dataclass
class Plan:
    """A plan: the machine key it was measured under and its entries (row, what was measured)."""

    key: dict[str, str]
    entries: list[tuple[Row, str]] = field(default_factory=list)
    path: Path | None = None


def default_path() -> Path:
    """``plan.json`` in gatedrnn's folder of the user's cache directory (see the module docstring)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gatedrnn" / "plan.json"


def path() -> Path | None:
    """The plan file this process uses: ``GATEDRNN_PLAN``'s, or the default; None when it is off."""
    given = os.environ.get(ENV, "").strip()
    if given.lower() == "off":
        return None
    return Path(given).expanduser() if given else default_path()


def source_hash(table: Sequence[Row]) -> str:
    """A hash of the shipped table and the engines' sources: an editable install's version string
    does not change between commits, these do."""
    h = hashlib.sha256(repr(tuple(table)).encode())
    for pattern in _SOURCES:
        for file in sorted(_HERE.glob(pattern)):
            h.update(file.name.encode())
            h.update(file.read_bytes())
    return h.hexdigest()[:16]


def machine_key(table: Sequence[Row], cpu: machine.CPU | None = None) -> dict[str, str]:
    """What a plan must have been measured under to be used here."""
    cpu = cpu or machine.detect()
    return {"cpu": cpu.key(), "torch": torch.__version__, "source": source_hash(table)}


def row_to_json(row: Row) -> dict[str, Any]:
    """The fields of ``row`` that differ from the defaults (tuples as lists)."""
    out: dict[str, Any] = {}
    for name, f in _FIELDS.items():
        value = getattr(row, name)
        if name == "engine" or value != f.default:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def row_from_json(data: Any) -> Row:
    """A plan entry back into a Row, every field checked (ValueError otherwise): a file edited by
    hand or cut short must not reach ``choose`` with a wrong type."""
    if not isinstance(data, dict) or data.get("engine") not in ENGINES:
        raise ValueError(f"not a plan entry: {data!r:.80}")
    kw: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = tuple(value)
        if name in _BOOLS:
            ok = value is None or type(value) is bool
        elif name in _COUNTS:
            ok = type(value) is int and value >= (1 if name == "min_threads" else 0)
        elif name in _LIMITS:
            ok = value is None or (type(value) is int and value >= 0)
        elif name in _FIELDS:
            ok = value is None or isinstance(value, (str, tuple))
        else:
            raise ValueError(f"unknown field {name!r}")
        if not ok:
            raise ValueError(f"field {name!r} has a wrong value: {value!r:.40}")
        kw[name] = value
    return Row(**kw)


def to_json(p: Plan) -> str:
    return json.dumps({"version": VERSION, "key": p.key,
                       "entries": [{"row": row_to_json(r), "note": n} for r, n in p.entries]},
                      indent=1)


def from_json(text: str) -> Plan:
    """Parse a plan file's text (ValueError, KeyError or TypeError when it is not one)."""
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("version") not in READABLE:
        raise ValueError(f"not a plan of a version this gatedrnn reads {READABLE}")
    key = data["key"]
    if not isinstance(key, dict) or not all(isinstance(v, str) for v in key.values()):
        raise ValueError("the plan's machine key is malformed")
    entries = []
    for e in data["entries"]:
        note = e.get("note", "")
        if not isinstance(note, str):
            raise ValueError("a note is not a string")
        entries.append((row_from_json(e["row"]), note))
    return Plan(dict(key), entries)


def read(file: Path) -> Plan | None:
    """The plan in ``file``; None (with one warning per file) when it cannot be read as one, and
    None without a word when there is no file."""
    try:
        text = file.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        _damaged(file, err)
        return None
    try:
        found = from_json(text)
    except (ValueError, KeyError, TypeError) as err:  # (json's errors are ValueErrors)
        _damaged(file, err)
        return None
    found.path = file
    return found


def _damaged(file: Path, err: BaseException) -> None:
    """One warning per file and process: every call would otherwise warn again."""
    if str(file) not in _WARNED:
        _WARNED.add(str(file))
        warnings.warn(f"gatedrnn: ignoring the tuned plan {file} ({type(err).__name__}: "
                      f"{str(err)[:120]}); engine='auto' follows the shipped rules. Run "
                      "`gatedrnn tune` to write a new one, or `gatedrnn tune --clear`.",
                      PlanWarning, stacklevel=3)


def load(table: Sequence[Row]) -> Plan | None:
    """This process's plan when it was measured on this machine and build; None otherwise (no
    file, ``GATEDRNN_PLAN=off``, damaged: one warning, or another machine's: a debug line)."""
    file = path()
    if file is None or not file.exists():
        return None
    found = read(file)
    if found is None:
        return None
    if found.key != machine_key(table):
        _LOG.debug("gatedrnn: the plan %s was measured on another machine or build; not used", file)
        return None
    return found


def save(p: Plan, file: Path) -> Path:
    """Write ``p`` to ``file`` atomically: a reader sees the old plan or the new one, never half."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".plan-", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(to_json(p))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return file


def clear(file: Path | None = None) -> bool:
    """Remove the plan file (this process's, by default); True when there was one."""
    file = file or path()
    if file is None:
        return False
    try:
        file.unlink()
    except FileNotFoundError:
        return False
    return True
