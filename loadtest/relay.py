"""The physical ceiling: a plain aiokafka consume → transform → produce loop.

It reads with `getmany`, parses each JSON value and adds a field (about the least real work a
stage can do), and writes whole batches per partition with `send_batch`, never awaiting a single
delivery. No framework runs here: what it reaches is what Kafka and this machine allow a Python
process. Run as its own process, as the services are:

    python -m loadtest.relay --bootstrap 127.0.0.1:39092 --source S --target T --count 100000
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import orjson
import typer
from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from shared import kafka_clients
from shared.kafka_clients import KafkaAccess


def transform(value: bytes) -> bytes:
    """The event with the time it passed the relay."""
    document = orjson.loads(value)
    document["relayed_at"] = time.time()
    return orjson.dumps(document)


async def relay(
    bootstrap: str, source: str, target: str, count: int, group: str, max_seconds: float
) -> int:
    """Forward `count` records of `source` to the same partition of `target`; return how many
    were forwarded before `max_seconds` ran out."""
    consumer = kafka_clients.consumer(
        KafkaAccess(bootstrap), source, group_id=group, auto_offset_reset="earliest"
    )
    producer = kafka_clients.producer(KafkaAccess(bootstrap), linger_ms=5, acks=1)
    await consumer.start()
    await producer.start()
    forwarded = 0
    deadline = time.monotonic() + max_seconds
    try:
        while forwarded < count and time.monotonic() < deadline:
            fetched = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, messages in fetched.items():
                batch = producer.create_batch()
                for message in messages:
                    value = transform(message.value)
                    if batch.append(key=message.key, value=value, timestamp=None) is None:
                        await _send(producer, batch, target, tp.partition)
                        batch = producer.create_batch()
                        batch.append(key=message.key, value=value, timestamp=None)
                await _send(producer, batch, target, tp.partition)
                forwarded += len(messages)
        await producer.flush()
    finally:
        await producer.stop()
        await consumer.stop()
    return forwarded


async def _send(
    producer: AIOKafkaProducer, batch: BatchBuilder, topic: str, partition: int
) -> None:
    """Hand a batch to the producer without waiting for its delivery."""
    if batch.record_count():
        await producer.send_batch(batch, topic, partition=partition)


def main(
    bootstrap: Annotated[str, typer.Option()],
    source: Annotated[str, typer.Option()],
    target: Annotated[str, typer.Option()],
    count: Annotated[int, typer.Option()],
    group: Annotated[str, typer.Option()] = "bench-relay",
    max_seconds: Annotated[float, typer.Option()] = 120.0,
) -> None:
    """Relay `count` records and print how many were forwarded."""
    print(asyncio.run(relay(bootstrap, source, target, count, group, max_seconds)))


if __name__ == "__main__":
    typer.run(main)
