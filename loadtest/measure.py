"""The measurer: read what the pipeline wrote and turn it into throughput, latency and lag figures.

End-to-end latency of a prediction is its Kafka record timestamp (set by the router's producer
when it sends the record) minus the event's ``event_time`` (the generator's wall clock when it
created the event); both clocks are this machine's. Sustained throughput is taken between the
10th and the 90th percentile of the output timestamps, so start-up and the last stragglers do not
count. Lag is what a consumer group has not yet committed: end offsets minus committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from shared import kafka_clients
from shared.kafka_clients import KafkaAccess

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class OutputRecord:
    """One record read back from an output topic."""

    timestamp_ms: int
    value: bytes
    key: bytes | None = None
    partition: int = 0
    offset: int = 0


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) of already sorted values, nearest-rank method."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99, max and mean of end-to-end latencies in milliseconds."""
    ordered = sorted(latencies_ms)
    summary = {f"p{q}": percentile(ordered, q) for q in (50, 95, 99)}
    summary |= {"max": ordered[-1], "mean": sum(ordered) / len(ordered)}
    return {name: round(value, 2) for name, value in summary.items()}


Buckets = dict[float, float]
"""A Prometheus histogram's cumulative counts by upper bound (``le``), +Inf included."""

WORKER_HISTOGRAMS = ("driftline_processing_seconds", "driftline_end_to_end_seconds")
"""The latency histograms every worker exports per event (`shared.metrics`)."""


def histogram_buckets(metrics_text: str, name: str) -> Buckets:
    """The buckets of histogram `name` in a worker's /metrics text, summed over its series (one
    per service in a worker)."""
    buckets: Buckets = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def bucket_quantile(before: Buckets, after: Buckets, q: float) -> float | None:
    """The upper bound of the bucket holding the `q`-th percentile (0-100) of what was observed
    between two readings of one histogram; None when nothing was, or it lies past the last
    finite bound (a bucket can only tell that much)."""
    counts = sorted((bound, count - before.get(bound, 0.0)) for bound, count in after.items())
    if not counts or counts[-1][1] <= 0:
        return None
    wanted = q / 100 * counts[-1][1]
    bound = next(bound for bound, count in counts if count >= wanted)
    return None if math.isinf(bound) else bound


def worker_latency_ms(before: str, after: str) -> dict[str, dict[str, float | None]]:
    """p50 and p99 (bucket upper bounds, in ms) of each worker histogram between two readings
    of one worker's /metrics: its own view of per-event and end-to-end latency."""
    summary: dict[str, dict[str, float | None]] = {}
    for name in WORKER_HISTOGRAMS:
        start, end = histogram_buckets(before, name), histogram_buckets(after, name)
        quantiles = {f"p{q}": bucket_quantile(start, end, q) for q in (50, 99)}
        summary[name.removeprefix("driftline_").removesuffix("_seconds")] = {
            key: None if value is None else value * 1000 for key, value in quantiles.items()
        }
    return summary


def sustained_rate(timestamps_ms: Sequence[int]) -> float | None:
    """Records per second between the 10th and 90th percentile of output timestamps (first to
    last when there are few); None when there are too few or they share one millisecond."""
    ordered = sorted(timestamps_ms)
    if len(ordered) < 2:
        return None
    low, high = (len(ordered) // 10, len(ordered) * 9 // 10) if len(ordered) >= 50 else (0, -1)
    high %= len(ordered)
    span_ms = ordered[high] - ordered[low]
    return round((high - low) * 1000 / span_ms, 1) if span_ms > 0 else None


def event_latencies_ms(records: Sequence[OutputRecord]) -> list[float]:
    """Record timestamp minus the ``event_time`` the record carries, per record."""
    return [r.timestamp_ms - _epoch_ms(orjson.loads(r.value)["event_time"]) for r in records]


def _epoch_ms(value: str | float) -> float:
    if isinstance(value, int | float):
        return value * 1000
    return datetime.fromisoformat(value).timestamp() * 1000


async def partitions_of(bootstrap: str, topic: str) -> list[TopicPartition]:
    """The partitions of `topic`, from the cluster's metadata (none if it does not exist)."""
    admin = kafka_clients.admin_client(KafkaAccess(bootstrap))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]


async def topic_end(bootstrap: str, topic: str) -> int:
    """Records in `topic` so far (sum of its partitions' end offsets)."""
    partitions = await partitions_of(bootstrap, topic)
    consumer = kafka_clients.consumer(KafkaAccess(bootstrap))
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


