"""The feedback worker: ``predictions`` and ``feedback`` in (co-partitioned on event id),
``predictions.labeled`` (keyed by deployment) out.

One agent reads both topics, so a partition's predictions and feedback are handled in their
order of arrival. The join table (`event_to_join`) is keyed by event id; each partition's
watermark is kept in it too (under a key no event id can take), written at every sweep, so a
restarted worker resumes close to where the event time stood.

The agent joins micro-batches and writes a batch's join states only after its labeled records
are delivered (`shared.app.outputs_delivered`): a crash in between replays the batch, which
finds the events still unlabeled and sends the same records again, each naming the message that
completed its join (`Provenance`), by which the learner and the drift service apply it once.
"""

from __future__ import annotations

from collections.abc import Sequence

import faust
from faust.types import TP, EventT

from services.feedback.logic import (
    DeadlineIndex,
    Joiner,
    JoinPolicy,
    JoinState,
    Origin,
    Outcome,
)
from shared import metrics
from shared import settings as cfg
from shared.admin import partition_counts
from shared.app import (
    BufferedTable,
    DeadLetters,
    DriftlineApp,
    consume_batches,
    create_app,
    declare_topic,
    outputs_delivered,
    rejection,
    send_event,
)
from shared.errors import DriftlineError
from shared.events import Feedback, Prediction, Provenance, decode
from shared.logging import get_logger
from shared.topics import FEEDBACK, PREDICTIONS, PREDICTIONS_LABELED

SERVICE = "feedback"
WATERMARK_PREFIX = b"\x00watermark:"
"""Table keys of the partitions' watermarks (event ids cannot hold a NUL byte in practice, and
these keys are skipped by sweeps)."""

log = get_logger(__name__)


class NotCopartitionedError(DriftlineError):
    """``predictions`` and ``feedback`` have different partition counts: the join would miss."""

    def __init__(self, counts: dict[str, int]) -> None:
        super().__init__(
            f"topics to join are not co-partitioned: {counts}; give them the same partition"
            " count (and key both by event id)"
        )


