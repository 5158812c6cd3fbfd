"""Suite-wide settings.

Hypothesis runs derandomized everywhere (a fixed seed per test, no example database), so a run in
CI tries exactly the examples a developer's run tried: one flaky failure would block a landing.

Without a GPU the Triton engine's tests run its kernels in Triton's interpreter. Triton reads
``TRITON_INTERPRET`` when its language is first imported, and torch's test utilities import triton
while the test files are collected (tests/test_module_db.py), so the variable is set here, before
any test file is imported, not in the Triton test files themselves.

The suite ignores any tuned plan (``GATEDRNN_PLAN=off``): it tests the shipped rules.
"""

import os

import pytest
from hypothesis import settings

# No tuned plan: the suite tests the shipped rules, whatever this machine's `gatedrnn tune` wrote
# (tests/test_plan.py points GATEDRNN_PLAN at its own files).
os.environ["GATEDRNN_PLAN"] = "off"

if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

settings.register_profile("gatedrnn", derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.load_profile("gatedrnn")


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Rules, answers and warnings of this test only; the suite's come back afterwards
    (tests/test_plan.py, tests/test_dispatch_hidden.py)."""
    from gatedrnn.engines import dispatch, plan

    monkeypatch.setattr(dispatch, "_RULES", None)
    monkeypatch.setattr(dispatch, "_CACHE", {})
    monkeypatch.setattr(dispatch, "_NAMED", {})
    monkeypatch.setattr(plan, "_WARNED", set())
    return monkeypatch
