"""Delivery guarantees for every Faust app: idempotent producers acknowledged by all in-sync
replicas, offsets that commit only after every send made before them was delivered, and stream
partitions fetched without holes across rebalances.

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
import itertools
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import TopicPartition
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, HeadersArg, Message, RecordMetadata

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
        if not await sends_delivered(self, offsets):
            return False
        return await super()._commit_offsets(offsets, start_new_transaction)


async def sends_delivered(consumer: faust_aiokafka.Consumer, uncommitted: Mapping[TP, int]) -> bool:
    """Wait until every record the app has handed to its producer is acknowledged; if one
    failed for good, log an error naming it and the `uncommitted` offsets, crash the worker
    (exit non-zero) and return False."""
    producer = consumer.app.producer
    if not isinstance(producer, DurableProducer):
        return True
    try:
        await producer.flush()
        await producer.deliveries.settle()
    except DeliveryFailedError as exc:
        if consumer.crashed:  # said once and stopping: later commits are refused, not said again
            return False
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
            uncommitted={f"{tp.topic}[{tp.partition}]": at for tp, at in uncommitted.items()},
        )
        await consumer.crash(exc)
        return False
    return True


class OutputsLostError(Exception):
    """A batch's outputs were not delivered: the worker is stopping, and the state that would
    record them must not be written (not a `DriftlineError`: no event is to blame)."""


async def outputs_delivered(app: AppT) -> None:
    """The barrier between a batch's outputs and the state that records them.

    A table write and an output are records on different partitions, acknowledged in any
    order: a crash after the first and before the second would leave state that says an
    output was made when it was lost, and the replay would find nothing left to do. Written
    after this barrier, the state can only lag its outputs: a replay sends them again with the
    same ids and the same provenance, which consumers recognise. Raises `OutputsLostError`
    (after stopping the worker, see `sends_delivered`) if any send failed for good.
    """
    if not await sends_delivered(app.consumer, {}):
        raise OutputsLostError("outputs were not delivered; the worker stops and replays them")


@dataclass(slots=True)
class _Position:
    era: int
    """Changes at every assignment of the partition and at every start and end of a seek of
    it, never back to an earlier value: a record fetched in another era was fetched from a
    position since replaced (or by an earlier assignment)."""
    sought: bool = False
    """A seek set the fetch position since the partition was assigned, and none runs now."""
    next_offset: int | None = None
    """Where the stream resumes: the offset after the last record given to it, or the seek's
    offset; None when the seek left the position to the reset policy (nothing committed)."""
    refused: bool = False
    """Records were refused since the latest seek began: the fetch position may be past them."""


class FetchGuard:
    """Which fetched records of a stream partition its stream may be given: only those fetched
    after the partition's latest seek, from the offset it set, in order.

    After a rebalance faust-streaming resumes fetching before it seeks the stream partitions to
    their committed offsets, and delivers what it fetched from the old position after the seek.
    Its own bookkeeping then drops the refetched records as already read, or records the jump as
    a gap that a commit may pass over (upstream faust-streaming #216 and #596): records after the
    committed offset were never processed, and in kill tests they were lost for good.
    Nor may a record reach a stream before the rebalance has ended: Faust's last step of
    recovery resumes flow control, which empties every stream's queue, so records delivered
    while it seeks are dropped unacknowledged (the commit then stops before them, or a gap
    passes over them).
    A partition's records are refused during a rebalance, while it awaits its first seek after
    an assignment, while a seek of it runs, and when fetched before its latest seek. Refusing
    moves the fetch position past them, so a partition that refused records since its latest
    seek began is sought again to where its stream stands (`refetches`, once the rebalance has
    ended); a seek that begins later covers them.
    """

    def __init__(self) -> None:
        self._positions: dict[TP, _Position] = {}
        self._eras = itertools.count(1)

    def assigned(self, partitions: Iterable[TP]) -> None:
        """A new assignment: each partition's records wait for the seek that follows it."""
        self._positions = {tp: _Position(era=next(self._eras)) for tp in partitions}

    def guards(self, tp: TP) -> bool:
        """Whether `tp` is one of the guarded stream partitions of the current assignment."""
        return tp in self._positions

    def seek_started(self, tp: TP) -> None:
        """A seek of `tp` began: records fetched until it ends are refused."""
        if (position := self._new_era(tp)) is not None:
            position.sought = False
            position.refused = False

    def seek_ended(self, tp: TP, offset: int | None) -> None:
        """A seek of `tp` set its position to `offset` (None: the reset policy's start)."""
        if (position := self._new_era(tp)) is not None:
            position.sought = True
            position.next_offset = offset

    def _new_era(self, tp: TP) -> _Position | None:
        position = self._positions.get(tp)
        if position is not None:
            position.era = next(self._eras)
        return position

    def eras(self) -> dict[TP, int]:
        """Each partition's era now; take it before a fetch and pass it to `admit`."""
        return {tp: position.era for tp, position in self._positions.items()}

    def current(self, tp: TP, eras: Mapping[TP, int]) -> bool:
        """Whether a fetch begun in `eras` read `tp` from the position its latest seek set."""
        position = self._positions.get(tp)
        return position is not None and position.sought and position.era == eras.get(tp)

    def admit(self, tp: TP, offset: int, eras: Mapping[TP, int], rebalancing: bool) -> bool:
        """Whether the record at `offset` of `tp`, fetched in `eras`, goes to the stream; once
        one is refused, so is every later one until the partition is sought again, so a stream
        is never given a record after one it missed."""
        position = self._positions[tp]
        if rebalancing or not position.sought or position.era != eras.get(tp) or position.refused:
            position.refused = True
            return False
        position.next_offset = offset + 1
        return True

    def era(self, tp: TP) -> int | None:
        """The era of `tp` now (None: not a guarded stream partition)."""
        position = self._positions.get(tp)
        return None if position is None else position.era

    def refetch(self, tp: TP, offset: int) -> bool:
        """The stream of `tp` needs its records again from `offset`: the next fetch seeks back
        there. False when that was asked already."""
        position = self._positions.get(tp)
        if position is None or (position.refused and position.next_offset == offset):
            return False
        position.refused = True
        position.next_offset = offset
        return True

    def refetches(self) -> dict[TP, int | None]:
        """Partitions whose refused records must be fetched again, with the offset to seek to
        (None: the reset policy's start); a seek that begins clears its partition."""
        return {
            tp: position.next_offset
            for tp, position in self._positions.items()
            if position.refused and position.sought
        }


Take = Literal["next", "taken", "early"]
"""What a stream does with a record (`StreamProgress.take`): ``next``, process it; ``taken``,
skip it, it took it before (a refetch for another stream or a replay); ``early``, leave it
unprocessed, a record before it is missing."""


@dataclass(slots=True)
class _Ledger:
    frontier: int | None = None
    """Every offset below it is done; None until the partition's start is known (the committed
    offset, or with none the first record fetched)."""
    done: set[int] = field(default_factory=set)
    """Offsets at or above the frontier that their streams processed."""
    absent: dict[int, int] = field(default_factory=dict)
    """Ranges of offsets the broker does not have (start -> end, exclusive): a fetch went from
    one to the next record over them (compaction, transaction markers)."""
    taken: dict[str, int] = field(default_factory=dict)
    """For each stream reading the partition, the offset after the last record it took (none
    yet: the frontier)."""
    stuck_at: int | None = None
    """The frontier at the last check, if records beyond it were processed already."""


class StreamProgress:
    """Which offsets of each stream partition are done, so no commit passes a record its
    stream never processed.

    Faust derives its commits from acknowledged offsets plus "gaps" it infers from jumps in its
    own read position, and skips its check for a hole at the head when the committed offset is
    0 or missing. Under load both let commits pass records that a rebalance, a cleared stream
    queue or a restarted agent dropped: kill and stall tests lost hundreds of records with
    every group caught up. Here an offset is done only when its stream processed it (its final
    acknowledgement) or when a fetch went past it because the broker does not have it; a commit
    is held at the first offset that is neither (`limit`). A stream partition processes its
    records in order, so a hole below processed records never fills by itself: `stuck` names
    the partitions to fetch again from their hole.
    """

    def __init__(self) -> None:
        self._ledgers: dict[TP, _Ledger] = {}

    def assigned(self, partitions: Iterable[TP]) -> None:
        """A new assignment: each partition starts where the group's commit stands."""
        self._ledgers = {tp: _Ledger() for tp in partitions}

    def tracks(self, tp: TP) -> bool:
        """Whether `tp` is a stream partition of the current assignment."""
        return tp in self._ledgers

    def started(self, tp: TP, committed: int | None) -> None:
        """The group's committed offset of `tp` (None: nothing committed) after the seek that
        follows an assignment; later seeks of the same assignment keep what was done."""
        ledger = self._ledgers.get(tp)
        if ledger is not None and ledger.frontier is None and not ledger.done:
            ledger.frontier = committed

    def returned(self, tp: TP, offsets: Sequence[int], since: int | None) -> list[range]:
        """The broker returned the records of `tp` at `offsets` (in order) to a fetch from
        `since` (None: the reset policy's start): the offsets it went over are not on the broker
        (compaction, transaction markers) and count as done. Only a fetch's own records tell
        this: a jump in what reaches the streams may be records Faust dropped after the fetch.
        Returns the ranges found absent."""
        ledger = self._ledgers.get(tp)
        if ledger is None or not offsets:
            return []
        first, last = offsets[0], offsets[-1]
        if ledger.frontier is None:
            ledger.frontier = first if since is None else min(since, first)
        if last - first == len(offsets) - 1 and since in (None, first):
            return []  # contiguous: nothing absent (the common case, checked without a loop)
        absent = []
        at = since
        for offset in offsets:
            if at is not None and (start := max(at, ledger.frontier)) < offset:
                ledger.absent[start] = max(ledger.absent.get(start, offset), offset)
                absent.append(range(start, offset))
            at = offset + 1
        self._advance(ledger)
        return absent

    def take(self, tp: TP, offset: int, stream: str) -> Take:
        """Whether `stream` may process the record at `offset` now: only the next record of
        its partition may be, or one that follows it over offsets the broker does not have.
        Consumers downstream recognise a replay by its order (the highest input offset
        applied, `shared.replays`), so a record processed after a later one of its partition
        would be taken for a replay there and dropped."""
        ledger = self._ledgers.get(tp)
        if ledger is None:
            return "next"
        expected = _next_to_take(ledger, stream)
        if expected is None or offset == expected or _absent(ledger, expected, offset):
            ledger.taken[stream] = offset + 1
            return "next"
        return "taken" if offset < expected else "early"

    def next_to_take(self, tp: TP, stream: str) -> int | None:
        """The offset of the record `stream` must process next on `tp` (None: any)."""
        return _next_to_take(self._ledgers[tp], stream)

    def untake(self, tp: TP, offset: int, stream: str | None = None) -> None:
        """The record at `offset` was taken but not processed by `stream` (None: by any; its
        handling was interrupted): it must be processed before anything after it."""
        ledger = self._ledgers.get(tp)
        if ledger is None:
            return
        for reader, taken in ledger.taken.items():
            if stream in (None, reader) and offset < taken:
                ledger.taken[reader] = offset

    def processed(self, tp: TP, offset: int) -> None:
        """Every stream given the record at `offset` has processed it."""
        ledger = self._ledgers.get(tp)
        if ledger is None or ledger.frontier is None or offset < ledger.frontier:
            return
        ledger.done.add(offset)
        self._advance(ledger)

    @staticmethod
    def _advance(ledger: _Ledger) -> None:
        at = ledger.frontier
        if at is None:
            return
        while True:
            if at in ledger.done:
                ledger.done.discard(at)
                at += 1
            elif at in ledger.absent:
                at = max(at + 1, ledger.absent.pop(at))
            else:
                break
        ledger.frontier = at

    def limit(self, tp: TP) -> int | None:
        """The highest offset a commit of `tp` may name (every record below it is done); None
        when nothing may be committed yet."""
        return self._ledgers[tp].frontier

    def stuck(self) -> dict[TP, int]:
        """Partitions with records processed beyond a hole that stood since the last call, each
        with the hole's offset: the records there are no longer coming and must be fetched
        again. Call it at least a commit interval apart, so a record still on its way counts
        only when its successors are processed before it."""
        stuck: dict[TP, int] = {}
        for tp, ledger in self._ledgers.items():
            frontier = ledger.frontier if ledger.done else None
            if frontier is not None and frontier == ledger.stuck_at:
                stuck[tp] = frontier
            ledger.stuck_at = frontier
        return stuck

    def behind(self, tp: TP) -> int:
        """How many records of `tp` beyond its hole were processed already."""
        return len(self._ledgers[tp].done)


def _next_to_take(ledger: _Ledger, stream: str) -> int | None:
    taken, frontier = ledger.taken.get(stream), ledger.frontier
    if taken is None or frontier is None:
        return frontier if taken is None else taken
    return max(taken, frontier)  # the frontier passes absent offsets before a stream does


def _absent(ledger: _Ledger, start: int, end: int) -> bool:
    """Whether the broker has no record from `start` up to `end` (exclusive)."""
    at = start
    while start <= at < end and at in ledger.absent:
        at = ledger.absent[at]
    return start < end <= at


class Fetched(dict[TP, list[Any]]):
    """A fetch's records by partition, with where aiokafka's fetch of each partition stood
    when it returned them (None: not known since the last assignment or a seek to the start)."""

    def __init__(self, records: RecordMap, starts: dict[TP, int | None]) -> None:
        super().__init__(records)
        self.starts = starts


class FetchTrackingThread(faust_aiokafka.AIOKafkaConsumerThread):
    """The consumer's thread, where aiokafka's seeks and fetches run, noting where each
    partition's fetch stands between them, so where the records of a fetch began is exact
    (`StreamProgress.returned`). Seen from the app's thread a seek and a fetch overlap, and
    records fetched before a seek cannot be told from records fetched after it: taken for the
    broker's gaps, such jumps let commits pass unprocessed records."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fetch_from: dict[TP, int] = {}

    async def seek_stream(self, tp: TP, offset: int | None, to_start: bool) -> None:
        """Seek `tp` to `offset` (None: to the start if `to_start`, else leave it). Runs in
        this thread (`call_thread`)."""
        consumer = self._ensure_consumer()
        partition = TopicPartition(tp.topic, tp.partition)  # aiokafka refuses Faust's TP
        self._fetch_from.pop(tp, None)
        if offset is not None:
            consumer.seek(partition, offset)
            self._fetch_from[tp] = offset
        elif to_start:
            await consumer.seek_to_beginning(partition)
            self._fetch_from.pop(tp, None)  # a fetch may have returned records meanwhile

    async def seek_to_committed(self) -> Mapping[TP, int]:
        return await self.call_thread(self._seek_to_committed_here)

    async def _seek_to_committed_here(self) -> Mapping[TP, int]:
        committed = await self._ensure_consumer().seek_to_committed()
        self._fetch_from.clear()
        return committed

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self._fetch_from.clear()
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._fetch_from.clear()  # aiokafka fetches the new assignment from its commits
        await super().on_partitions_assigned(assigned, generation_id)

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: set[TP] | None,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> RecordMap:
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        # no await since aiokafka drained these records: no seek ran in between
        starts: dict[TP, int | None] = {}
        for tp, fetched in records.items():
            if fetched:
                starts[tp] = self._fetch_from.get(tp)
                self._fetch_from[tp] = fetched[-1].offset + 1
        return Fetched(records, starts)


class SeekGuardedConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose stream partitions are fetched without holes (see
    `FetchGuard`); table changelogs, read by recovery with its own seeks, are left alone."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.fetch_guard = FetchGuard()
        self.progress = StreamProgress()
        self._abandoned: weakref.WeakSet[Message] = weakref.WeakSet()
        self._admitted_in: weakref.WeakKeyDictionary[Message, int] = weakref.WeakKeyDictionary()
        self._holes_checked = time.monotonic()

    def _stream_partitions(self, partitions: Iterable[TP]) -> list[TP]:
        acks_enabled_for = self.app.topics.acks_enabled_for
        return [tp for tp in partitions if acks_enabled_for(tp.topic)]

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        streams = self._stream_partitions(assigned)
        self.fetch_guard.assigned(streams)
        self.progress.assigned(streams)
        await super().on_partitions_assigned(assigned, generation_id)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek every assigned partition to its committed offset, and every stream partition
        with none to the broker's first offset (``earliest``) or the reset policy's start:
        aiokafka leaves a partition whose committed offset is 0 or missing where its last fetch
        left it."""
        guard = self.fetch_guard
        streams = self._stream_partitions(self.assignment())
        for tp in streams:
            guard.seek_started(tp)
        committed = await super().seek_to_committed()
        starts: dict[TP, int | None] = {}
        for tp in streams:
            offset = committed.get(tp)
            starts[tp] = offset if offset is not None and offset >= 0 else None
        unset = [tp for tp, start in starts.items() if start is None]
        if unset and self.app.conf.consumer_auto_offset_reset == "earliest":
            # The broker's first offset, not the first record fetched: a successor of a worker
            # killed before its first commit got a fetch from further on first, took it for
            # the start and skipped everything before it (chaos T1a, 10 s session timeout).
            starts |= await self.earliest_offsets(*unset)
        for tp in streams:
            self.progress.started(tp, starts[tp])
            await self._seek_stream(tp, starts[tp])
        return committed

    async def seek(self, partition: TP, offset: int) -> None:
        if not self.fetch_guard.guards(partition):
            await super().seek(partition, offset)
            return
        self.fetch_guard.seek_started(partition)
        await self._seek_stream(partition, offset)

    def _new_consumer_thread(self) -> FetchTrackingThread:
        return FetchTrackingThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: TP) -> int | None:
        """Where a commit of `tp` may go: for a stream partition, its frontier (every record
        below it processed, or not on the broker: `StreamProgress.limit`).

        Faust reckons it from its list of acknowledged offsets, drops the list's head before
        the commit is made, and afterwards waits for a record right after the committed offset:
        once its list and the records processed disagree it never commits the partition again,
        and nothing says so. Loaded demos' routers processed and answered every record but
        stopped committing for their last 5,000-11,000. The acknowledgements the frontier has
        passed are forgotten here, as Faust forgets those it commits."""
        if not self.progress.tracks(tp):
            return super()._new_offset(tp)
        limit = self.progress.limit(tp)
        if limit is None:
            return None
        acked = self._acked[tp]
        passed = [offset for offset in acked if offset < limit]
        if passed:
            self._acked_index[tp].difference_update(passed)
            acked[:] = [offset for offset in acked if offset >= limit]
        gaps = self._gap[tp]
        if gaps and limit > 0:
            gaps.chop(0, limit)
        return limit

    async def _seek_stream(self, tp: TP, offset: int | None) -> None:
        """Seek a stream partition in the consumer's own thread, where its fetches run (a seek
        from the app's thread races them inside aiokafka's fetcher)."""
        thread = self._thread
        assert isinstance(thread, FetchTrackingThread)
        to_start = offset is None and self.app.conf.consumer_auto_offset_reset == "earliest"
        await thread.call_thread(thread.seek_stream, tp, offset, to_start)
        self._read_offset[tp] = offset or None  # as Faust's own seek sets it
        self.fetch_guard.seek_ended(tp, offset)

    def ack(self, message: Message) -> bool:
        """Acknowledge a stream record only if its stream took it.

        A stream that pulls a record from its queue while flow control is suspended (a
        rebalance) or from an earlier generation skips it unprocessed, and faust-streaming
        acknowledges it all the same: the next commit passed over it. In the zombie test a
        rebalance came while a worker's queue held 1,350 labeled records, and all of them
        were skipped and committed, never learned. A record a stream takes is tracked before
        it is processed; an untracked one stays unacknowledged, so the commit stops before it
        and the seek after the rebalance fetches it again.
        """
        if self.app.topics.acks_enabled_for(message.topic):
            if not message.tracked or message in self._abandoned:
                return False
            self.progress.processed(message.tp, message.offset)
        return super().ack(message)

    def take(self, message: Message, stream: str) -> bool:
        """Whether `stream` may process `message` now (`StreamProgress.take`). A record that
        came before the one the stream needs next (that one was dropped on its way: a cleared
        queue, a fetch Faust cut short) is left unprocessed and unacknowledged, and its
        partition is fetched again from the missing record, unless a seek since it was
        fetched does that already. One the stream took before is skipped."""
        tp = message.tp
        progress = self.progress
        verdict = progress.take(tp, message.offset, stream)  # "next" for an untracked partition
        if verdict != "early":
            return verdict == "next"
        self._forget(message)
        missing = progress.next_to_take(tp, stream)
        fetched_since_seek = self._admitted_in.get(message) == self.fetch_guard.era(tp)
        if missing is not None and fetched_since_seek and self.fetch_guard.refetch(tp, missing):
            log.info(
                "a record came before one its stream has not had; fetching from that one again",
                partition=f"{tp.topic}[{tp.partition}]",
                offset=message.offset,
                missing=missing,
                stream=stream,
            )
        return False

    def abandon(self, messages: Iterable[Message], stream: str) -> None:
        """Never acknowledge these records: their handling was interrupted (an agent cancelled
        or crashed mid-batch), and faust-streaming acknowledges a micro-batch's records when
        its generator closes, processed or not. Commits stop before them, and their partition
        is fetched again from the first of them before its stream takes anything later."""
        first: dict[TP, int] = {}
        for message in messages:
            self._forget(message)
            first[message.tp] = min(first.get(message.tp, message.offset), message.offset)
        for tp, offset in first.items():
            if self.progress.tracks(tp):
                self.progress.untake(tp, offset, stream)
                self.fetch_guard.refetch(tp, offset)

    def _forget(self, message: Message) -> None:
        """Never acknowledge `message` (its partition is fetched again, as new messages), nor
        wait for it at stop: Faust's stop waited for every such record the whole shutdown
        grace and the worker exited 70 instead of cleanly."""
        self._abandoned.add(message)
        self._unacked_messages.discard(message)

    async def _commit_offsets(
        self, offsets: Mapping[TP, int], start_new_transaction: bool = True
    ) -> bool:
        """Commit no stream partition past its first record not done (`StreamProgress.limit`);
        a held commit is logged with the partition, Faust's offset and where it was held."""
        progress = self.progress
        allowed: dict[TP, int] = {}
        for tp, offset in offsets.items():
            limit = progress.limit(tp) if progress.tracks(tp) else offset
            if limit is not None and limit < offset:
                log.warning(
                    "commit held at the first record its stream has not processed",
                    partition=f"{tp.topic}[{tp.partition}]",
                    offset=offset,
                    held_at=limit,
                )
            committed = self._committed_offset.get(tp)
            if limit is not None and (committed is None or min(offset, limit) > committed):
                allowed[tp] = min(offset, limit)
        if not allowed:
            return False
        return await super()._commit_offsets(allowed, start_new_transaction)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust's fetch, less the stream records `FetchGuard` refuses; partitions whose
        refused records must come again are sought back first."""
        guard = self.fetch_guard
        app = self.app
        refetches = {} if app.rebalancing else guard.refetches()
        for tp, offset in refetches.items():
            log.info(
                "records its stream has not processed are fetched again (refused during a"
                " rebalance or before a seek, dropped on their way, or interrupted)",
                partition=f"{tp.topic}[{tp.partition}]",
                offset=offset,
            )
            guard.seek_started(tp)
            await self._seek_stream(tp, offset)
        if not app.rebalancing:
            await self._refetch_holes()
        eras = guard.eras()
        async for tp, message in super().getmany(timeout):
            if not guard.guards(tp):
                yield tp, message
            elif guard.admit(tp, message.offset, eras, app.rebalancing):
                self._admitted_in[message] = eras[tp]
                yield tp, message

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> RecordMap:
        """The records aiokafka fetched, as the broker returned them: the one place where a
        jump between offsets means records the broker does not have (`StreamProgress.returned`).
        Faust's getmany drops some of them on their way to the streams (those of paused
        partitions, and the rest of a fetch once flow stops or the generation changes) while
        the fetch position has moved past them: taken for absent there, they were committed
        unprocessed (the loaded kill tests lost hundreds of records per partition so)."""
        guard = self.fetch_guard
        eras = guard.eras()
        records = await super()._getmany(active_partitions, timeout)
        starts = records.starts if isinstance(records, Fetched) else {}
        for tp, fetched in records.items():
            if fetched and self.progress.tracks(tp) and guard.current(tp, eras):
                offsets = [record.offset for record in fetched]
                for gap in self.progress.returned(tp, offsets, starts.get(tp)):
                    log.info(
                        "the broker has no records at these offsets (compaction, transaction"
                        " markers); they count as processed",
                        partition=f"{tp.topic}[{tp.partition}]",
                        first=gap.start,
                        last=gap.stop - 1,
                    )
        return records

    async def _refetch_holes(self) -> None:
        """Once a commit interval, fetch again each stream partition whose stream went on past
        a record that never reached it (dropped by a rebalance, a cleared queue or an abandoned
        batch): without this its commits would stay held there until the next rebalance."""
        now = time.monotonic()
        if now - self._holes_checked < self.app.conf.broker_commit_interval:
            return
        self._holes_checked = now
        for tp, offset in self.progress.stuck().items():
            log.warning(
                "records were processed past one their stream never got; fetching from it again",
                partition=f"{tp.topic}[{tp.partition}]",
                offset=offset,
                processed_beyond=self.progress.behind(tp),
            )
            self.progress.untake(tp, offset)
            self.fetch_guard.seek_started(tp)
            await self._seek_stream(tp, offset)


class DriftlineConsumer(CommitGatedConsumer, SeekGuardedConsumer):
    """The consumer of every Driftline app: commits wait for its sends, and its stream
    partitions are fetched without holes."""