def build(common: cfg.DriftlineSettings, own: cfg.FeedbackSettings) -> DriftlineApp:
    """The feedback Faust app: one agent over both co-partitioned topics, one join table."""
    app = create_app(SERVICE, common, own)
    predictions_name, feedback_name = PREDICTIONS.full_name(common), FEEDBACK.full_name(common)
    joined_topics = app.topic(predictions_name, feedback_name, key_type=bytes, value_type=bytes)
    declare_topic(app, PREDICTIONS, common)
    declare_topic(app, FEEDBACK, common)
    labeled_topic = declare_topic(app, PREDICTIONS_LABELED, common)
    dead_letters = DeadLetters(app, SERVICE, common)
    event_to_join = app.Table("event_to_join", key_type=bytes, value_type=bytes)
    joiner = Joiner(
        JoinPolicy(own.prediction_ttl_s, own.early_feedback_ttl_s, own.remember_s), SERVICE
    )
    every = own.sweep_every_s
    watermarks: dict[int, float] = {}
    last_sweep: dict[int, float] = {}
    sweeps = 0
    """Sweeps made so far (the table's size is shown after a batch that swept)."""
    deadlines: dict[int, DeadlineIndex] = {}
    """Per partition, when its states fall due; built from the table at the first look after
    start or a rebalance (`index_of`), kept up to date by every write after it."""

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: faust.App, revoked: set[TP], **_: object) -> None:
        """A partition may come back changed by another worker: read it from the table then."""
        deadlines.clear()
        for tp in revoked:
            watermarks.pop(tp.partition, None)
            last_sweep.pop(tp.partition, None)

    def index_of(partition: int, table: BufferedTable) -> DeadlineIndex:
        """The deadline index of `partition`, every partition's built in one pass over the
        table if there is none."""
        if not deadlines:
            for key, value in table.items():
                if not key.startswith(WATERMARK_PREFIX):
                    state = JoinState.model_validate_json(value)
                    deadlines.setdefault(state.partition, DeadlineIndex()).add(key, state.deadline)
        return deadlines.setdefault(partition, DeadlineIndex())

    def store(table: BufferedTable, key: bytes, state: JoinState | None, event: EventT) -> None:
        """Write `state` (None: delete) and index its deadline."""
        if state is not None:
            index_of(state.partition, table).add(key, state.deadline)
        table.put(key, _stored(state), event)

    def watermark(partition: int) -> float | None:
        if partition not in watermarks:
            stored = event_to_join.get(WATERMARK_PREFIX + str(partition).encode())
            if stored is not None:
                watermarks[partition] = last_sweep[partition] = float(stored)
        return watermarks.get(partition)

    async def apply(outcome: Outcome) -> None:
        for labeled in outcome.labeled:
            await send_event(labeled_topic, SERVICE, labeled.deployment, labeled)
            metrics.LABELED_PREDICTIONS.labels(labeled.deployment).inc()
        metrics.observe_end_to_end(SERVICE, (x.event_time.timestamp() for x in outcome.labeled))
        for prediction in outcome.expired:
            metrics.EXPIRED_PREDICTIONS.labels(
                prediction.deployment, prediction.outcome.model_name
            ).inc()
        for letter in outcome.dead_letters:
            await dead_letters.send_letter(letter)
        if outcome.duplicate_feedback:
            metrics.DUPLICATE_FEEDBACK.inc(outcome.duplicate_feedback)
        if outcome.duplicate_predictions:
            metrics.DUPLICATE_PREDICTIONS.inc(outcome.duplicate_predictions)

    def sweep(table: BufferedTable, partition: int, now: float, event: EventT) -> Outcome:
        """Move every entry of `partition` whose deadline passed. Runs inside the agent, on an
        event of `partition`, whose changelog partition the entries' writes belong to."""
        nonlocal sweeps
        outcome = Outcome()
        index = index_of(partition, table)
        due = list(index.due(now))
        try:
            for key in due:
                state = _state(table.get(key))
                if state is None or state.partition != partition or state.deadline > now:
                    continue  # a stale entry: the state was written again (and indexed again)
                new, expired = joiner.expire(state, now)
                store(table, key, new, event)
                outcome.merge(expired)
        except BaseException:
            for key in due:  # taken out, perhaps not handled: looked at again next time
                index.add(key, now)
            raise
        table.put(WATERMARK_PREFIX + str(partition).encode(), str(now).encode(), event)
        last_sweep[partition] = now
        sweeps += 1
        return outcome

    def count_entries() -> None:
        """Show how many join states the table holds (its watermarks aside)."""
        stored_watermarks = sum(
            WATERMARK_PREFIX + str(p).encode() in event_to_join for p in last_sweep
        )
        metrics.TABLE_ENTRIES.labels(SERVICE, "event_to_join").set(
            len(event_to_join) - stored_watermarks
        )

    def join(event: EventT, table: BufferedTable) -> Outcome:
        message = event.message
        partition = message.partition
        if message.topic == predictions_name:
            prediction = decode(Prediction, message.value, message.topic)
            known, stamp = watermark(partition), prediction.event_time.timestamp()
            # no floor at 0: events stamped before 1970 (yearly series) have negative times
            now = stamp if known is None else max(known, stamp)
            watermarks[partition] = now
            key = prediction.event_id.encode()
            state = _state(table.get(key))
            at = Provenance(topic=message.topic, partition=partition, offset=message.offset)
            new, outcome = joiner.on_prediction(state, prediction, at, now)
        else:
            feedback = decode(Feedback, message.value, message.topic)
            known = watermark(partition)
            now = feedback.label_time.timestamp() if known is None else known
            key = feedback.event_id.encode()
            # kept whole (bytes too): it is dead-lettered if its prediction never comes
            origin = Origin(
                topic=message.topic,
                partition=partition,
                offset=message.offset,
                key=message.key,
                value=message.value or b"",
            )
            new, outcome = joiner.on_feedback(_state(table.get(key)), feedback, origin, now)
        store(table, key, new, event)
        known = watermarks.get(partition)
        if known is not None and known >= last_sweep.get(partition, float("-inf")) + every:
            outcome.merge(sweep(table, partition, known, event))
        return outcome

    async def join_batch(events: Sequence[EventT]) -> list[tuple[EventT, DriftlineError]]:
        """Join a micro-batch in order; send its labeled records and dead letters, and write
        its join states only once they are delivered, so a crash in between replays the batch
        and sends them again (with the same ids and provenance) instead of finding the events
        labeled and sending nothing."""
        table = BufferedTable(event_to_join)
        sweeps_before = sweeps
        outcome = Outcome()
        rejected: list[tuple[EventT, DriftlineError]] = []
        for event in events:
            try:
                outcome.merge(join(event, table))
            except Exception as exc:
                rejected.append((event, rejection(event, exc)))
        try:
            await apply(outcome)
            await outputs_delivered(app)
        except BaseException:
            deadlines.clear()  # its sweeps took due states out of the index, and none is written
            raise
        table.write()
        if sweeps != sweeps_before:
            count_entries()  # the table's size changes much only when states expire
        return rejected

    @app.agent(joined_topics, name="join_feedback_to_predictions")
    async def join_feedback_to_predictions(stream: faust.Stream) -> None:
        await consume_batches(
            stream, SERVICE, dead_letters, join_batch, own.batch_max_events, own.batch_within_s
        )

    @app.task
    async def check_copartitioned() -> None:
        """Refuse to run when the joined topics could put one event id on two partitions."""
        counts = await partition_counts(common, PREDICTIONS, FEEDBACK)
        if len(set(counts.values())) != 1:
            raise NotCopartitionedError(counts)
        log.info("joined topics are co-partitioned", partitions=counts)

    return app


def _state(value: bytes | None) -> JoinState | None:
    return None if value is None else JoinState.model_validate_json(value)


def _stored(state: JoinState | None) -> bytes | None:
    return None if state is None else state.model_dump_json().encode()
