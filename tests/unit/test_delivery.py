"""The durable producer's bookkeeping (`shared.delivery`): every send is remembered until the
broker answers it, and a commit waits for them all and refuses to pass over one that failed.
On the real broker: tests/integration/test_worker_lifecycle.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from shared.app import create_app
from shared.delivery import (
    DURABLE_PRODUCER_SETTINGS,
    CommitGatedConsumer,
    Deliveries,
    DeliveryFailedError,
    DriftlineConsumer,
    DurableProducer,
    Fetched,
    FetchGuard,
    FetchTrackingThread,
    StreamProgress,
)
from shared.settings import DriftlineSettings, IngestionSettings
from tests.support.faust_doubles import isolate_prometheus


async def test_every_app_has_an_idempotent_acks_all_producer_and_a_commit_gated_consumer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_prometheus(monkeypatch)
    app = create_app("factory", DriftlineSettings(data_dir=tmp_path), IngestionSettings())

    assert isinstance(app.producer, DurableProducer)
    assert isinstance(app.consumer, CommitGatedConsumer)
    assert isinstance(app.consumer, DriftlineConsumer)
    assert app.conf.processing_guarantee.value == "at_least_once"
    producer = app.producer._new_producer()
    try:
        assert producer._txn_manager is not None  # aiokafka's idempotence bookkeeping
        assert producer._sender._acks == -1
    finally:
        await producer.stop()


def test_the_durable_producer_settings_are_idempotent_with_acks_all() -> None:
    assert DURABLE_PRODUCER_SETTINGS == {"acks": "all", "enable_idempotence": True}


async def test_settle_waits_for_pending_sends_and_raises_for_one_that_failed() -> None:
    deliveries = Deliveries()
    loop = asyncio.get_running_loop()
    delivered, lost = loop.create_future(), loop.create_future()
    deliveries.track(delivered, "out", b"k1", b"value")
    deliveries.track(lost, "out", b"k2", b"x" * 10)
    assert deliveries.pending == 2

    loop.call_later(0.01, delivered.set_result, None)
    loop.call_later(0.02, lost.set_exception, MessageSizeTooLargeError())
    with pytest.raises(DeliveryFailedError, match="1 record\\(s\\) to out were not delivered"):
        await deliveries.settle()

    assert deliveries.pending == 0
    assert [(f.topic, f.key, f.value_bytes) for f in deliveries.failed] == [("out", b"k2", 10)]
    with pytest.raises(DeliveryFailedError):  # a lost output blocks every later commit
        await deliveries.settle()


async def test_settle_passes_when_every_send_was_delivered() -> None:
    deliveries = Deliveries()
    sent = asyncio.get_running_loop().create_future()
    deliveries.track(sent, "out", None, None)
    sent.set_result(None)
    await deliveries.settle()
    assert deliveries.pending == 0
    assert not deliveries.failed


async def test_settle_sees_a_failure_whose_callback_has_not_run_yet() -> None:
    deliveries = Deliveries()
    lost = asyncio.get_running_loop().create_future()
    deliveries.track(lost, "out", b"k", b"v")
    lost.set_exception(MessageSizeTooLargeError())  # its done callback is only scheduled

    with pytest.raises(DeliveryFailedError):
        await deliveries.settle()
    await asyncio.sleep(0)  # the callback runs now and finds it settled
    assert len(deliveries.failed) == 1


LABELED = TP("predictions.labeled", 0)
OTHER = TP("predictions.labeled", 1)


def _sought(at: int | None) -> FetchGuard:
    guard = FetchGuard()
    guard.assigned([LABELED, OTHER])
    for tp in (LABELED, OTHER):
        guard.seek_started(tp)
        guard.seek_ended(tp, at)
    return guard


def test_records_wait_for_the_seek_that_follows_an_assignment() -> None:
    guard = FetchGuard()
    guard.assigned([LABELED])
    eras = guard.eras()
    assert not guard.admit(LABELED, 120, eras, False)  # fetched from wherever the old position was
    guard.seek_started(LABELED)  # sets the position anew: what was refused before is covered
    guard.seek_ended(LABELED, 100)
    assert guard.refetches() == {}
    eras = guard.eras()
    assert [guard.admit(LABELED, offset, eras, False) for offset in (100, 101, 102)] == [True] * 3


def test_records_refused_while_a_seek_runs_are_fetched_again_after_it() -> None:
    guard = FetchGuard()
    guard.assigned([LABELED])
    guard.seek_started(LABELED)
    # fetched after the broker-side seek took effect, before it was known here
    assert not guard.admit(LABELED, 100, guard.eras(), False)
    assert guard.refetches() == {}  # not before the seek has ended
    guard.seek_ended(LABELED, 100)
    assert guard.refetches() == {LABELED: 100}


def test_a_record_fetched_before_the_latest_seek_is_refused_and_fetched_again() -> None:
    guard = _sought(100)
    before = guard.eras()
    assert guard.admit(LABELED, 100, before, False)
    assert guard.admit(OTHER, 7, before, False)

    guard.seek_started(LABELED)  # e.g. recovery's seek to the committed offset, mid-batch
    guard.seek_ended(LABELED, 90)
    assert not guard.admit(LABELED, 101, before, False)
    assert not guard.admit(LABELED, 102, before, False)
    assert guard.admit(OTHER, 8, before, False)  # another partition's records still flow
    assert guard.refetches() == {LABELED: 90}

    guard.seek_started(LABELED)
    guard.seek_ended(LABELED, 90)
    assert guard.refetches() == {}
    after = guard.eras()
    assert guard.admit(LABELED, 90, after, False)


def test_the_refetch_resumes_after_the_last_record_given_to_the_stream() -> None:
    guard = _sought(100)
    eras = guard.eras()
    assert guard.admit(LABELED, 100, eras, False)
    assert guard.admit(LABELED, 101, eras, False)
    assert not guard.admit(LABELED, 102, {}, False)  # fetched in another era
    assert guard.refetches() == {LABELED: 102}


def test_a_fresh_fetch_may_jump_over_offsets_the_broker_does_not_have() -> None:
    guard = _sought(100)
    eras = guard.eras()
    # transaction markers and compacted records leave holes in a fetch from the position
    assert [guard.admit(LABELED, offset, eras, False) for offset in (100, 102, 107)] == [True] * 3
    assert guard.refetches() == {}


def test_with_nothing_committed_the_refetch_starts_from_the_reset_policy() -> None:
    guard = _sought(None)
    eras = guard.eras()
    guard.seek_started(OTHER)
    guard.seek_ended(OTHER, None)
    assert not guard.admit(OTHER, 0, eras, False)
    assert guard.refetches() == {OTHER: None}


def test_a_fetch_begun_under_the_previous_assignment_is_refused_after_the_next_seek() -> None:
    guard = _sought(100)
    before = guard.eras()  # a fetch begins; the group rebalances while it waits
    guard.assigned([LABELED, OTHER])  # the same partitions again
    guard.seek_started(LABELED)
    guard.seek_ended(LABELED, 40)  # the committed offset, behind where the old fetch was
    assert not guard.admit(LABELED, 2_268, before, False)
    assert guard.refetches() == {LABELED: 40}


def test_nothing_is_admitted_during_a_rebalance_and_it_is_fetched_again_after() -> None:
    guard = _sought(100)
    eras = guard.eras()
    # recovery's last step empties every stream's queue: a record given now would be dropped
    assert not guard.admit(LABELED, 100, eras, True)
    assert guard.refetches() == {LABELED: 100}
    assert guard.admit(OTHER, 100, eras, False)


def test_after_a_refused_record_the_later_ones_of_its_fetch_are_refused_too() -> None:
    """A stream must never be given a record after one it missed."""
    guard = _sought(100)
    eras = guard.eras()
    assert guard.admit(LABELED, 100, eras, False)
    assert not guard.admit(LABELED, 101, eras, True)  # a rebalance began
    assert not guard.admit(LABELED, 102, eras, False)  # it ended: 101 is still missing
    assert guard.refetches() == {LABELED: 101}


def test_a_stream_asks_for_the_records_it_missed_once() -> None:
    guard = _sought(100)
    assert guard.refetch(LABELED, 95)
    assert not guard.refetch(LABELED, 95)  # asked already
    assert guard.refetches() == {LABELED: 95}
    assert not guard.admit(LABELED, 130, guard.eras(), False)  # still on its way from before


def test_partitions_of_another_assignment_or_unguarded_are_not_tracked() -> None:
    guard = _sought(5)
    guard.assigned([OTHER])
    assert not guard.guards(LABELED)
    guard.seek_started(LABELED)  # e.g. a changelog partition sought by recovery
    guard.seek_ended(LABELED, 0)
    assert guard.guards(OTHER)
    assert not guard.admit(OTHER, 5, guard.eras(), False)


async def test_a_record_its_stream_skipped_unprocessed_is_never_acknowledged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """faust-streaming skips a record pulled during a rebalance (flow control suspended) or
    from an earlier generation, and acknowledged it anyway: commits passed over it."""
    isolate_prometheus(monkeypatch)
    app = create_app("acks", DriftlineSettings(data_dir=tmp_path), IngestionSettings())
    app.topics._acking_topics.add("labeled")  # what subscribing a stream to it does
    consumer = app.consumer
    tp = TP("labeled", 0)
    skipped, taken = (
        ConsumerMessage("labeled", 0, offset, 0.0, 0, None, b"", b"", None, tp=tp)
        for offset in (5, 6)
    )
    taken.tracked = True  # what a stream does with a record it processes

    assert not consumer.ack(skipped)
    assert consumer.ack(taken)
    assert (skipped.acked, taken.acked) == (False, True)
    assert list(consumer._acked[tp]) == [6]


async def test_a_stream_partition_commits_at_its_frontier_whatever_faust_listed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Faust's own reckoning waits for offset 11 in its list of acknowledgements for good; the
    records up to 19 were processed, so the commit goes to 20 and the list forgets them."""
    isolate_prometheus(monkeypatch)
    app = create_app("acks", DriftlineSettings(data_dir=tmp_path), IngestionSettings())
    consumer = app.consumer
    tp = TP("labeled", 0)
    consumer.progress.assigned([tp])
    consumer.progress.started(tp, 10)
    consumer.progress.returned(tp, range(10, 25), 10)
    for offset in range(10, 20):
        consumer.progress.processed(tp, offset)
    consumer._committed_offset[tp] = 10
    consumer._acked[tp].extend([15, 16, 17, 18, 19, 22])
    consumer._acked_index[tp].update([15, 16, 17, 18, 19, 22])

    assert consumer._new_offset(tp) == 20
    assert (consumer._acked[tp], consumer._acked_index[tp]) == ([22], {22})
    consumer._committed_offset[tp] = 20
    assert consumer._new_offset(tp) == 20  # nothing new done: no commit (`_should_commit`)
    assert not consumer._should_commit(tp, 20)