async def wait_for_records(
    bootstrap: str, topic: str, expected: int, timeout: float, poll_s: float = 0.5
) -> int:
    """Poll `topic`'s end offsets until it holds `expected` records or `timeout` passes; return
    how many it holds. The topic may not exist yet (a table's changelog is made by its worker).
    Cheap enough to run beside a benchmark without disturbing it."""
    consumer = kafka_clients.consumer(KafkaAccess(bootstrap))
    await consumer.start()
    deadline = time.monotonic() + timeout
    partitions: list[TopicPartition] = []
    try:
        while True:
            partitions = partitions or await partitions_of(bootstrap, topic)
            held = sum((await consumer.end_offsets(partitions)).values()) if partitions else 0
            if held >= expected or time.monotonic() > deadline:
                return held
            await asyncio.sleep(poll_s)
    finally:
        await consumer.stop()


async def read_records(
    bootstrap: str, topic: str, since_ms: float = 0, timeout: float = 60.0
) -> list[OutputRecord]:
    """The records of `topic` written at or after `since_ms` (epoch ms), up to its current end,
    in timestamp order."""
    partitions = await partitions_of(bootstrap, topic)
    consumer = kafka_clients.consumer(
        KafkaAccess(bootstrap), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[OutputRecord] = []
    try:
        ends = await consumer.end_offsets(partitions)
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and await _behind(consumer, ends):
            for messages in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                records.extend(
                    OutputRecord(m.timestamp, m.value, m.key, m.partition, m.offset)
                    for m in messages
                    if m.timestamp >= since_ms
                )
    finally:
        await consumer.stop()
    records.sort(key=lambda r: r.timestamp_ms)
    return records


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


@dataclass
class LagSample:
    """Uncommitted records of one consumer group at one moment."""

    seconds: float
    group: str
    lag: int


class LagSampler:
    """Samples consumer lag of some groups on some topics until stopped (or `max_seconds`)."""

    def __init__(
        self, bootstrap: str, groups: dict[str, list[str]], interval_s: float = 1.0
    ) -> None:
        self.bootstrap = bootstrap
        self.groups = groups
        self.interval_s = interval_s
        self.samples: list[LagSample] = []
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """End the sampling loop after its current sample."""
        self._stop.set()

    async def run(self, max_seconds: float = 600.0) -> list[LagSample]:
        """Sample every `interval_s` until `stop` or `max_seconds`."""
        partitions = {
            topic: await partitions_of(self.bootstrap, topic)
            for topics in self.groups.values()
            for topic in topics
        }
        admin = kafka_clients.admin_client(KafkaAccess(self.bootstrap))
        consumer = kafka_clients.consumer(KafkaAccess(self.bootstrap))
        await admin.start()
        await consumer.start()
        started = time.monotonic()
        try:
            while not self._stop.is_set() and time.monotonic() - started < max_seconds:
                elapsed = round(time.monotonic() - started, 2)
                for group, topics in self.groups.items():
                    lag = await _lag(admin, consumer, group, [partitions[t] for t in topics])
                    self.samples.append(LagSample(elapsed, group, lag))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)
        finally:
            await consumer.stop()
            await admin.close()
        return self.samples


async def _lag(
    admin: AIOKafkaAdminClient,
    consumer: AIOKafkaConsumer,
    group: str,
    topics: list[list[TopicPartition]],
) -> int:
    return sum((await partition_lag(admin, consumer, group, topics)).values())


async def partition_lag(
    admin: AIOKafkaAdminClient,
    consumer: AIOKafkaConsumer,
    group: str,
    topics: list[list[TopicPartition]],
) -> dict[TopicPartition, int]:
    """Records `group` has not committed yet, per partition of `topics` (each topic's
    partitions)."""
    committed = await admin.list_consumer_group_offsets(group)
    lag: dict[TopicPartition, int] = {}
    for partitions in topics:
        for tp, end in (await consumer.end_offsets(partitions)).items():
            done = committed.get(tp)
            lag[tp] = end - (done.offset if done is not None and done.offset >= 0 else 0)
    return lag


def lag_summary(samples: Sequence[LagSample]) -> dict[str, dict[str, object]]:
    """Per group: the highest and the last lag, and the series as [seconds, lag] pairs."""
    summary: dict[str, dict[str, object]] = {}
    for group in dict.fromkeys(s.group for s in samples):
        series = [[s.seconds, s.lag] for s in samples if s.group == group]
        summary[group] = {
            "max": max(lag for _, lag in series),
            "last": series[-1][1],
            "series": series,
        }
    return summary


@dataclass(frozen=True)
class ProcessUsage:
    """Memory and CPU time of one process, read from ``/proc``."""

    rss_mb: float
    cpu_s: float

    @classmethod
    def of(cls, pid: int) -> ProcessUsage:
        """The current usage of process `pid`."""
        status = Path(f"/proc/{pid}/status").read_text()
        rss_kb = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")
        )
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu_ticks = int(fields[11]) + int(fields[12])
        return cls(round(rss_kb / 1024, 1), round(cpu_ticks / _CLOCK_TICKS, 2))
