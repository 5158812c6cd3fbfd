"""House rules that a machine can check: ruff, the layering, and file length."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PKG = ROOT / "src" / "gatedrnn"
# The floors below the interop, toolkit and CLI (what ``import gatedrnn`` loads).
CORE = ["equations", "engines", "modules", "export"]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is in the dev extra")
def test_ruff_is_clean() -> None:
    result = subprocess.run(["ruff", "check", "src", "tests", "benchmarks", "examples"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    return names


def test_core_never_imports_the_toolkit_or_matplotlib() -> None:
    for entry in CORE:
        paths = sorted((PKG / entry).rglob("*.py"))
        assert paths, entry
        for path in paths:
            for name in _imports(path):
                assert "toolkit" not in name and "interop" not in name and "cli" not in name, (path, name)
                assert not name.startswith(("matplotlib", "tqdm")), (path, name)


def test_nothing_imports_the_cli() -> None:
    for path in PKG.rglob("*.py"):
        if path.name in ("cli.py", "__main__.py"):
            continue
        assert not any(n.endswith("cli") for n in _imports(path)), path


def test_files_stay_short() -> None:
    for path in PKG.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 450, f"{path} is long: split it into two ideas"
