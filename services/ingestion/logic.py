"""Turning raw events into feature events, without Kafka.

Validation (`shared.validation`, shared with the V2 gateway) checks a raw event against its
stream's declaration (`StreamSchema`) and either returns its features or raises an error whose
message is the dead-letter reason.
Windowed aggregates are kept in fixed event-time buckets (count and sum per bucket, see
`services.ingestion.state`); a window is the sum of its buckets. A number beyond
`shared.events.MAX_MAGNITUDE` is refused like the other faults, so no window's sum can overflow
to infinity and poison its entity's later events. `ingest_event` changes that state only once an
event's feature event is built: an event refused at any step leaves no trace.
"""

from __future__ import annotations

from pydantic import ValidationError

from services.ingestion.state import PartitionState
from shared.errors import DriftlineError, EventDecodeError
from shared.events import (
    MAX_MAGNITUDE,
    FeatureEvent,
    FeatureValue,
    Provenance,
    RawEvent,
    StreamSchema,
    WindowedAggregate,
    decode,
    describe_problem,
)
from shared.validation import InvalidEventError, UnknownStreamError


class WindowTooLongError(DriftlineError):
    """A stream asks for an aggregate window longer than this ingestion keeps."""

    code = "window_too_long"

    def __init__(self, stream: str, minutes: int, horizon: int) -> None:
        super().__init__(
            f"window too long: stream {stream!r} aggregates over {minutes} minutes but ingestion "
            f"keeps {horizon} (raise DRIFTLINE_INGESTION_AGGREGATE_HORIZON_MINUTES)"
        )


def parse_raw_event(value: bytes | None, topic: str, max_bytes: int) -> RawEvent:
    """Decode a raw event, refusing payloads over `max_bytes` before parsing them."""
    if value is not None and len(value) > max_bytes:
        raise EventDecodeError(topic, f"oversized payload: {len(value)} bytes > {max_bytes}")
    return decode(RawEvent, value, topic)


def stream_schema(schema: StreamSchema | None, stream: str, horizon: int) -> StreamSchema:
    """The declaration of `stream` (None if it has none), or why it cannot be used."""
    if schema is None:
        raise UnknownStreamError(stream)
    for aggregate in schema.aggregates:
        if aggregate.minutes > horizon:
            raise WindowTooLongError(stream, aggregate.minutes, horizon)
    return schema


def event_timestamp(raw: RawEvent, now: float, max_ahead_s: float) -> float:
    """The event's time in epoch seconds; refused when it lies more than `max_ahead_s` after
    `now` (a bad clock or a typo: the state's windows follow the newest event time)."""
    timestamp = raw.event_time.timestamp()
    if timestamp - now > max_ahead_s:
        raise InvalidEventError(
            "future event time",
            raw,
            f"{raw.event_time.isoformat()} is {timestamp - now:,.0f} s ahead of the ingestion "
            f"worker's clock (at most {max_ahead_s:g} s, DRIFTLINE_INGESTION_MAX_FUTURE_SECONDS)",
        )
    return timestamp


def to_feature_event(
    raw: RawEvent, features: dict[str, FeatureValue], provenance: Provenance
) -> FeatureEvent:
    """The feature event for `raw`, read at `provenance`, with its validated (and aggregated)
    features."""
    try:
        return FeatureEvent(
            event_id=raw.event_id,
            stream=raw.stream,
            entity_id=raw.entity_id,
            event_time=raw.event_time,
            features=features,
            provenance=provenance,
        )
    except ValidationError as exc:
        raise EventDecodeError(provenance.topic, describe_problem(exc)) from None


def bucket_key(stream: str, entity_id: str, field: str) -> str:
    """The key of one entity's aggregate buckets for one field of one stream."""
    return f"{stream}\x1f{entity_id}\x1f{field}"


def dedup_key(stream: str, event_id: str) -> str:
    """The key an event id is remembered by: event ids are unique per stream."""
    return f"{stream}\x1f{event_id}"


def window_features(aggregate: WindowedAggregate, count: float, total: float) -> dict[str, float]:
    """The aggregate's count and mean from its window's count and sum (no mean while empty).
    The mean of values within `MAX_MAGNITUDE` lies within it, but the rounding of a long sum
    can take it a hair past: it is kept within, so the feature event accepts it."""
    count_name, mean_name = aggregate.feature_names
    if not count:
        return {count_name: 0.0}
    return {count_name: count, mean_name: max(-MAX_MAGNITUDE, min(MAX_MAGNITUDE, total / count))}


def ingest_event(
    raw: RawEvent,
    schema: StreamSchema,
    features: dict[str, FeatureValue],
    timestamp: float,
    offset: int,
    state: PartitionState,
    topic: str,
) -> FeatureEvent | None:
    """The feature event of `raw` (its validated `features` plus its windowed aggregates, read
    from the partition's `state`), or None when its event id came before from another record.

    The state remembers the id and counts the values only once the feature event is built: an
    event refused at any step (e.g. by the feature event's own validation) is dead-lettered
    without a trace, so when it is resent it is neither taken for a duplicate nor counted twice.
    """
    dedup = dedup_key(raw.stream, raw.event_id)
    if state.seen_before(dedup, timestamp, offset):
        return None
    keys = {a.field: bucket_key(raw.stream, raw.entity_id, a.field) for a in schema.aggregates}
    values = {field: float(features[field]) for field in keys if field in features}
    counted = state.counts(timestamp, offset)
    aggregates: dict[str, float] = {}
    for spec in schema.aggregates:
        adding = values.get(spec.field) if counted else None
        window = state.window(keys[spec.field], timestamp, spec.minutes, adding)
        aggregates |= window_features(spec, *window)
    provenance = Provenance(topic=topic, partition=state.partition, offset=offset)
    feature_event = to_feature_event(raw, features | aggregates, provenance)
    for field, value in values.items():
        state.add(keys[field], timestamp, value, offset)
    state.remember(dedup, timestamp, offset)
    return feature_event
