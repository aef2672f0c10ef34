"""Talking to the real test broker like an outside user: plain aiokafka producers and consumers.

Each helper takes the broker as ``host:port`` (plaintext) or as a `KafkaAccess` (TLS, SASL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
from aiokafka.structs import TopicPartition

from shared import kafka_clients
from shared.events import Event, encode
from shared.kafka_clients import KafkaAccess

Broker = str | KafkaAccess
"""A plaintext ``host:port``, or how to reach a secured broker as whom."""


@dataclass(frozen=True)
class Record:
    """One consumed message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    def json(self) -> dict:
        """The value parsed as JSON."""
        return orjson.loads(self.value)


async def produce(
    bootstrap: Broker,
    topic: str,
    messages: Iterable[tuple[bytes | str | None, bytes | Event]],
    timestamps: Iterable[float] | None = None,
) -> None:
    """Send (key, value) pairs and wait until the broker has them all. `timestamps` (epoch
    seconds, one per message) stamp the records, e.g. with their events' times, as a producer
    writing each event the moment it happens would; else the producer's clock does. A stamp
    older than the topic's retention gets its record deleted at the broker's next retention
    check, before a slow consumer may have read it."""
    producer = kafka_clients.producer(_access(bootstrap), linger_ms=5)
    await producer.start()
    try:
        futures = []
        stamps = iter(timestamps) if timestamps is not None else None
        for key, value in messages:
            raw_key = key.encode() if isinstance(key, str) else key
            raw_value = encode(value) if isinstance(value, Event) else value
            stamp = int(next(stamps) * 1000) if stamps is not None else None
            futures.append(
                await producer.send(topic, key=raw_key, value=raw_value, timestamp_ms=stamp)
            )
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_until(
    bootstrap: Broker,
    topics: list[str],
    done: Callable[[list[Record]], bool],
    timeout: float = 60.0,
) -> list[Record]:
    """Read `topics` from the beginning until `done(records)` holds; fail after `timeout`."""
    consumer = kafka_clients.consumer(
        _access(bootstrap),
        *topics,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(records):
            if time.monotonic() > deadline:
                by_topic = {t: sum(r.topic == t for r in records) for t in topics}
                raise AssertionError(f"timed out after {timeout}s; records so far: {by_topic}")
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(
                    Record(m.topic, m.partition, m.offset, m.key, m.value) for m in messages
                )
    finally:
        await consumer.stop()
    return records


async def end_offsets(bootstrap: Broker, topic: str) -> dict[int, int]:
    """The next offset of every partition of `topic`."""
    # Subscribed, or the consumer's metadata lists no partitions of `topic` (and a consumer
    # stopped right after start raises CancelledError in aiokafka 0.14).
    consumer = kafka_clients.consumer(_access(bootstrap), topic, group_id=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        offsets = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in offsets.items()}
    finally:
        await consumer.stop()


def count_of(topic: str, n: int) -> Callable[[list[Record]], bool]:
    """A `done` predicate: at least `n` records from `topic`."""
    return lambda records: sum(r.topic == topic for r in records) >= n


def _access(broker: Broker) -> KafkaAccess:
    return KafkaAccess(broker) if isinstance(broker, str) else broker
