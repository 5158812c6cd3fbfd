"""The command line's argparse pieces: a help formatter that shows defaults, a parser whose errors
are one line, and the argument types that check a value before any work starts (integers and
numbers in a range, devices present, files readable, folders creatable). ``gatedrnn.cli`` and the
toolkit's own sub-commands (``bench``, ``tune``) build on them.

Example:
    >>> parse = integer(1, 10)
    >>> parse("3")
    3
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

MAX_INT = 2**63 - 1  # torch's sizes and seeds are int64


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with every option's default, "(default: ...)", where it has one; descriptions and
    epilogs as written (the per-task defaults are a table)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default is argparse.SUPPRESS
        if "(default" in text or unset or not action.option_strings:
            return text
        shown = ",".join(default) if isinstance(default, (tuple, list)) else "%(default)s"
        return f"{text} (default: {shown})"


class Parser(argparse.ArgumentParser):
    """argparse, except that an error is one line on stderr (no usage block) and exit status 2,
    and an epilog may be made only when the help is printed (``lazy_epilog``)."""

    lazy_epilog: Callable[[], str] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def format_help(self) -> str:
        if self.lazy_epilog is not None:
            self.epilog = self.lazy_epilog()
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def integer(low: int, high: int = MAX_INT) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an integer in [{low}, {high}], got {text}")
        return value
    parse.__name__ = "integer"
    return parse


def real(low: float = -math.inf, high: float = math.inf, *, open_low: bool = False,
         open_high: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in the interval from low to high (ends open or closed)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = low < value if open_low else low <= value
        inside = above and (value < high if open_high else value <= high)
        if not math.isfinite(value) or not inside:
            span = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
            raise argparse.ArgumentTypeError(f"must be a finite number in {span}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


POSITIVE, COUNT = integer(1), integer(0)
PROBABILITY = real(0, 1, open_high=True)
POSITIVE_REAL = real(0, open_low=True)


def device(text: str) -> str:
    """An argparse type: "cpu", or a CUDA device that this machine has."""
    from ..interop.io import CheckpointError, check_device

    try:
        check_device("device", text)
    except CheckpointError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("device: ")) from None
    return text


def readable_file(text: str) -> str:
    """An argparse type: a file that exists and can be read."""
    path = Path(text)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text!r} is not a readable file")
    return text


def folder(text: str) -> str:
    """An argparse type: a folder that exists or can be created (nothing on the way is a file)."""
    path = Path(text)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise argparse.ArgumentTypeError(f"{text!r} cannot be a folder: {str(part)!r} is a file")
            if not os.access(part, os.W_OK | os.X_OK):
                raise argparse.ArgumentTypeError(f"{str(part)!r} is not writable")
            break
    return text
