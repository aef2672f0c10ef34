"""Duplicate ids and windowed aggregates of one ``events.raw`` partition, without Kafka.

The worker keeps this state in memory and saves each micro-batch's changes as one record (a
*segment*) in a changelog-backed table, so a batch costs one table write instead of a windowed
read and write per event, id and bucket; a worker that takes the partition over rebuilds the
state from its segments. Every change carries the source offset it came from, which makes
replaying records after a crash harmless: a record at or below the applied offset is already in
the state, so it is neither counted again nor taken for a duplicate of itself.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson


@dataclass
class Segment:
    """The changes one micro-batch made to one partition's state."""

    first_offset: int
    last_offset: int
    newest: float
    """Latest event time among its changes: it expires with the state it holds."""
    seen: list[tuple[str, int, int]] = field(default_factory=list)
    """(dedup key, dedup window index, source offset) of each new event id."""
    added: list[tuple[str, int, float, int]] = field(default_factory=list)
    """(bucket key, bucket index, value, source offset) of each value added to an aggregate
    bucket."""

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            [self.first_offset, self.last_offset, self.newest, self.seen, self.added]
        )

    @classmethod
    def from_bytes(cls, stored: bytes) -> Segment:
        first, last, newest, seen, added = orjson.loads(stored)
        # a segment written before changes carried their offsets: they lie within it
        added = [a if len(a) == 4 else [*a, first] for a in added]
        return cls(first, last, newest, [tuple(s) for s in seen], [tuple(a) for a in added])


class PartitionState:
    """Ids seen and per-bucket (count, sum) of one partition, pruned by event time.

    Dedup uses tumbling windows of `dedup_window_s`: an id is a duplicate if it was seen in its
    event's window or the one before (so within one to two windows). Aggregates use buckets of
    `bucket_s`; buckets and windows further than the retention behind the newest event time are
    dropped, and so are the segments that hold only them.
    """

    def __init__(self, partition: int, dedup_window_s: int, bucket_s: int, horizon_s: int) -> None:
        self.partition = partition
        self.dedup_window_s = dedup_window_s
        self.bucket_s = bucket_s
        self.retention_s = max(2 * dedup_window_s, horizon_s + bucket_s)
        self.applied_offset = -1
        self.newest = -math.inf
        self._seen: dict[int, dict[str, int]] = {}
        self._buckets: dict[int, dict[str, list[float]]] = {}
        self._segments: deque[tuple[str, float]] = deque()
        self._pending: Segment | None = None

    def seen_before(self, key: str, event_time: float, offset: int) -> bool:
        """Whether `key` came before from another record (see `remember`)."""
        window = int(event_time // self.dedup_window_s)
        for index in (window, window - 1):
            ids = self._seen.get(index)
            if ids is not None and key in ids:
                return ids[key] != offset
        return False

    def remember(self, key: str, event_time: float, offset: int) -> None:
        """Remember that the record at `offset` brought `key` (once: a replayed record is
        remembered already)."""
        window = int(event_time // self.dedup_window_s)
        if offset > self.applied_offset and window >= self._oldest(self.dedup_window_s):
            self._seen.setdefault(window, {})[key] = offset
            self._change(offset, event_time).seen.append((key, window, offset))

    def counts(self, event_time: float, offset: int) -> bool:
        """Whether `add` counts a value of the record at `offset`: not a replay of a record
        applied already, and not older than the buckets kept."""
        bucket = int(event_time // self.bucket_s)
        return offset > self.applied_offset and bucket >= self._oldest(self.bucket_s)

    def add(self, key: str, event_time: float, value: float, offset: int) -> None:
        """Count `value` in its bucket (once: a replayed record is already counted)."""
        if not self.counts(event_time, offset):
            return
        bucket = int(event_time // self.bucket_s)
        self._add(key, bucket, value)
        self._change(offset, event_time).added.append((key, bucket, value, offset))

    def window(
        self, key: str, event_time: float, minutes: int, adding: float | None = None
    ) -> tuple[float, float]:
        """(count, sum) over the buckets a window of `minutes` ending at `event_time` touches
        (its oldest bucket may lie partly before the window). `adding` is a value not added yet,
        counted in `event_time`'s bucket as `add` would count it, so that what an event's
        window will hold is known before the state changes."""
        last = int(event_time // self.bucket_s)
        count = total = 0.0
        for bucket in range(last - math.ceil(minutes * 60 / self.bucket_s) + 1, last + 1):
            keys = self._buckets.get(bucket)
            stored = keys.get(key) if keys is not None else None
            if bucket == last and adding is not None:
                before = stored or (0.0, 0.0)
                stored = [before[0] + 1, before[1] + adding]
            if stored is not None:
                count += stored[0]
                total += stored[1]
        return count, total

    def seal(self) -> tuple[str, bytes] | None:
        """The table key and value of this batch's segment (None if nothing changed)."""
        segment, self._pending = self._pending, None
        if segment is None:
            return None
        key = f"{self.partition}:{segment.first_offset}"
        self.applied_offset = max(self.applied_offset, segment.last_offset)
        self._segments.append((key, segment.newest))
        return key, segment.to_bytes()

    def expire(self) -> list[str]:
        """Drop what lies beyond the retention; the table keys of segments to delete."""
        self._seen = _newer(self._seen, self._oldest(self.dedup_window_s))
        self._buckets = _newer(self._buckets, self._oldest(self.bucket_s))
        expired: list[str] = []
        # a segment goes once all it holds is older than the oldest window or bucket kept
        before = self.newest - self.retention_s - max(self.dedup_window_s, self.bucket_s)
        while self._segments and self._segments[0][1] < before:
            expired.append(self._segments.popleft()[0])
        return expired

    def load(self, segments: Iterable[tuple[str, bytes]]) -> None:
        """Rebuild from the segments this partition's table holds (any order).

        Segments may overlap: a worker paused past its session timeout (a zombie) can still
        write the segment of a batch its successor replayed in batches of other bounds. Each
        change is applied once: those at or below the offsets of the segments before it are
        skipped."""
        decoded = [(key, Segment.from_bytes(stored)) for key, stored in segments]
        for key, segment in sorted(decoded, key=lambda s: (s[1].first_offset, s[1].last_offset)):
            before = self.applied_offset
            for dedup_key, window, offset in segment.seen:
                if offset > before:
                    self._seen.setdefault(window, {})[dedup_key] = offset
            for bucket_key, bucket, value, offset in segment.added:
                if offset > before:
                    self._add(bucket_key, bucket, value)
            self.applied_offset = max(self.applied_offset, segment.last_offset)
            self.newest = max(self.newest, segment.newest)
            self._segments.append((key, segment.newest))

    def _change(self, offset: int, event_time: float) -> Segment:
        if self._pending is None:
            self._pending = Segment(offset, offset, event_time)
        self._pending.last_offset = max(self._pending.last_offset, offset)
        self._pending.newest = max(self._pending.newest, event_time)
        self.newest = max(self.newest, event_time)
        return self._pending

    def _add(self, key: str, bucket: int, value: float) -> None:
        stored = self._buckets.setdefault(bucket, {}).setdefault(key, [0.0, 0.0])
        stored[0] += 1
        stored[1] += value

    def _oldest(self, size: int) -> float:
        """The oldest window or bucket index still kept, for windows or buckets of `size`."""
        if self.newest == -math.inf:
            return -math.inf
        return (self.newest - self.retention_s) // size


def _newer(by_index: dict[int, dict], oldest: float) -> dict[int, dict]:
    if all(index >= oldest for index in by_index):
        return by_index
    return {index: kept for index, kept in by_index.items() if index >= oldest}
