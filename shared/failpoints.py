"""Failpoints: named places in the code where a worker can be made to die on purpose, so a
fault test stops it exactly there rather than wherever a signal lands.

``DRIFTLINE_FAILPOINTS="outputs-delivered=3"`` makes the worker exit (status `EXIT_STATUS`,
without flushing or committing anything, as SIGKILL would) the third time it passes
``outputs-delivered``: after a micro-batch's outputs were acknowledged and before the state
that records them is written. Unset, each point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys

from shared.logging import get_logger

log = get_logger(__name__)

ENV = "DRIFTLINE_FAILPOINTS"
EXIT_STATUS = 137
"""What a worker killed with SIGKILL reports to a shell."""
POINTS = frozenset({"outputs-delivered"})


def parse(spec: str) -> dict[str, int]:
    """``name=count[,name=count...]`` as a dict; raises ValueError naming what is wrong."""
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, equals, count = item.partition("=")
        if name not in POINTS or not equals or not count.isdigit() or int(count) < 1:
            raise ValueError(
                f"{ENV}: {item!r} is not name=count with a count >= 1 and a name among "
                f"{', '.join(sorted(POINTS))}"
            )
        armed[name] = int(count)
    return armed


_armed = parse(os.environ.get(ENV, ""))


def reached(name: str) -> None:
    """Count a pass through the failpoint `name`; exit at once on the pass it is armed for."""
    remaining = _armed.get(name)
    if remaining is None:
        return
    if remaining > 1:
        _armed[name] = remaining - 1
        return
    log.error("failpoint reached; exiting at once", failpoint=name, exit_status=EXIT_STATUS)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_STATUS)
