"""The V2 gateway's pure logic: requests to feature events (checked as ingestion checks raw
events), routing as the router routes, and the protocol's answers and errors (no Kafka, no
HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from services.gateway.logic import (
    InferenceRequest,
    V2Error,
    answer_of,
    feature_events,
    has_cold_answer,
    model_metadata,
    parse_request,
    plan_request,
    served_predictions,
)
from shared.backends import Answer
from shared.deploying import deployment_from_options
from shared.errors import ModelError
from shared.events import FeatureSpec, StreamSchema, WindowedAggregate
from shared.routing import choose_variants, prediction_for

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SCHEMA = StreamSchema(
    name="payments",
    features=[
        FeatureSpec(name="amount", min=0, max=10_000),
        FeatureSpec(name="tier", type="categorical", categories=["basic", "premium"]),
        FeatureSpec(name="online", type="boolean", required=False),
    ],
)
DEPLOYMENT = deployment_from_options(
    "fraud",
    "payments",
    "models:/fraud@champion",
    canary="models:/fraud/2",
    canary_weight=0.5,
    rules=["tier==premium=models:/fraud/3"],
    shadows=["online:fraud"],
)


def body(*inputs: dict[str, Any], **fields: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **fields})


def tensor(name: str, data: list[Any], datatype: str = "FP64", shape: list[int] | None = None):
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


def request_of(*rows: dict[str, Any], **parameters: Any) -> InferenceRequest:
    columns = {name: [row[name] for row in rows] for name in rows[0]}
    inputs = [
        tensor(n, v, "BYTES" if isinstance(v[0], str) else "FP64") for n, v in columns.items()
    ]
    return parse_request(body(*inputs, id="req-1", parameters=parameters), 100, now=NOW)


def test_a_request_is_rows_of_its_input_tensors_with_the_id_as_event_id() -> None:
    parsed = parse_request(
        body(
            tensor("amount", [[10.0], [20.0]], shape=[2, 1]),
            tensor("tier", ["basic", "premium"], "BYTES"),
            id="abc",
            parameters={"entity_id": "u1", "event_time": "2026-12-07T11:00:00Z"},
            outputs=[{"name": "output"}],
        ),
        100,
    )

    assert parsed.rows == [{"amount": 10.0, "tier": "basic"}, {"amount": 20.0, "tier": "premium"}]
    assert parsed.event_ids() == ["abc:0", "abc:1"]
    assert (parsed.entity_id, parsed.outputs) == ("u1", ["output"])
    assert parsed.event_time == datetime(2026, 12, 7, 11, tzinfo=UTC)
    single = parse_request(body(tensor("amount", [1.0])), 100, now=NOW)
    assert len(single.id) == 32 and single.event_ids() == [single.id]
    assert single.event_time == NOW


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "the body is not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (body(), "'inputs' must be a non-empty list"),
        (body(tensor("amount", [1.0], "FLOAT")), "datatype 'FLOAT' is not a V2 datatype"),
        (body(tensor("amount", [1.0, 2.0], shape=[2, 2])), "is not [n] or [n, 1]"),
        (body(tensor("amount", [1.0, 2.0], shape=[3])), "holds 3 values, data 2"),
        (body(tensor("amount", [1.0]), tensor("tier", ["a", "b"], "BYTES")), "same number of rows"),
        (body(tensor("amount", [1.0]), tensor("amount", [2.0])), "same name"),
        (body(tensor("amount", [0.0] * 101)), "1 to 100 rows, this one 101"),
        (body(tensor("amount", [1.0]), id=7), "'id' must be a string"),
        (body(tensor("amount", [1.0]), parameters={"entity_id": 3}), "'entity_id' must be"),
        (body(tensor("amount", [1.0]), parameters={"event_time": "noon"}), "'event_time'"),
        (body(tensor("amount", [1.0]), outputs=[{"name": "logits"}]), "no output named logits"),
    ],
)
def test_a_malformed_request_is_refused_with_a_400_saying_why(raw: bytes, reason: str) -> None:
    with pytest.raises(V2Error) as refused:
        parse_request(raw, 100)

    assert refused.value.status == 400
    assert reason in str(refused.value)
    assert orjson.loads(refused.value.body()) == {"error": str(refused.value)}


def test_rows_become_feature_events_checked_by_the_stream_declaration() -> None:
    parsed = request_of({"amount": 5, "tier": "basic"}, {"amount": 7.5, "tier": "premium"})

    events = feature_events(parsed, SCHEMA, DEPLOYMENT)

    assert [(e.event_id, e.entity_id) for e in events] == [
        ("req-1:0", "req-1:0"),
        ("req-1:1", "req-1:1"),
    ]
    assert events[0].features == {"amount": 5.0, "tier": "basic"}
    assert all(e.answered_for == ["fraud"] and e.stream == "payments" for e in events)
    assert all(e.event_time == NOW and e.provenance is None for e in events)
    one_entity = feature_events(
        request_of({"amount": 1, "tier": "basic"}, entity_id="u9"), SCHEMA, DEPLOYMENT
    )
    assert one_entity[0].entity_id == "u9"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"amount": -1.0, "tier": "basic"}, "out of range: event 'req-1' of stream 'payments'"),
        ({"amount": "ten", "tier": "basic"}, "wrong type"),
        ({"amount": 1.0, "tier": "gold"}, "unknown category"),
        ({"tier": "basic"}, "missing field"),
        ({"amount": 1.0, "tier": "basic", "colour": "red"}, "no feature 'colour'"),
    ],
)
def test_rows_that_break_the_declaration_are_refused_as_ingestion_refuses_them(
    row: dict[str, Any], reason: str
) -> None:
    with pytest.raises(V2Error) as refused:
        feature_events(request_of(row), SCHEMA, DEPLOYMENT)

    assert (refused.value.status, reason in str(refused.value)) == (400, True), refused.value


def test_a_stream_with_windowed_aggregates_is_refused_it_needs_ingestion() -> None:
    windowed = SCHEMA.model_copy(
        update={"aggregates": [WindowedAggregate(field="amount", minutes=10)]}
    )

    with pytest.raises(V2Error, match="windowed aggregates, which only ingestion computes"):
        feature_events(request_of({"amount": 1.0, "tier": "basic"}), windowed, DEPLOYMENT)


def test_requests_are_routed_as_the_router_routes_or_pinned_to_the_version_named() -> None:
    rows = [{"amount": 1.0, "tier": t} for t in ("basic",) * 20 + ("premium",)]
    events = feature_events(request_of(*rows, entity_id="u1"), SCHEMA, DEPLOYMENT)

    calls = plan_request(events, DEPLOYMENT, None)

    expected = [
        (i, variant.name, served)
        for i, event in enumerate(events)
        for variant, served in choose_variants(DEPLOYMENT, event)
    ]
    assert [(c.position, c.variant.name, c.served) for c in calls] == expected
    assert ("rule-1", True) in {(c.variant.name, c.served) for c in calls if c.position == 20}
    pinned = plan_request(events, DEPLOYMENT, "canary")
    assert {(c.variant.name, c.served) for c in pinned} == {("canary", True)}
    with pytest.raises(V2Error) as unknown:
        plan_request(events, DEPLOYMENT, "7")
    assert unknown.value.status == 404 and "its versions: champion, canary" in str(unknown.value)


def predicted(parsed: InferenceRequest, answers: list[Answer | None]) -> tuple[list, list]:
    events = feature_events(parsed, SCHEMA, DEPLOYMENT)
    champion = DEPLOYMENT.variants[0]
    predictions = [
        prediction_for(event, DEPLOYMENT, champion, True, answer, 1.0)
        for event, answer in zip(events, answers, strict=True)
        if answer is not None
    ]
    return events, predictions


def test_the_answer_holds_the_served_outputs_probabilities_variants_and_event_ids() -> None:
    parsed = request_of({"amount": 1.0, "tier": "basic"}, {"amount": 2.0, "tier": "basic"})
    answers = [
        Answer("fraud", "4", 1, {"0": 0.25, "1": 0.75}),
        Answer("fraud", "4", 0, {"0": 0.5, "1": 0.5}),
    ]
    events, predictions = predicted(parsed, answers)

    answer = answer_of(parsed, DEPLOYMENT, served_predictions(events, predictions, {}))

    assert (answer["model_name"], answer["id"], answer["model_version"]) == ("fraud", "req-1", "4")
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["output"] == {
        "name": "output",
        "shape": [2],
        "datatype": "INT64",
        "data": [1, 0],
    }
    assert outputs["probabilities"]["shape"] == [2, 2]
    assert outputs["probabilities"]["data"] == [0.25, 0.75, 0.5, 0.5]
    assert outputs["classes"]["data"] == ["0", "1"]
    assert outputs["variant"]["data"] == ["champion", "champion"]
    assert outputs["event_id"]["data"] == ["req-1:0", "req-1:1"]
    only = parse_request(
        body(
            tensor("amount", [1.0]),
            tensor("tier", ["basic"], "BYTES"),
            outputs=[{"name": "output"}],
        ),
        10,
    )
    events, predictions = predicted(only, [Answer("fraud", "4", "yes", None)])
    answer = answer_of(only, DEPLOYMENT, served_predictions(events, predictions, {}))
    assert [(o["name"], o["datatype"], o["data"]) for o in answer["outputs"]] == [
        ("output", "BYTES", ["yes"])
    ]


def test_a_served_variant_that_failed_or_has_no_answer_yet_is_a_503() -> None:
    parsed = request_of({"amount": 1.0, "tier": "basic"})
    events, _ = predicted(parsed, [None])
    failure = ("fraud", "champion", ModelError("models:/fraud@champion", "ValueError: boom"))

    with pytest.raises(V2Error) as failed:
        served_predictions(events, [], {0: [failure]})

    assert failed.value.status == 503
    assert "variant 'champion': model failed: models:/fraud@champion: ValueError" in str(
        failed.value
    )
    events, cold = predicted(parsed, [Answer("fraud", "cold", None, None)])
    error = has_cold_answer(parsed, served_predictions(events, cold, {}))
    assert error is not None and error.status == 503 and "no answer yet" in str(error)


def test_model_metadata_lists_variants_as_versions_and_features_as_inputs() -> None:
    metadata = model_metadata(DEPLOYMENT, SCHEMA)

    assert metadata["name"] == "fraud"
    assert metadata["versions"] == ["champion", "canary", "rule-1", "shadow-1"]
    assert metadata["inputs"] == [
        {"name": "amount", "datatype": "FP64", "shape": [-1]},
        {"name": "tier", "datatype": "BYTES", "shape": [-1]},
        {"name": "online", "datatype": "BOOL", "shape": [-1]},
    ]
    assert model_metadata(DEPLOYMENT, None)["inputs"] == []


async def test_the_http_layer_answers_refusals_with_v2_error_bodies_never_a_traceback() -> None:
    """The gateway's web app before any Kafka call: unknown models and paths, bad bodies and an
    unready server get the protocol's JSON error and status (no broker: nothing is recorded)."""
    from aiohttp.test_utils import TestClient, TestServer

    from services.gateway.app import Gateway
    from shared.settings import DriftlineSettings, GatewaySettings

    gateway = Gateway(DriftlineSettings(), GatewaySettings(max_request_bytes=2048))
    gateway.index.apply("fraud", DEPLOYMENT)
    gateway.streams["payments"] = SCHEMA
    async with TestClient(TestServer(gateway.web_app())) as client:
        not_ready = await client.get("/v2/health/ready")
        assert (not_ready.status, await not_ready.json()) == (400, {"ready": False})
        assert (await client.get("/health")).status == 503
        gateway.ready.set()
        assert (await client.get("/v2/health/ready")).status == 200

        unknown = await client.post("/v2/models/nope/infer", data=b"{}")
        assert unknown.status == 404
        assert (await unknown.json())["error"].startswith("no model 'nope' (models are deployments")
        version = await client.get("/v2/models/fraud/versions/9")
        assert version.status == 404 and "no version '9'" in (await version.json())["error"]
        bad = await client.post("/v2/models/fraud/infer", data=b"[")
        assert bad.status == 400 and "not JSON" in (await bad.json())["error"]
        refused = await client.post(
            "/v2/models/fraud/infer", data=body(tensor("amount", [-1.0]), id="x")
        )
        assert (
            refused.status == 400 and "out of range: event 'x'" in (await refused.json())["error"]
        )
        large = await client.post("/v2/models/fraud/infer", data=b" " * 4096)
        assert large.status == 413 and "larger than 2048 bytes" in (await large.json())["error"]
        nowhere = await client.get("/v3/anything")
        assert nowhere.status == 404 and "error" in await nowhere.json()
        metadata = await (await client.get("/v2/models/fraud")).json()
        assert metadata["parameters"] == {"stream": "payments"}
