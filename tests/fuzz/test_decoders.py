"""Every event decoder fed arbitrary bytes and mutated records: only the declared
`EventDecodeError` escapes, and whatever is accepted survives its own encoding unchanged."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import EventDecodeError
from shared.events import Event, decode, encode
from tests.fuzz.strategies import mutated, schema_shaped
from tests.support.samples import SAMPLES

pytestmark = pytest.mark.fuzz
SCHEMAS = list(SAMPLES)


def accepted(schema: type[Event], data: bytes) -> Event | None:
    """The decoded record, or None when it is refused with the declared error."""
    try:
        return decode(schema, data, "fuzz")
    except EventDecodeError as exc:
        assert exc.reason, "a refusal says why"
        return None


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [n for item in value.values() for n in _floats(item)]
    if isinstance(value, list | tuple):
        return [n for item in value for n in _floats(item)]
    if hasattr(value, "model_dump"):
        return _floats(value.model_dump())
    return []


def check_accepted(schema: type[Event], data: bytes) -> None:
    """A record accepted is written as it was read: its wire form reads back to it."""
    event = accepted(schema, data)
    if event is None:
        return
    again = decode(schema, encode(event), "fuzz")
    assert encode(again) == encode(event)
    if schema.__name__ != "RawEvent":  # its `data` is checked by ingestion, against the stream
        assert again == event
        assert all(math.isfinite(n) for n in _floats(event))


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes(schema: type[Event], data: bytes) -> None:
    check_accepted(schema, data)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
@given(data=st.data())
def test_mutated_records(schema: type[Event], data: st.DataObject) -> None:
    check_accepted(schema, data.draw(mutated(SAMPLES[schema])))


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: s.__name__)
@given(data=st.data())
def test_schema_shaped_values(schema: type[Event], data: st.DataObject) -> None:
    check_accepted(schema, data.draw(schema_shaped(SAMPLES[schema])))
