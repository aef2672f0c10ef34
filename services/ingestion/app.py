"""The ingestion worker: ``events.raw`` in, ``features`` (keyed by entity) and dead letters out.

Stream declarations come from the compacted ``streams`` topic: the worker that owns its partition
checks each one and stores it in a global table, which every worker reads through the table's
changelog (a new declaration applies without a restart; a bad one is dead-lettered).

Duplicate ids and windowed aggregates live in event-time tumbling windowed tables, partitioned
like ``events.raw`` (by entity), so their state moves with the partitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import faust
from faust.types import EventT

from services.ingestion.logic import (
    EventClock,
    add_to_bucket,
    bucket_key,
    bucket_times,
    check_declaration,
    dedup_key,
    parse_raw_event,
    stream_schema,
    to_feature_event,
    validate_features,
    window_features,
)
from shared import metrics
from shared import settings as cfg
from shared.app import (
    DeadLetters,
    as_current_event,
    consume_batches,
    create_app,
    declare_topic,
    failure_reason,
    send_records,
)
from shared.events import FeatureEvent, FeatureValue, RawEvent, StreamSchema, encode
from shared.global_tables import checked_global_table
from shared.topics import EVENTS_RAW, FEATURES, STREAMS

SERVICE = "ingestion"


def build(common: cfg.DriftlineSettings, own: cfg.IngestionSettings) -> faust.App:
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
    clock = EventClock()
    seen_event_ids = (
        app.Table("seen_event_ids", default=bytes, value_type=bytes)
        .tumbling(own.dedup_window_seconds, expires=2 * own.dedup_window_seconds)
        .relative_to(clock)
    )
    bucket_seconds = own.aggregate_bucket_seconds
    entity_field_buckets = (
        app.Table("entity_field_buckets", default=bytes, value_type=bytes)
        .tumbling(bucket_seconds, expires=own.aggregate_horizon_minutes * 60 + bucket_seconds)
        .relative_to(clock)
    )

    def value_at(table: faust.types.tables.WindowWrapperT, key: str, timestamp: float) -> bytes:
        clock.timestamp = timestamp
        return table[key].value()

    def seen_before(raw: RawEvent, timestamp: float) -> bool:
        """Whether the event id was seen in this window or the one before; remembers it."""
        key = dedup_key(raw.stream, raw.event_id)
        window = own.dedup_window_seconds
        if value_at(seen_event_ids, key, timestamp) or value_at(
            seen_event_ids, key, timestamp - window
        ):
            return True
        clock.timestamp = timestamp
        seen_event_ids[key] = b"1"
        return False

    def aggregate(
        raw: RawEvent, schema: StreamSchema, features: dict[str, FeatureValue], timestamp: float
    ) -> dict[str, float]:
        """Add this event to its entity's buckets, then read every declared window."""
        clock.timestamp = timestamp
        for field in {a.field for a in schema.aggregates if a.field in features}:
            key = bucket_key(raw.stream, raw.entity_id, field)
            entity_field_buckets[key].apply(add_to_bucket, features[field])
        added: dict[str, float] = {}
        for spec in schema.aggregates:
            key = bucket_key(raw.stream, raw.entity_id, spec.field)
            times = bucket_times(timestamp, spec.minutes, bucket_seconds)
            added |= window_features(spec, (value_at(entity_field_buckets, key, t) for t in times))
        return added

    def ingest(event: EventT) -> FeatureEvent | None:
        """One raw event's feature event (None for a duplicate); raises for a bad one."""
        message = event.message
        raw = parse_raw_event(message.value, message.topic, own.max_event_bytes)
        schema = stream_schema(
            stream_to_schema.get(raw.stream), raw.stream, own.aggregate_horizon_minutes
        )
        features = validate_features(raw, schema)
        timestamp = raw.event_time.timestamp()
        if seen_before(raw, timestamp):
            metrics.child(metrics.DUPLICATE_EVENTS, raw.stream).inc()
            return None
        features |= aggregate(raw, schema, features, timestamp)
        return to_feature_event(raw, features, message.topic)

    async def ingest_batch(events: Sequence[EventT]) -> list[tuple[EventT, str]]:
        """Ingest each event of a micro-batch (its table writes under its own partition), then
        hand the batch's feature events to the producer at once. Every failure is caught here,
        per event: a batch run again would find its events' ids seen and drop them."""
        rejected: list[tuple[EventT, str]] = []
        records: list[tuple[bytes, bytes]] = []
        for event in events:
            try:
                with as_current_event(event):
                    feature_event = ingest(event)
            except Exception as exc:
                rejected.append((event, failure_reason(event, exc)))
                continue
            if feature_event is not None:
                records.append((feature_event.entity_id.encode(), encode(feature_event)))
        await send_records(features_topic, SERVICE, records)
        return rejected

    @app.agent(raw_topic, name="validate_raw_event")
    async def validate_raw_event(stream: faust.Stream) -> None:
        await consume_batches(
            stream, SERVICE, dead_letters, ingest_batch, own.batch_max_events, own.batch_within_s
        )

    return app
