"""Suite-wide settings.

Hypothesis runs derandomized everywhere (a fixed seed per test, no example database), so a run in
CI tries exactly the examples a developer's run tried: one flaky failure would block a landing.
"""

from hypothesis import settings

settings.register_profile("gatedrnn", derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.load_profile("gatedrnn")
