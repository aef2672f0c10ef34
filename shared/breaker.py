"""A circuit breaker, without I/O: after `failures` outages in a row a remote model is not asked
for `reset_s` seconds, so a down endpoint costs the router a check instead of a timeout per
micro-batch; then one probe goes through, and its outcome closes or reopens the circuit.

Examples
--------
>>> now = [0.0]
>>> breaker = CircuitBreaker(failures=2, reset_s=5.0, clock=lambda: now[0])
>>> breaker.allow(), breaker.failed(), breaker.allow(), breaker.failed(), breaker.allow()
(True, None, True, None, False)
>>> now[0] = 5.0
>>> breaker.allow(), breaker.allow()  # one probe at a time
(True, False)
>>> breaker.succeeded(); breaker.state
'closed'

"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Closed (asks), open (refuses until `reset_s` passed), half open (one probe in flight)."""

    def __init__(
        self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self._reset()

    def _reset(self) -> None:
        self.state: State = "closed"
        self._in_a_row = 0
        self._opened_at = 0.0

    def allow(self) -> bool:
        """Whether a request may go out now; an open circuit past `reset_s` lets exactly one
        probe through (half open) and refuses the rest until that probe reports."""
        if self.state == "closed":
            return True
        if self.state == "open" and self.clock() - self._opened_at >= self.reset_s:
            self.state = "half_open"
            return True
        return False

    def succeeded(self) -> None:
        """The endpoint answered: close the circuit."""
        self._reset()

    def failed(self) -> None:
        """The endpoint did not answer (refused, timed out, 5xx): open the circuit after
        `failures` in a row, or at once when the probe of a half-open circuit fails."""
        self._in_a_row += 1
        if self.state == "half_open" or self._in_a_row >= self.failures:
            self.state = "open"
            self._opened_at = self.clock()

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when closed or half open)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.reset_s - (self.clock() - self._opened_at))
