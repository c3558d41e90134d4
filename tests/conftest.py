"""pytest set-up shared by every test module.

Hypothesis: no per-example deadline and no "too slow" health check. Both are timings, and a
test must not fail because the machine is loaded (2 cores shared with other jobs in CI); the
properties themselves are what the tests check. Tests keep their own example counts.
"""
from hypothesis import HealthCheck, settings

settings.register_profile("evse-agent", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("evse-agent")
