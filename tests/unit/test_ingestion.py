"""Ingestion's pure logic: validation against a declared stream, declarations, window buckets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.ingestion.logic import (
    WindowTooLongError,
    event_timestamp,
    ingest_event,
    parse_raw_event,
    stream_schema,
    window_features,
)
from services.ingestion.state import PartitionState
from shared.errors import EventDecodeError
from shared.events import (
    MAX_MAGNITUDE,
    FeatureSpec,
    RawEvent,
    StreamSchema,
    WindowedAggregate,
    encode,
)
from shared.records import check_declaration
from shared.validation import InvalidEventError, UnknownStreamError, validate_features

SCHEMA = StreamSchema(
    name="payments",
    features=[
        FeatureSpec(name="amount", min=0, max=100),
        FeatureSpec(name="tier", type="categorical", categories=["basic", "premium"]),
        FeatureSpec(name="note", type="categorical", required=False),
        FeatureSpec(name="online", type="boolean", required=False),
    ],
    aggregates=[WindowedAggregate(field="amount", minutes=10)],
)


def raw(**data: Any) -> RawEvent:
    return RawEvent(
        event_id="e1",
        stream="payments",
        entity_id="u1",
        event_time=datetime(2026, 1, 1, tzinfo=UTC),
        data={"amount": 5, "tier": "basic"} | data,
    )


def test_valid_event_keeps_declared_features_as_typed_values() -> None:
    features = validate_features(raw(online=False, extra=1, note="hi"), SCHEMA)

    assert features == {"amount": 5.0, "tier": "basic", "note": "hi", "online": False}
    assert isinstance(features["amount"], float)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"amount": None}, "missing field: event 'e1' of stream 'payments': required 'amount'"),
        (
            {"amount": "5"},
            "wrong type: event 'e1' of stream 'payments': amount='5' is not a number",
        ),
        ({"amount": True}, "wrong type: event 'e1' of stream 'payments': amount=True"),
        ({"tier": 3}, "wrong type: event 'e1' of stream 'payments': tier=3 is not text"),
        ({"online": 1}, "wrong type: event 'e1' of stream 'payments': online=1 is not a boolean"),
        ({"amount": float("nan")}, "not finite: event 'e1' of stream 'payments': amount: nan is"),
        ({"amount": float("inf")}, "not finite: event 'e1' of stream 'payments': amount: inf is"),
        (
            {"amount": 10**400},
            "too large: event 'e1' of stream 'payments': amount: an integer of 1329 bits is "
            "beyond the largest magnitude allowed, 1e+100",
        ),
        ({"amount": -1e101}, "too large: event 'e1' of stream 'payments': amount: -1e+101 is"),
        ({"amount": 101}, "out of range: event 'e1' of stream 'payments': amount=101"),
        ({"amount": -1}, "out of range: event 'e1' of stream 'payments': amount=-1"),
        ({"tier": "gold"}, "unknown category: event 'e1' of stream 'payments': tier='gold'"),
    ],
)
def test_each_fault_is_refused_with_a_reason_that_starts_with_its_kind(
    data: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        validate_features(raw(**data), SCHEMA)
    assert str(caught.value).startswith(reason)


def test_optional_features_may_be_absent() -> None:
    assert "online" not in validate_features(raw(), SCHEMA)


def test_unknown_stream_and_too_long_windows_are_refused() -> None:
    with pytest.raises(UnknownStreamError, match="unknown stream: 'refunds' is not declared"):
        stream_schema(None, "refunds", horizon=60)
    with pytest.raises(
        WindowTooLongError, match="aggregates over 10 minutes but ingestion keeps 5"
    ):
        stream_schema(SCHEMA, "payments", horizon=5)
    assert stream_schema(SCHEMA, "payments", horizon=60) == SCHEMA


def test_oversized_payloads_are_refused_unread() -> None:
    with pytest.raises(EventDecodeError, match="oversized payload: 100 bytes > 64"):
        parse_raw_event(b"x" * 100, "events.raw", max_bytes=64)


def test_a_declaration_must_be_keyed_by_its_stream_and_be_consistent() -> None:
    assert check_declaration(b"payments", encode(SCHEMA), "streams") == SCHEMA
    assert check_declaration(b"payments", None, "streams") is None
    with pytest.raises(EventDecodeError, match="key b'other' is not the stream name"):
        check_declaration(b"other", encode(SCHEMA), "streams")
    with pytest.raises(ValueError, match="aggregate field 'tier' is not a numeric feature"):
        StreamSchema(
            name="s", features=SCHEMA.features, aggregates=[{"field": "tier", "minutes": 1}]
        )


def test_an_event_stamped_too_far_ahead_of_the_clock_is_refused() -> None:
    event = raw()
    stamped = event.event_time.timestamp()

    assert event_timestamp(event, now=stamped - 300, max_ahead_s=300) == stamped
    assert event_timestamp(event, now=stamped + 3600, max_ahead_s=0) == stamped  # late is fine
    with pytest.raises(InvalidEventError, match=r"^future event time: .* 301 s ahead"):
        event_timestamp(event, now=stamped - 301, max_ahead_s=300)


def test_a_windows_features_are_its_count_and_mean() -> None:
    aggregate = WindowedAggregate(field="amount", minutes=10)

    assert window_features(aggregate, 3.0, 60.0) == {
        "amount_count_10m": 3.0,
        "amount_mean_10m": 20.0,
    }
    assert window_features(aggregate, 0.0, 0.0) == {"amount_count_10m": 0.0}


UNBOUNDED = StreamSchema(
    name="tonnes",
    features=[FeatureSpec(name="mass")],
    aggregates=[WindowedAggregate(field="mass", minutes=60)],
)


def tonnes(event_id: str, mass: float | int) -> RawEvent:
    """A ``tonnes`` event of entity ``mine`` at a fixed time."""
    return RawEvent(
        event_id=event_id,
        stream="tonnes",
        entity_id="mine",
        event_time=datetime(2026, 1, 1, tzinfo=UTC),
        data={"mass": mass},
    )


def ingest(state: PartitionState, event_id: str, mass: float | int, offset: int) -> Any:
    """Validate and ingest a ``tonnes`` event from `offset`."""
    event = tonnes(event_id, mass)
    features = validate_features(event, UNBOUNDED)
    stamp = event.event_time.timestamp()
    return ingest_event(event, UNBOUNDED, features, stamp, offset, state, "events.raw")


def test_an_event_refused_while_its_feature_event_is_built_leaves_no_trace() -> None:
    """Refused by the feature event itself: dead-lettered. Resent, it is no duplicate (it was
    not remembered), and its value was never counted in the window of the events after it."""
    state = PartitionState(0, dedup_window_s=600, bucket_s=60, horizon_s=3600)
    stamp = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    for offset in (0, 1):  # the second time resent: refused for its reason, not dropped
        with pytest.raises(EventDecodeError, match=r"features\.mass: .* beyond the largest"):
            ingest_event(
                tonnes("b", 0), UNBOUNDED, {"mass": 1e308}, stamp, offset, state, "events.raw"
            )
    after = ingest(state, "b", 2.0, offset=2)
    duplicate = ingest(state, "b", 2.0, offset=3)

    assert after.features == {"mass": 2.0, "mass_count_60m": 1.0, "mass_mean_60m": 2.0}
    assert duplicate is None


def test_huge_values_are_refused_before_they_reach_an_entitys_window() -> None:
    """Two amounts of 1e308 used to overflow the entity's window sum to infinity, so every later
    event of the entity was dead-lettered: now each is refused at validation, nothing of it is
    stored, and neither later events nor a resend of it with a good value suffer."""
    state = PartitionState(0, dedup_window_s=600, bucket_s=60, horizon_s=3600)
    for offset, event_id in enumerate(["a", "b"]):
        with pytest.raises(InvalidEventError, match=r"too large: .* mass: 1e\+308 is beyond"):
            ingest(state, event_id, 1e308, offset)
    assert state.seal() is None, "a refused event leaves nothing to save"
    resent = ingest(state, "a", 3.0, offset=2)
    later = ingest(state, "c", 5.0, offset=3)

    assert resent.features == {"mass": 3.0, "mass_count_60m": 1.0, "mass_mean_60m": 3.0}
    assert later.features == {"mass": 5.0, "mass_count_60m": 2.0, "mass_mean_60m": 4.0}


def test_values_at_the_bound_keep_every_window_finite() -> None:
    state = PartitionState(0, dedup_window_s=600, bucket_s=60, horizon_s=3600)
    for offset in range(1000):
        last = ingest(state, f"e{offset}", MAX_MAGNITUDE, offset)
    assert last.features["mass_count_60m"] == 1000.0
    assert last.features["mass_mean_60m"] == pytest.approx(MAX_MAGNITUDE)
