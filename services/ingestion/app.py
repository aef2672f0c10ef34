"""The ingestion worker: ``events.raw`` in, ``features`` (keyed by entity) and dead letters out.

Stream declarations come from the compacted ``streams`` topic: the worker that owns its partition
checks each one and stores it in a global table, which every worker reads through the table's
changelog (a new declaration applies without a restart; a bad one is dead-lettered).

Duplicate ids and windowed aggregates are kept per ``events.raw`` partition (by entity) in
memory, and each micro-batch's changes are saved as one record of the ``state_segments`` table
(`services.ingestion.state`), partitioned like ``events.raw``, so the state moves with the
partitions and a batch costs one changelog write, not several per event.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import faust
from faust.types import TP, EventT

from services.ingestion.logic import (
    event_timestamp,
    ingest_event,
    parse_raw_event,
    stream_schema,
)
from services.ingestion.state import PartitionState
from shared import metrics
from shared import settings as cfg
from shared.app import (
    DeadLetters,
    DriftlineApp,
    as_current_event,
    consume_batches,
    create_app,
    declare_topic,
    outputs_delivered,
    rejection,
    send_records,
)
from shared.errors import DriftlineError
from shared.events import FeatureEvent, encode
from shared.global_tables import checked_global_table
from shared.records import check_declaration
from shared.topics import EVENTS_RAW, FEATURES, STREAMS
from shared.validation import validate_features

SERVICE = "ingestion"


def build(common: cfg.DriftlineSettings, own: cfg.IngestionSettings) -> DriftlineApp:
    """The ingestion Faust app with its agent and tables."""
    app = create_app(SERVICE, common, own)
    raw_topic = declare_topic(app, EVENTS_RAW, common)
    features_topic = declare_topic(app, FEATURES, common)
    dead_letters = DeadLetters(app, SERVICE, common)
    stream_to_schema = checked_global_table(
        app,
        STREAMS,
        common,
        dead_letters,
        check_declaration,
        name="stream_to_schema",
        agent="store_stream_declaration",
    )
    segments = app.Table("state_segments", key_type=bytes, value_type=bytes)
    states: dict[int, PartitionState] = {}

    def state_of(partition: int) -> PartitionState:
        """The partition's state; rebuilt from its segments when the worker first meets it."""
        state = states.get(partition)
        if state is None:
            state = states[partition] = PartitionState(
                partition,
                own.dedup_window_seconds,
                own.aggregate_bucket_seconds,
                own.aggregate_horizon_minutes * 60,
            )
            prefix = f"{partition}:".encode()
            state.load((k.decode(), v) for k, v in segments.items() if k.startswith(prefix))
        return state

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: faust.App, revoked: set[TP], **_: object) -> None:
        """A partition may come back changed by another worker: rebuild it then."""
        for tp in revoked:
            if tp.topic == raw_topic.get_topic_name():
                states.pop(tp.partition, None)

    def save(state: PartitionState, event: EventT) -> None:
        """Write the batch's segment and delete expired ones, in the changelog partition of
        `event` (one of the batch's events of this partition)."""
        with as_current_event(event):
            sealed = state.seal()
            if sealed is not None:
                segments[sealed[0].encode()] = sealed[1]
            for key in state.expire():
                segments.pop(key.encode(), None)

    def ingest(event: EventT, state: PartitionState, now: float) -> FeatureEvent | None:
        """One raw event's feature event (None for a duplicate); raises for a bad one. `now` is
        the wall clock its event time may run ahead of by `max_future_seconds` at most."""
        message = event.message
        raw = parse_raw_event(message.value, message.topic, own.max_event_bytes)
        schema = stream_schema(
            stream_to_schema.get(raw.stream), raw.stream, own.aggregate_horizon_minutes
        )
        features = validate_features(raw, schema)
        timestamp = event_timestamp(raw, now, own.max_future_seconds)
        feature_event = ingest_event(
            raw, schema, features, timestamp, message.offset, state, message.topic
        )
        if feature_event is None:
            metrics.child(metrics.DUPLICATE_EVENTS, raw.stream).inc()
        return feature_event

    async def ingest_batch(events: Sequence[EventT]) -> list[tuple[EventT, DriftlineError]]:
        """Ingest each event of a micro-batch against its partition's state, send the batch's
        feature events at once and, once they are delivered, save one segment per partition:
        a crash in between replays the batch against the state before it, which rebuilds the
        same feature events (with the same provenance). Every failure is caught here, per
        event, so a batch is never run twice."""
        rejected: list[tuple[EventT, DriftlineError]] = []
        records: list[tuple[bytes, bytes]] = []
        event_times: list[float] = []
        last_of_partition: dict[int, EventT] = {}
        now = time.time()
        for event in events:
            partition = event.message.partition
            last_of_partition[partition] = event
            try:
                feature_event = ingest(event, state_of(partition), now)
            except Exception as exc:
                rejected.append((event, rejection(event, exc)))
                continue
            if feature_event is not None:
                records.append((feature_event.entity_id.encode(), encode(feature_event)))
                event_times.append(feature_event.event_time.timestamp())
        await send_records(features_topic, SERVICE, records)
        metrics.observe_end_to_end(SERVICE, event_times)
        await outputs_delivered(app)
        for partition, event in last_of_partition.items():
            save(states[partition], event)
        return rejected

    @app.agent(raw_topic, name="validate_raw_event")
    async def validate_raw_event(stream: faust.Stream) -> None:
        await consume_batches(
            stream, SERVICE, dead_letters, ingest_batch, own.batch_max_events, own.batch_within_s
        )

    return app
