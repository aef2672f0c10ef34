"""Processes beside the Faust workers (the console, the V2 gateway, the retrain job): each runs
until its container is stopped, and stops what it started whatever ended it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Iterable


async def run_until_stopped(
    stop: Callable[[], Awaitable[None]], watched: Iterable[asyncio.Task[None]] = ()
) -> None:
    """Wait for SIGTERM (a container stopped) or Ctrl-C, or for one of the `watched` tasks to
    end, whose error is then raised (a process must not serve on without a task it needs);
    then `stop`, however the wait ended."""
    terminated = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.set)
    stopping = asyncio.create_task(terminated.wait())
    try:
        done, _ = await asyncio.wait([stopping, *watched], return_when=asyncio.FIRST_COMPLETED)
        for task in done - {stopping}:
            task.result()
    finally:
        stopping.cancel()
        await stop()
