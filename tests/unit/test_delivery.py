"""The durable producer's bookkeeping (`shared.delivery`): every send is remembered until the
broker answers it, and a commit waits for them all and refuses to pass over one that failed.
On the real broker: tests/integration/test_worker_lifecycle.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.errors import MessageSizeTooLargeError
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
    FetchGuard,
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


def _progress(committed: int | None) -> StreamProgress:
    progress = StreamProgress()
    progress.assigned([LABELED])
    progress.started(LABELED, committed)
    return progress


def test_a_commit_stops_at_the_first_record_not_processed() -> None:
    progress = _progress(10)
    for offset in range(10, 20):
        progress.fetched(LABELED, offset, offset)
    for offset in (10, 11, 13, 14):
        progress.processed(LABELED, offset)
    assert progress.limit(LABELED) == 12
    progress.processed(LABELED, 12)
    assert progress.limit(LABELED) == 15


def test_offsets_the_broker_does_not_have_count_as_done_once_a_fetch_went_past_them() -> None:
    progress = _progress(10)
    progress.fetched(LABELED, 10, 10)
    progress.fetched(LABELED, 15, 11)  # 11-14 compacted away, or transaction markers
    progress.processed(LABELED, 10)
    assert progress.limit(LABELED) == 15  # 11-14 are not there; 15 is not processed yet
    progress.processed(LABELED, 15)
    assert progress.limit(LABELED) == 16


def test_a_jump_in_faust_s_own_read_position_is_not_taken_for_absent_records() -> None:
    """Processing 30 while 20-29 were fetched but dropped unprocessed moves nothing."""
    progress = _progress(20)
    for offset in range(20, 31):
        progress.fetched(LABELED, offset, offset)
    progress.processed(LABELED, 30)
    assert progress.limit(LABELED) == 20


def test_with_nothing_committed_the_first_record_fetched_is_the_start() -> None:
    progress = _progress(None)
    assert progress.limit(LABELED) is None  # nothing may be committed yet
    progress.fetched(LABELED, 7, None)  # the log starts at 7 (older records deleted)
    assert progress.limit(LABELED) == 7
    progress.processed(LABELED, 7)
    assert progress.limit(LABELED) == 8


def test_a_hole_below_processed_records_is_stuck_from_the_second_look() -> None:
    progress = _progress(0)
    for offset in range(0, 5):
        progress.fetched(LABELED, offset, offset)
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
    progress.fetched(LABELED, 0, 0)
    progress.processed(LABELED, 0)
    progress.assigned([LABELED])
    progress.started(LABELED, 500)  # another worker processed up to here meanwhile
    progress.processed(LABELED, 3)  # a late acknowledgement from before the rebalance
    assert progress.limit(LABELED) == 500
    progress.started(LABELED, 400)  # a later seek of the same assignment changes nothing
    assert progress.limit(LABELED) == 500
    assert not progress.tracks(OTHER)


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
    for message in messages:
        consumer.progress.fetched(LABELED, message.offset, message.offset)
        message.tracked = True
    consumer.abandon([messages[1]])  # its batch was interrupted
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