def _progress(committed: int | None) -> StreamProgress:
    progress = StreamProgress()
    progress.assigned([LABELED])
    progress.started(LABELED, committed)
    return progress


def test_a_commit_stops_at_the_first_record_not_processed() -> None:
    progress = _progress(10)
    progress.returned(LABELED, range(10, 20), 10)
    for offset in (10, 11, 13, 14):
        progress.processed(LABELED, offset)
    assert progress.limit(LABELED) == 12
    progress.processed(LABELED, 12)
    assert progress.limit(LABELED) == 15


def test_offsets_the_broker_does_not_have_count_as_done_once_a_fetch_went_past_them() -> None:
    progress = _progress(10)
    progress.returned(LABELED, [10], 10)
    progress.returned(LABELED, [15, 16, 19], 11)  # 11-14, 17, 18: compacted, or markers
    progress.processed(LABELED, 10)
    assert progress.limit(LABELED) == 15  # 11-14 are not there; 15 is not processed yet
    for offset in (15, 16):
        progress.processed(LABELED, offset)
    assert progress.limit(LABELED) == 19
    progress.processed(LABELED, 19)
    assert progress.limit(LABELED) == 20


def test_records_the_broker_returned_but_no_stream_got_hold_the_commit() -> None:
    """Faust drops fetched records on their way to the streams (a paused partition's, the
    rest of a fetch when flow stops): its streams then see a jump from 24 to 30, but the
    broker has 25-29, and they were never processed."""
    progress = _progress(20)
    progress.returned(LABELED, range(20, 25), 20)
    progress.returned(LABELED, range(25, 31), 25)
    for offset in (20, 21, 22, 23, 24, 30):
        progress.processed(LABELED, offset)
    assert progress.limit(LABELED) == 25


