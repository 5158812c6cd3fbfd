"""Type hints are checked: mypy over src/ with the configuration in pyproject.toml ([tool.mypy]).

Run it alone with ``python -m pytest -k typing``. mypy runs as a subprocess (its own process, its
own cache under .pytest_cache) so that nothing it imports leaks into the test session. The check
is clean: any mypy error fails the test, with mypy's report as the message.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
def test_typing_mypy_over_src() -> None:
    pytest.importorskip("mypy", reason="mypy is in the dev extra")
    cache = ROOT / ".pytest_cache" / "mypy"
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode != 2, out  # 2 is a crash or a bad configuration, not a finding
    assert result.returncode == 0 and "Success: no issues found" in out, f"mypy over src/:\n{out}"
