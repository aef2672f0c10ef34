"""Turning raw events into feature events, without Kafka."""

from __future__ import annotations

from pydantic import ValidationError

from shared.errors import EventDecodeError
from shared.events import FeatureEvent, RawEvent, decode, describe_problem


def to_feature_event(raw: RawEvent, topic: str) -> FeatureEvent:
    """The raw event's data as features; a value that is no number, category or flag is refused."""
    try:
        return FeatureEvent(
            event_id=raw.event_id,
            stream=raw.stream,
            entity_id=raw.entity_id,
            event_time=raw.event_time,
            features=raw.data,
        )
    except ValidationError as exc:
        raise EventDecodeError(topic, describe_problem(exc)) from None


def parse_raw_event(value: bytes | None, topic: str, max_bytes: int) -> RawEvent:
    """Decode a raw event, refusing payloads over `max_bytes` before parsing them."""
    if value is not None and len(value) > max_bytes:
        raise EventDecodeError(topic, f"oversized payload: {len(value)} bytes > {max_bytes}")
    return decode(RawEvent, value, topic)