def test_with_nothing_committed_the_first_record_fetched_is_the_start() -> None:
    progress = _progress(None)
    assert progress.limit(LABELED) is None  # nothing may be committed yet
    progress.returned(LABELED, [7, 8], None)  # the log starts at 7 (older records deleted)
    assert progress.limit(LABELED) == 7
    progress.processed(LABELED, 7)
    assert progress.limit(LABELED) == 8


def test_a_hole_below_processed_records_is_stuck_from_the_second_look() -> None:
    progress = _progress(0)
    progress.returned(LABELED, range(0, 5), 0)
    progress.processed(LABELED, 0)
    assert progress.stuck() == {}  # nothing processed beyond the frontier: no hole
    progress.processed(LABELED, 3)  # 1 and 2 were dropped before their stream got them
    assert progress.stuck() == {}  # maybe still on their way
    assert progress.stuck() == {LABELED: 1}
    assert progress.behind(LABELED) == 1
    progress.processed(LABELED, 1)  # fetched again
    assert progress.stuck() == {}
    progress.processed(LABELED, 2)
    assert progress.limit(LABELED) == 4 and progress.stuck() == {}


def test_a_new_assignment_starts_from_the_group_s_commit_and_forgets_the_last() -> None:
    progress = _progress(0)
    progress.returned(LABELED, [0], 0)
    progress.processed(LABELED, 0)
    progress.assigned([LABELED])
    progress.started(LABELED, 500)  # another worker processed up to here meanwhile
    progress.processed(LABELED, 3)  # a late acknowledgement from before the rebalance
    assert progress.limit(LABELED) == 500
    progress.started(LABELED, 400)  # a later seek of the same assignment changes nothing
    assert progress.limit(LABELED) == 500
    assert not progress.tracks(OTHER)


