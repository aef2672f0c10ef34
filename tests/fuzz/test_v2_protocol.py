"""The two new places where Open Inference Protocol JSON comes in from outside: a request to the
gateway, and a model endpoint's answer to the router. Whatever arrives, only the declared errors
escape (`V2Error`, 400: the client is told why; `ModelError`: that batch's events are
dead-lettered naming the endpoint), and what is accepted holds no number a record may not."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.logic import V2Error, feature_events, parse_request
from shared.errors import ModelError
from shared.events import Deployment, StreamSchema
from shared.v2 import ModelMetadata, TensorSpec, read_answers
from tests.fuzz.strategies import HOSTILE_NUMBERS, JSON_VALUES

pytestmark = pytest.mark.fuzz

STREAM = StreamSchema.model_validate(
    {
        "name": "payments",
        "features": [
            {"name": "amount", "type": "numeric", "min": 0, "max": 1e6},
            {"name": "tier", "type": "categorical"},
            {"name": "known", "type": "boolean"},
        ],
    }
)
DEPLOYMENT = Deployment.model_validate(
    {
        "name": "fraud",
        "stream": "payments",
        "variants": [{"name": "champion", "role": "champion", "model_uri": "online:m"}],
    }
)
VALUES = st.one_of(HOSTILE_NUMBERS, JSON_VALUES)
TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["amount", "tier", "known", "other", ""]),
        "shape": st.one_of(st.lists(st.integers(-2, 3), max_size=3), JSON_VALUES),
        "datatype": st.sampled_from(["FP64", "BYTES", "BOOL", "INT64", "??"]),
        "data": st.one_of(st.lists(VALUES, max_size=4), VALUES),
    }
)
REQUEST = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(TENSOR, max_size=3), JSON_VALUES)},
    optional={
        "id": JSON_VALUES,
        "parameters": st.one_of(
            st.fixed_dictionaries(
                {}, optional={"entity_id": JSON_VALUES, "event_time": JSON_VALUES}
            ),
            JSON_VALUES,
        ),
        "outputs": JSON_VALUES,
    },
)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_finite(v) for v in value)
    return True


BODIES = st.one_of(
    st.binary(max_size=200), REQUEST.map(lambda d: json.dumps(d, default=str).encode())
)


@given(body=BODIES)
def test_gateway_request(body: bytes) -> None:
    """A request is answered or refused with 400 and a reason, never a 500; the events it makes
    are valid feature events of the stream."""
    try:
        request = parse_request(body, max_rows=4)
        events = feature_events(request, STREAM, DEPLOYMENT)
    except V2Error as exc:
        assert exc.status == 400 and str(exc)
        return
    assert [e.event_id for e in events] == request.event_ids()
    assert all(_finite(e.features) for e in events)


METADATA = ModelMetadata(
    name="fraud",
    versions=("1",),
    inputs=(TensorSpec("amount", "FP64", (-1, 1)),),
    outputs=(
        TensorSpec("predict", "INT64", (-1, 1)),
        TensorSpec("predict_proba", "FP64", (-1, 2), {"classes": [0, 1]}),
    ),
)
OUTPUT = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["predict", "predict_proba", "other"]),
        "data": st.one_of(st.lists(VALUES, max_size=6), VALUES),
    },
    optional={"shape": JSON_VALUES, "datatype": JSON_VALUES},
)


WELL_SHAPED = st.fixed_dictionaries(
    {
        "outputs": st.tuples(
            st.fixed_dictionaries(
                {"name": st.just("predict"), "data": st.lists(VALUES, max_size=3)}
            ),
            st.fixed_dictionaries(
                {"name": st.just("predict_proba"), "data": st.lists(VALUES, max_size=6)}
            ),
        ).map(list)
    }
)
"""Both declared outputs, with any values in them."""


@given(
    body=st.one_of(
        JSON_VALUES, st.fixed_dictionaries({"outputs": st.lists(OUTPUT, max_size=3)}), WELL_SHAPED
    ),
    rows=st.integers(1, 3),
)
def test_endpoint_answer(body: Any, rows: int) -> None:
    """An endpoint's answer is read for every row or refused as a `ModelError` naming it."""
    try:
        answers = read_answers("v2+http://models:8080/fraud", METADATA, body, rows)
    except ModelError as exc:
        assert "v2+http://models:8080/fraud" in str(exc)
        return
    assert len(answers) == rows
