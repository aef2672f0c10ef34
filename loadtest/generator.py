"""The load generator: produce records at a fixed rate or as fast as the producer takes them.

Records are built at the moment they are sent, so an event's ``event_time`` is its creation time
and end-to-end latency is measured from it. Sends are not awaited one by one (the producer
batches); the run stops by itself after `count` records or `max_seconds`, whichever comes first.
Optional feedback for every n-th event follows it after a delay, as late labels would.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from loadtest.workload import Record
from shared import kafka_clients
from shared.kafka_clients import KafkaAccess

_TICK_SECONDS = 0.002


DURABLE_DELIVERY_S = 300
"""How long a durable generator's record may wait for the broker."""


class UnacknowledgedError(Exception):
    """A durable generator's records were not all acknowledged: the run tells nothing."""

    def __init__(self, failed: int, first: BaseException) -> None:
        super().__init__(f"{failed} record(s) not acknowledged by the broker, first: {first!r}")


@dataclass(frozen=True)
class FeedbackPlan:
    """Labels for every `every`-th event, sent `delay_s` after the event itself."""

    topic: str
    make: Callable[[int], Record]
    delay_s: float = 1.0
    every: int = 1


@dataclass(frozen=True)
class GeneratorReport:
    """What the generator did."""

    sent: int
    feedback_sent: int
    seconds: float
    rate: float
    """Records per second actually sent (the target rate, or what the producer allowed)."""

    def as_dict(self) -> dict[str, float]:
        """The report as JSON-ready numbers."""
        return asdict(self)


async def generate(
    bootstrap: str,
    topic: str,
    make: Callable[[int, float | None], Record],
    count: int,
    rate: float | None = None,
    max_seconds: float = 120.0,
    feedback: FeedbackPlan | None = None,
    first: int = 0,
    linger_ms: int = 1,
    durable: bool = False,
) -> GeneratorReport:
    """Send records `first` .. `first + count - 1` built by `make(i, None)` to `topic`.

    With `rate` None, as fast as possible (the producer's buffer is the only brake); otherwise
    spread evenly at `rate` per second, in small bursts every couple of milliseconds.
    `durable` (fault tests): idempotent with ``acks=all``, each record retried for up to
    `DURABLE_DELIVERY_S` (a broker restart), and `UnacknowledgedError` if any was not
    delivered, so an outage of the broker never passes for a loss of the pipeline's.
    """
    options: dict[str, object] = (
        {"acks": "all", "enable_idempotence": True, "request_timeout_ms": DURABLE_DELIVERY_S * 1000}
        if durable
        else {"acks": 1}
    )
    producer = kafka_clients.producer(
        KafkaAccess(bootstrap), linger_ms=linger_ms, max_batch_size=256 * 1024, **options
    )
    await producer.start()
    deliveries: list[asyncio.Future[object]] = []

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        delivery = await producer.send(topic, key=key, value=value)
        if durable:
            deliveries.append(delivery)

    due: deque[tuple[float, int]] = deque()
    feedback_sent = sent = 0
    started = time.monotonic()
    try:
        while sent < count and time.monotonic() - started < max_seconds:
            elapsed = time.monotonic() - started
            wanted = count if rate is None else min(count, int(elapsed * rate) + 1)
            while sent < wanted:
                key, value = make(first + sent, None)
                await send(topic, key, value)
                if feedback is not None and sent % feedback.every == 0:
                    due.append((time.monotonic() + feedback.delay_s, first + sent))
                sent += 1
                if rate is None and sent % 1000 == 0:
                    feedback_sent += await _send_due(send, feedback, due)
            feedback_sent += await _send_due(send, feedback, due)
            if rate is not None:
                await asyncio.sleep(_TICK_SECONDS)
        seconds = time.monotonic() - started
        while due and time.monotonic() - started < max_seconds + (
            feedback.delay_s if feedback else 0
        ):
            feedback_sent += await _send_due(send, feedback, due)
            await asyncio.sleep(_TICK_SECONDS)
        await producer.flush()
        failed = [
            r
            for r in await asyncio.gather(*deliveries, return_exceptions=True)
            if isinstance(r, BaseException)
        ]
        if failed:
            raise UnacknowledgedError(len(failed), failed[0])
    finally:
        await producer.stop()
    return GeneratorReport(
        sent, feedback_sent, round(seconds, 3), round(sent / max(seconds, 1e-9), 1)
    )


async def _send_due(
    send: Callable[[str, bytes | None, bytes], Awaitable[None]],
    plan: FeedbackPlan | None,
    due: deque[tuple[float, int]],
) -> int:
    """Send the feedback whose time has come; return how many."""
    if plan is None:
        return 0
    now = time.monotonic()
    sent = 0
    while due and due[0][0] <= now:
        key, value = plan.make(due.popleft()[1])
        await send(plan.topic, key, value)
        sent += 1
    return sent