def test_a_stream_takes_its_partition_s_records_in_order() -> None:
    progress = _progress(10)
    progress.returned(LABELED, [10, 11, 15, 16], 10)  # 12-14 are not on the broker
    assert progress.take(LABELED, 10, "agent") == "next"
    assert progress.take(LABELED, 12, "agent") == "early"  # 11 never reached the stream
    assert progress.next_to_take(LABELED, "agent") == 11
    assert [progress.take(LABELED, o, "agent") for o in (11, 15, 16)] == ["next"] * 3
    assert progress.take(LABELED, 15, "agent") == "taken"  # a refetch for another stream


def test_a_stream_goes_on_over_offsets_the_broker_lacks_once_they_are_passed() -> None:
    progress = _progress(10)
    progress.returned(LABELED, [10], 10)
    assert progress.take(LABELED, 10, "agent") == "next"
    progress.processed(LABELED, 10)
    progress.returned(LABELED, [15], 11)  # 11-14: transaction markers; the frontier passes them
    assert progress.limit(LABELED) == 15
    assert progress.take(LABELED, 15, "agent") == "next"


def test_each_stream_of_a_partition_keeps_its_own_place() -> None:
    progress = _progress(0)
    progress.returned(LABELED, range(0, 4), 0)
    assert [progress.take(LABELED, o, "detect") for o in range(4)] == ["next"] * 4
    assert progress.take(LABELED, 0, "weigh") == "next"
    assert progress.take(LABELED, 2, "weigh") == "early"
    progress.untake(LABELED, 1, "detect")  # its batch 1-3 was interrupted
    assert progress.next_to_take(LABELED, "detect") == 1
    assert progress.next_to_take(LABELED, "weigh") == 1


