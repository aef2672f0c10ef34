"""The population stability index: how far a distribution's shares moved from a reference's.
The drift service's categorical detector alarms on it and the console's stream page shows it,
so both read the same number."""

from __future__ import annotations

import math
from collections.abc import Sequence

FLOOR = 1e-4
"""The share an empty bin or category counts as, so one empty one does not make the PSI
infinite."""


def psi(expected: Sequence[float], actual: Sequence[float], floor: float = FLOOR) -> float:
    """The PSI of `actual` shares against `expected` ones over the same bins or categories:
    sum((a - e) * ln(a / e)). Below 0.1 is usually read as stable, above 0.25 as moved."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, floor), max(a, floor)
        total += (a - e) * math.log(a / e)
    return total
