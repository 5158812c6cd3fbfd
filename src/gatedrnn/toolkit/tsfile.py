"""Read the UEA/UCR archive's ``.ts`` files with numpy alone, and find them offline.

The format (used by the aeon and sktime archives) is plain text: ``#``/``%`` comment lines, ``@key
value`` header lines, ``@data``, then one case per line with its dimensions separated by ``:``, the
values of one dimension by ``,``, ``?`` for a missing value and, when ``@classLabel true``, the label
last. Series with ``@timeStamps true`` write each value as ``(stamp,value)``; we keep the values.

The files ship inside the aeon wheel. We do not import aeon (its numba and pandas pins clash with
this project's), we only read its data folder, a folder of ``.ts`` files, or the wheel itself.

Example:
    >>> series, labels, header = parse_ts('''@problemName Toy
    ... @classLabel true a b
    ... @data
    ... 1,2,3:4,5,6:a
    ... 7,8:9,?:b''')
    >>> [s.shape for s in series], labels, header["classlabel"]
    ([(2, 3), (2, 2)], ['a', 'b'], 'true a b')
"""

from __future__ import annotations

import importlib.util
import os
import re
import zipfile
from pathlib import Path

import numpy as np

AEON_VERSION = "1.6.0"  # the release whose data folder we read; the shipped sets vary by release
ENV_VAR = "GATEDRNN_TS_DATA"
_STAMPED = re.compile(r"\(([^()]*)\)")


def parse_ts(text: str) -> tuple[list[np.ndarray], list[str], dict[str, str]]:
    """Parse the text of a ``.ts`` file.

    Returns the series, one float64 array (channels, length) per case (lengths may differ), the
    class labels as strings (empty when the file has none), and the header as lower-case keys.
    """
    header: dict[str, str] = {}
    series: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "%")):
            continue
        if not in_data:
            if not line.startswith("@"):
                raise ValueError(f"line {number}: expected a @header line before @data, got {line[:40]!r}")
            key, _, value = line[1:].partition(" ")
            if key.lower() == "data":
                in_data = True
            else:
                header[key.lower()] = value.strip()
            continue
        parts = _split_dimensions(line)
        if header.get("classlabel", "false").lower().startswith("true"):
            labels.append(parts.pop().strip())
        channels = [_parse_dimension(p, number) for p in parts]
        if len({len(c) for c in channels}) != 1:
            raise ValueError(f"line {number}: dimensions of one case differ in length")
        series.append(np.stack(channels))  # (C, L)
    if not in_data:
        raise ValueError("no @data line: this is not a .ts file")
    if len({s.shape[0] for s in series}) > 1:
        raise ValueError("cases have different numbers of dimensions")
    return series, labels, header


def _split_dimensions(line: str) -> list[str]:
    # Split on ':' outside parentheses: timestamps such as (2007-01-01 00:01:00,241.75) hold colons.
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(line):
        depth += (ch == "(") - (ch == ")")
        if ch == ":" and depth == 0:
            parts.append(line[start:i])
            start = i + 1
    return parts + [line[start:]]


def _parse_dimension(text: str, number: int) -> np.ndarray:
    text = text.strip()
    if text.startswith("("):  # timestamped: (stamp,value),(stamp,value),...
        values = [pair.rsplit(",", 1)[-1] for pair in _STAMPED.findall(text)]
    else:
        values = text.split(",")
    try:
        return np.array([np.nan if v.strip() == "?" else float(v) for v in values], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"line {number}: {err}") from None


def _aeon_data_dir() -> Path | None:
    # find_spec locates the installed package without importing (and so without running) it.
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return folder if folder.is_dir() else None


def read_ts(problem: str, split: str, source: str | os.PathLike | None = None
            ) -> tuple[list[np.ndarray], list[str], dict[str, str]]:
    """Find and parse ``{problem}_{SPLIT}.ts`` (split "train" or "test").

    Looks in ``source`` (a folder searched recursively, or an aeon ``.whl``), else in the folder or
    wheel named by the environment variable ``GATEDRNN_TS_DATA``, else in an installed aeon.
    """
    name = f"{problem}_{split.upper()}.ts"
    where = source if source is not None else os.environ.get(ENV_VAR) or _aeon_data_dir()
    if where is not None:
        path = Path(where)
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as wheel:
                hits = [n for n in wheel.namelist() if n.endswith("/" + name)]
                if hits:
                    return parse_ts(wheel.read(hits[0]).decode("utf-8"))
        elif path.is_dir():
            files = sorted(path.rglob(name))
            if files:
                return parse_ts(files[0].read_text(encoding="utf-8"))
    raise FileNotFoundError(
        f"{name} not found{f' in {where}' if where else ''}. The UEA/UCR tasks read the .ts files "
        f"shipped in the aeon wheel: `pip install aeon=={AEON_VERSION}`; or, where aeon's numba/pandas "
        f"pins clash with yours, `pip download --no-deps aeon=={AEON_VERSION} -d DIR` and set "
        f"{ENV_VAR}=DIR/aeon-{AEON_VERSION}-py3-none-any.whl (a folder of .ts files works too)."
    )