async def test_commits_hold_at_the_first_record_no_stream_processed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Faust's gaps and its head check (skipped when the committed offset is 0) let a commit
    pass records a stream never got; the consumer's own record holds it."""
    isolate_prometheus(monkeypatch)
    app = create_app("acks", DriftlineSettings(data_dir=tmp_path), IngestionSettings())
    app.topics._acking_topics.add(LABELED.topic)
    consumer = app.consumer
    assert isinstance(consumer, DriftlineConsumer)
    consumer.progress.assigned([LABELED])
    consumer.progress.started(LABELED, 0)
    messages = [
        ConsumerMessage(LABELED.topic, 0, offset, 0.0, 0, None, b"", b"", None, tp=LABELED)
        for offset in range(4)
    ]
    consumer.progress.returned(LABELED, [message.offset for message in messages], 0)
    for message in messages:
        message.tracked = True
    consumer.abandon([messages[1]], "agent")  # its batch was interrupted
    for message in messages:
        consumer.ack(message)
    assert consumer.progress.limit(LABELED) == 1
    committed: dict[TP, int] = {}

    async def commit(offsets: dict[TP, int]) -> bool:
        committed.update(offsets)
        return True

    monkeypatch.setattr(consumer, "_commit", commit)
    monkeypatch.setattr(consumer, "assignment", lambda: {LABELED})
    assert await consumer._commit_offsets({LABELED: 4})
    assert committed == {LABELED: 1}
    assert not await consumer._commit_offsets({LABELED: 4})  # nothing beyond the last commit


