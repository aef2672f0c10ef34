"""Durable sends for every Faust app: idempotent producers acknowledged by all in-sync replicas,
and offsets that commit only after every send made before them was delivered.

faust-streaming turns idempotence and ``acks=all`` on only in ``exactly_once`` mode, and its
producer's ``flush()`` waits for in-flight batches without raising for those that failed: a
commit after it could pass over a lost output. `DurableProducer` remembers each send until
the broker acknowledges it (a dictionary entry and a done callback: no send is awaited on the
per-event path), and `CommitGatedConsumer` waits for every remembered send before it commits;
one that failed for good stops the commit and crashes the worker, so a restart replays from
the last commit instead of skipping the lost output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, HeadersArg, RecordMetadata

from shared.errors import DriftlineError
from shared.logging import get_logger

log = get_logger(__name__)

DURABLE_PRODUCER_SETTINGS: Mapping[str, Any] = {"acks": "all", "enable_idempotence": True}
"""What every Driftline producer adds to its settings: a record counts as sent once all
in-sync replicas have it, and a retried batch is written once."""


@dataclass(frozen=True, slots=True)
class FailedSend:
    """A record the broker never acknowledged."""

    topic: str
    key: bytes | None
    value_bytes: int
    error: str


class DeliveryFailedError(DriftlineError):
    """Sends failed for good; the offsets of the messages that caused them must not commit."""

    def __init__(self, failures: Sequence[FailedSend]) -> None:
        self.failures = list(failures)
        topics = sorted({f.topic for f in self.failures})
        super().__init__(
            f"{len(self.failures)} record(s) to {', '.join(topics)} were not delivered "
            f"({self.failures[0].error}); offsets stay uncommitted and a restart replays them"
        )


class Deliveries:
    """The sends of one producer not acknowledged yet, and those that failed for good.

    A failure is kept for the life of the process: once an output is lost no later commit
    may pass over it, whichever message it came from.
    """

    def __init__(self) -> None:
        self._pending: dict[asyncio.Future[Any], tuple[str, bytes | None, int]] = {}
        self.failed: list[FailedSend] = []

    def track(
        self, future: Awaitable[RecordMetadata], topic: str, key: bytes | None, value: bytes | None
    ) -> None:
        """Remember the send behind `future` until the broker answers it."""
        pending = asyncio.ensure_future(future)
        self._pending[pending] = (topic, key, len(value or b""))
        pending.add_done_callback(self._settled)

    def _settled(self, future: asyncio.Future[Any]) -> None:
        sent = self._pending.pop(future, None)
        if sent is None:  # settled already
            return
        topic, key, size = sent
        if future.cancelled():
            self.failed.append(FailedSend(topic, key, size, "send cancelled"))
        elif (exc := future.exception()) is not None:
            self.failed.append(FailedSend(topic, key, size, f"{type(exc).__name__}: {exc}"))

    @property
    def pending(self) -> int:
        """How many sends wait for the broker's answer."""
        return len(self._pending)

    async def settle(self) -> None:
        """Wait for every send made so far; raise `DeliveryFailedError` if any failed for good."""
        waiting = [future for future in self._pending if not future.done()]
        if waiting:
            await asyncio.wait(waiting)
        for future in [future for future in self._pending if future.done()]:
            self._settled(future)  # done, its callback maybe not run yet
        if self.failed:
            raise DeliveryFailedError(self.failed)


class DurableProducer(faust_aiokafka.Producer):
    """Faust's aiokafka producer, idempotent with ``acks=all`` in every processing guarantee,
    remembering each send until it is acknowledged (see `Deliveries`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.deliveries = Deliveries()

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), **DURABLE_PRODUCER_SETTINGS}

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: HeadersArg | None,
        *,
        transactional_id: str | None = None,
    ) -> Awaitable[RecordMetadata]:
        """Hand the record to the producer's batch and remember its delivery; not awaited."""
        future = await super().send(
            topic, key, value, partition, timestamp, headers, transactional_id=transactional_id
        )
        self.deliveries.track(future, topic, key, value)
        return future


class CommitGatedConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose offset commits wait for the app's sends first.

    Called by Faust's commit (its timer every ``broker_commit_every``/``_interval``, on
    rebalance and at stop) for the offsets acknowledged since the last one. Every output of
    those messages was handed to the producer before they were acknowledged; Faust's buffered
    sends (table changelogs) are flushed here first. A failed send logs an error naming its
    topic and records, crashes the worker (exit non-zero) and commits nothing.
    """

    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        producer = self.app.producer
        deliveries: Deliveries | None = getattr(producer, "deliveries", None)
        if deliveries is not None:
            try:
                await producer.flush()
                await deliveries.settle()
            except DeliveryFailedError as exc:
                log.error(
                    "sends failed; offsets not committed, stopping the worker",
                    error=str(exc),
                    records=[
                        {
                            "topic": f.topic,
                            "key": None if f.key is None else f.key.decode(errors="replace"),
                            "bytes": f.value_bytes,
                            "error": f.error,
                        }
                        for f in exc.failures[:20]
                    ],
                    uncommitted={f"{tp.topic}[{tp.partition}]": at for tp, at in offsets.items()},
                )
                await self.crash(exc)
                return False
        return await super()._commit_offsets(offsets, start_new_transaction)
