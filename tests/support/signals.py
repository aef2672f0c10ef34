"""Child processes that a test stops with SIGINT, as a terminal's Ctrl-C would."""

from __future__ import annotations

import signal


def interruptible() -> None:
    """`preexec_fn` of a child that a test interrupts: SIGINT back to its default. A suite run
    as a background job (``make test &``) has SIGINT ignored, children inherit that, and Python
    then never raises KeyboardInterrupt: the child would not stop on the test's SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
