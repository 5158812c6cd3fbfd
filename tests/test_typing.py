"""Type hints are checked: mypy over src/ with the configuration in pyproject.toml ([tool.mypy]).

Run it alone with ``python -m pytest -k typing``. mypy runs as a subprocess (its own process, its
own cache under .pytest_cache) so that nothing it imports leaks into the test session.

KNOWN_ERRORS is a ratchet: the number of mypy errors per file when type checking was switched on,
to be brought to zero. A file may not get more errors than it has there, and a file that got fewer
must have its entry lowered (or removed at zero), so the count only goes down.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

KNOWN_ERRORS: dict[str, int] = {
    "src/gatedrnn/cell_modules.py": 3,
    "src/gatedrnn/cells.py": 7,
    "src/gatedrnn/checks.py": 7,
    "src/gatedrnn/export_path.py": 9,
    "src/gatedrnn/functional.py": 2,
    "src/gatedrnn/init.py": 7,
    "src/gatedrnn/interop/io.py": 1,
    "src/gatedrnn/kernels/gru.py": 10,
    "src/gatedrnn/kernels/lstm.py": 4,
    "src/gatedrnn/kernels/rnn.py": 2,
    "src/gatedrnn/kernels/rnn_op.py": 1,
    "src/gatedrnn/kernels/threads.py": 4,
    "src/gatedrnn/modules.py": 16,
    "src/gatedrnn/one_step.py": 4,
    "src/gatedrnn/reference.py": 3,
    "src/gatedrnn/toolkit/analysis.py": 5,
    "src/gatedrnn/toolkit/bench.py": 6,
    "src/gatedrnn/toolkit/compare.py": 3,
    "src/gatedrnn/toolkit/model.py": 4,
    "src/gatedrnn/toolkit/train.py": 5,
    "src/gatedrnn/toolkit/tsfile.py": 2,
}


@pytest.mark.slow
def test_typing_mypy_over_src() -> None:
    pytest.importorskip("mypy", reason="mypy is in the dev extra")
    cache = ROOT / ".pytest_cache" / "mypy"
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode in (0, 1), out  # 2 is a crash or a bad configuration, not a finding
    assert "Success" in out or "Found" in out, out
    errors = Counter(m.group(1) for m in re.finditer(r"^(\S+?\.py):\d+: error:", out, re.M))
    over = {f: n for f, n in errors.items() if n > KNOWN_ERRORS.get(f, 0)}
    under = {f: n for f, n in KNOWN_ERRORS.items() if errors.get(f, 0) < n}
    now = dict(sorted(errors.items()))
    assert not over, f"new type errors in {sorted(over)}; fix them (errors per file now: {now}):\n{out}"
    assert not under, f"fewer type errors than KNOWN_ERRORS allows: set it to {now}"
