"""Hypothesis profiles of the fuzz tests: ``ci`` (the default: every target small, so the whole
suite stays well under a minute in `make test`) and ``fuzz`` (`make fuzz`: 100,000 examples per
target), picked by DRIFTLINE_FUZZ_PROFILE."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=100_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("DRIFTLINE_FUZZ_PROFILE", "ci"))