async def test_where_each_fetch_began_is_noted_in_the_consumer_s_thread(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Seeks and fetches both run in the consumer's thread: there, where a fetch began is
    known exactly, so a jump in it is the broker's (compaction, transaction markers)."""
    thread = _consumer(monkeypatch, tmp_path)._thread
    assert isinstance(thread, FetchTrackingThread)
    seeks: list[tuple[object, int]] = []
    aiokafka = SimpleNamespace(seek=lambda tp, offset: seeks.append((tp, offset)))
    monkeypatch.setattr(thread, "_ensure_consumer", lambda: aiokafka)
    fetches = iter([[10, 11], [14], [3]])

    async def fetch(*args: object, **kwargs: object) -> dict[TP, list[SimpleNamespace]]:
        return {LABELED: [SimpleNamespace(offset=offset) for offset in next(fetches)]}

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records", fetch)
    await thread.seek_stream(LABELED, 10, False)
    first = await thread._fetch_records(aiokafka, {LABELED})
    assert isinstance(first, Fetched) and first.starts == {LABELED: 10}
    second = await thread._fetch_records(aiokafka, {LABELED})
    assert isinstance(second, Fetched) and second.starts == {LABELED: 12}  # 12, 13: no records
    await thread.seek_stream(LABELED, 3, False)
    third = await thread._fetch_records(aiokafka, {LABELED})
    assert isinstance(third, Fetched) and third.starts == {LABELED: 3}
    assert seeks == [(LABELED, 10), (LABELED, 3)]


async def test_only_the_broker_s_own_fetches_tell_which_offsets_are_absent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A jump within a fetch, or from where it began, is a gap on the broker; records of a
    fetch that a seek overtook, or that began where it is not known, say nothing."""
    consumer = _consumer(monkeypatch, tmp_path, returned=False)
    guard, progress = consumer.fetch_guard, consumer.progress
    results: list[tuple[dict[TP, list[SimpleNamespace]], dict[TP, int | None]]] = [
        ({LABELED: [SimpleNamespace(offset=o) for o in (0, 1, 4)]}, {LABELED: 0}),
        ({LABELED: [SimpleNamespace(offset=9)]}, {LABELED: None}),  # began at an unknown place
    ]

    async def fetch(active: set[TP] | None, timeout: float) -> Fetched:
        records, starts = results.pop(0)
        return Fetched(records, starts)

    monkeypatch.setattr(consumer._thread, "getmany", fetch)
    await consumer._getmany({LABELED}, 1.0)
    for offset in (0, 1):
        progress.processed(LABELED, offset)
    assert progress.limit(LABELED) == 4  # 2 and 3 are not on the broker
    await consumer._getmany({LABELED}, 1.0)
    progress.processed(LABELED, 4)
    assert progress.limit(LABELED) == 5  # 5-8 were not shown missing

    async def overtaken(active: set[TP] | None, timeout: float) -> Fetched:
        guard.seek_started(LABELED)  # a seek ran while this fetch was on its way
        guard.seek_ended(LABELED, 5)
        return Fetched({LABELED: [SimpleNamespace(offset=20)]}, {LABELED: 5})

    monkeypatch.setattr(consumer._thread, "getmany", overtaken)
    await consumer._getmany({LABELED}, 1.0)
    assert progress.limit(LABELED) == 5


def _consumer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, returned: bool = True
) -> DriftlineConsumer:
    isolate_prometheus(monkeypatch)
    app = create_app("order", DriftlineSettings(data_dir=tmp_path), IngestionSettings())
    app.topics._acking_topics.add(LABELED.topic)
    consumer = app.consumer
    assert isinstance(consumer, DriftlineConsumer)
    consumer.fetch_guard.assigned([LABELED])
    consumer.progress.assigned([LABELED])
    consumer.progress.started(LABELED, 0)
    consumer.fetch_guard.seek_ended(LABELED, 0)
    if returned:
        consumer.progress.returned(LABELED, range(0, 6), 0)
    return consumer


def _message(offset: int) -> ConsumerMessage:
    message = ConsumerMessage(LABELED.topic, 0, offset, 0.0, 0, None, b"", b"", None, tp=LABELED)
    message.tracked = True
    return message


def test_a_record_that_comes_too_early_is_left_unacknowledged_and_the_gap_fetched_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Records 1-2 were dropped on their way to the stream (a cleared queue): 3 must not be
    processed before them, or the outputs of 1-2 would come after 3's downstream, where
    they look like replays."""
    consumer = _consumer(monkeypatch, tmp_path)
    first, early = _message(0), _message(3)
    consumer._admitted_in[early] = consumer.fetch_guard.era(LABELED) or 0
    assert consumer.take(first, "agent")
    assert not consumer.take(early, "agent")
    assert consumer.fetch_guard.refetches() == {LABELED: 1}
    consumer.ack(first)
    consumer.ack(early)
    assert consumer.progress.limit(LABELED) == 1  # 3 was not processed

    consumer.fetch_guard.seek_started(LABELED)  # the refetch
    consumer.fetch_guard.seek_ended(LABELED, 1)
    stale = _message(4)  # still queued from before the refetch: no second one is asked for
    consumer._admitted_in[stale] = -1
    assert not consumer.take(stale, "agent")
    assert consumer.fetch_guard.refetches() == {}
    assert all(consumer.take(_message(offset), "agent") for offset in (1, 2, 3))


def test_an_interrupted_batch_is_taken_again_before_anything_after_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    consumer = _consumer(monkeypatch, tmp_path)
    batch = [_message(offset) for offset in (0, 1, 2)]
    assert all(consumer.take(message, "agent") for message in batch)
    consumer.abandon(batch[1:], "agent")  # cancelled after the first record
    assert consumer.fetch_guard.refetches() == {LABELED: 1}
    assert not consumer.take(_message(3), "agent")  # queued behind the batch
    assert consumer.take(_message(1), "agent")
