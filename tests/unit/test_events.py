"""Event schemas: JSON on the wire with a schema version; decode errors say what is wrong."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import orjson
import pytest

from shared.errors import EventDecodeError
from shared.events import (
    MAX_MAGNITUDE,
    DeadLetter,
    Deployment,
    DriftAlert,
    Event,
    FeatureEvent,
    Feedback,
    LabeledPrediction,
    ModelSnapshot,
    Prediction,
    RawEvent,
    StreamSchema,
    VariantOutput,
    alert_id_for,
    decode,
    derived_id,
    encode,
    prediction_id_for,
)
from tests.support.samples import SAMPLES


def _raw(**overrides: object) -> bytes:
    event = {
        "event_id": "ev-1",
        "stream": "payments",
        "entity_id": "user-1",
        "event_time": "2026-01-01T10:00:00Z",
        "data": {"amount": 12.5},
    }
    event.update(overrides)
    return orjson.dumps(event)


def test_raw_event_round_trips_with_schema_version() -> None:
    event = decode(RawEvent, _raw(), "events.raw")
    wire = orjson.loads(encode(event))
    assert wire["schema_version"] == 1
    assert decode(RawEvent, encode(event), "events.raw") == event


def test_times_without_zone_or_as_epoch_are_utc() -> None:
    naive = decode(RawEvent, _raw(event_time="2026-01-01T10:00:00"), "t")
    epoch = decode(RawEvent, _raw(event_time=1767261600), "t")
    assert naive.event_time == epoch.event_time == datetime(2026, 1, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe", "not valid JSON"),
        (None, "empty message"),
        (_raw(event_id=""), "event_id: String should have at least 1 character"),
        (orjson.dumps({"stream": "s"}), "event_id: Field required"),
        (_raw(event_time="yesterday"), "event_time:"),
    ],
)
def test_decode_errors_name_the_problem(data: bytes | None, reason: str) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode(RawEvent, data, "events.raw")
    assert caught.value.topic == "events.raw"
    assert reason in caught.value.reason


def test_features_refuse_nan_and_infinity() -> None:
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="NaN and infinity"):
            FeatureEvent(event_id="e", stream="s", entity_id="x", event_time=0, features={"f": bad})


def test_dead_letter_keeps_original_bytes_exactly() -> None:
    original = b"\x00\xffnot utf-8\x80"
    letter = DeadLetter(
        reason="r", service="ingestion", source_topic="events.raw", partition=1, offset=7,
        key=b"k", value=original,
    )  # fmt: skip
    assert decode(DeadLetter, encode(letter), "deadletter").value == original


def _answer(variant: str = "champion", version: str = "3", model: str = "fraud") -> VariantOutput:
    return VariantOutput(
        variant=variant,
        role="champion" if variant == "champion" else "shadow",
        served=variant == "champion",
        model_name=model,
        model_version=version,
        output=True,
    )


def test_a_prediction_id_is_the_same_for_a_replay_and_differs_by_variant_and_version() -> None:
    first = prediction_id_for("ev-1", "fraud", _answer())

    assert first == prediction_id_for("ev-1", "fraud", _answer().model_copy(update={"output": 0}))
    others = [
        prediction_id_for("ev-2", "fraud", _answer()),
        prediction_id_for("ev-1", "fraud", _answer(variant="shadow")),
        prediction_id_for("ev-1", "fraud", _answer(version="4")),
        prediction_id_for("ev-1", "fraud", _answer(model="other")),
        prediction_id_for("ev-1", "loans", _answer()),
    ]
    assert len({first, *others}) == 1 + len(others)


def test_an_alert_id_is_the_same_for_a_replay_and_differs_by_position_level_and_key() -> None:
    first = alert_id_for("data:pay:amount", None, "ADWIN", "drift", 412)

    assert first == alert_id_for("data:pay:amount", None, "ADWIN", "drift", 412)
    others = [
        alert_id_for("data:pay:amount", None, "ADWIN", "drift", 413),
        alert_id_for("data:pay:amount", None, "ADWIN", "warning", 412),
        alert_id_for("data:pay:fee", None, "ADWIN", "drift", 412),
        alert_id_for("data:pay:amount", None, "KSWIN", "drift", 412),
        alert_id_for("concept:m:1", "loans", "DDM", "drift", 412),
        alert_id_for("concept:m:1", "fraud", "DDM", "drift", 412),
    ]
    assert len({first, *others}) == 1 + len(others)


def test_derived_ids_keep_their_parts_apart_and_are_valid_identifiers() -> None:
    assert derived_id("alert", "a", "b") != derived_id("alert", "ab")
    assert derived_id("alert", "a", 1) != derived_id("alert", "a", "1")
    assert derived_id("alert", "x") != derived_id("prediction", "x")
    assert len(derived_id("alert", "x")) == 32


def _with(schema: type[Event], path: tuple[str | int, ...], value: object) -> bytes:
    """The sample record of `schema` on the wire, with the field at `path` set to `value`."""
    document = orjson.loads(encode(SAMPLES[schema]))
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return json.dumps(document).encode()  # json, not orjson: it writes NaN and huge integers


TIME_FIELDS = [
    (schema, name)
    for schema, sample in SAMPLES.items()
    for name, value in sample
    if isinstance(value, datetime)
]


@pytest.mark.parametrize("time", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
@pytest.mark.parametrize(("schema", "field"), TIME_FIELDS)
def test_a_time_outside_the_utc_range_is_refused_by_every_schema(
    schema: type[Event], field: str, time: str
) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode(schema, _with(schema, (field,), time), "t")
    assert (
        caught.value.reason == f"{field}: Value error, {time} lies outside years 1 to 9999 in UTC"
    )


def test_every_schema_with_a_time_is_covered() -> None:
    assert {schema for schema, _ in TIME_FIELDS} == set(SAMPLES)


NUMBER_FIELDS = [
    (RawEvent, ("event_time",)),
    (FeatureEvent, ("features", "amount")),
    (Prediction, ("features", "count")),
    (Prediction, ("outcome", "output")),
    (Prediction, ("outcome", "probabilities", "1")),
    (Feedback, ("label",)),
    (LabeledPrediction, ("label",)),
    (LabeledPrediction, ("features", "amount")),
    (LabeledPrediction, ("outcomes", 0, "output")),
    (LabeledPrediction, ("outcomes", 0, "probabilities", "0")),
    (StreamSchema, ("features", 0, "min")),
    (StreamSchema, ("features", 1, "max")),
]


@pytest.mark.parametrize(("schema", "path"), NUMBER_FIELDS)
@pytest.mark.parametrize("value", [10**400, 1.7e308, -1e101])
def test_a_number_beyond_the_bound_is_refused_where_it_would_enter_state(
    schema: type[Event], path: tuple[str | int, ...], value: object
) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode(schema, _with(schema, path, value), "t")
    assert caught.value.reason.startswith(".".join(map(str, path)) + ":")


@pytest.mark.parametrize(("schema", "path"), NUMBER_FIELDS[1:])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_where_they_would_enter_state(
    schema: type[Event], path: tuple[str | int, ...], value: float
) -> None:
    with pytest.raises(EventDecodeError) as caught:
        decode(schema, _with(schema, path, value), "t")
    reason = caught.value.reason
    assert reason.startswith(".".join(map(str, path)) + ":")
    assert "not a finite number" in reason


def test_numbers_up_to_the_bound_are_kept_as_they_came() -> None:
    feedback = decode(Feedback, _with(Feedback, ("label",), -MAX_MAGNITUDE), "t")
    assert feedback.label == -MAX_MAGNITUDE
    assert decode(Feedback, encode(feedback), "t") == feedback
    assert decode(Feedback, _with(Feedback, ("label",), 10**100), "t").label == 10**100


def test_a_declared_range_no_value_fits_is_refused() -> None:
    with pytest.raises(EventDecodeError, match=r"features\.0: Value error, min 0 is above max -1"):
        decode(StreamSchema, _with(StreamSchema, ("features", 0, "max"), -1), "t")


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        (LabeledPrediction, ("feedback_delay_s",)),
        (DriftAlert, ("stats_before", "mean")),
        (ModelSnapshot, ("metrics", "mae")),
        (Deployment, ("promotion", "max_tier_regression")),
    ],
)
def test_no_float_of_a_record_takes_nan_it_could_not_be_read_back(
    schema: type[Event], path: tuple[str | int, ...]
) -> None:
    """Written, NaN becomes null, which the schema then refuses: the record is refused instead."""
    with pytest.raises(EventDecodeError, match=r"Input should be a finite number"):
        decode(schema, _with(schema, path, math.nan), "t")
