"""The prediction path on the real broker with models from a real MLflow registry (SQLite):
raw events are validated into features, routed to champion, sticky canary, tier rule and shadow
variants, the served version follows a moved alias without a restart, and every kind of bad
event is dead-lettered with its reason while the good ones around it are predicted."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature
from prometheus_client.parser import text_string_to_metric_families
from sklearn.dummy import DummyClassifier
from typer.testing import CliRunner

from services.cli import app as cli
from shared.admin import publish
from shared.events import Deployment, FeatureEvent, Variant, encode
from shared.registry import set_alias
from shared.topics import DEADLETTER, DEPLOYMENTS, EVENTS_RAW, FEATURES, PREDICTIONS
from tests.support.kafka import Record, consume_until, count_of, produce
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.integration

MODEL = f"fraud-{uuid.uuid4().hex[:8]}"
"""A registered model name of this run's own (an MLflow server that answers is reused)."""
EXAMPLE = pd.DataFrame({"amount": [1.0, 50.0, 200.0]})


def register_constant(tracking_uri: str, label: int) -> str:
    """A new version of `MODEL` that always answers `label` (so tests can tell versions
    apart); logged with a signature and fixed requirements, which keeps logging fast."""
    model = DummyClassifier(strategy="constant", constant=label).fit(EXAMPLE, [label, 0, label])
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=MODEL,
            signature=infer_signature(EXAMPLE, model.predict(EXAMPLE)),
            pip_requirements=["scikit-learn"],
        )
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def models(mlflow_uri: str) -> Iterator[str]:
    """The registry with `MODEL`: version n answers n (1, 2, 3); @champion is 1."""
    for label in (1, 2, 3):
        assert register_constant(mlflow_uri, label) == str(label)
    set_alias(mlflow_uri, MODEL, "champion", "1")
    yield mlflow_uri


async def run_cli(pipeline: Pipeline, mlflow_uri: str, *args: str) -> str:
    """Run a `driftline` command in-process (in a thread: it runs its own event loop) against
    this test's Driftline; fail on an error."""
    env = {**pipeline.env, "DRIFTLINE_MLFLOW_TRACKING_URI": mlflow_uri}
    result = await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)
    assert result.exit_code == 0, f"driftline {' '.join(args)}: {result.output} {result.exception}"
    return result.output


def feature_event(event_id: str, entity: str, stream: str, **features: float | str) -> FeatureEvent:
    return FeatureEvent(
        event_id=event_id,
        stream=stream,
        entity_id=entity,
        event_time=datetime.now(UTC),
        features={"amount": 10.0, "tier": "basic"} | features,
    )


def served_by_event(records: list[Record]) -> dict[str, dict]:
    return {r.json()["event_id"]: r.json() for r in records if r.json()["outcome"]["served"]}


async def test_champion_answers_a_sticky_ten_percent_canary_and_a_tier_rule(
    pipeline: Pipeline, models: str, tmp_path: Path
) -> None:
    set_alias(models, MODEL, "champion", "1")
    pipeline.start("router", DRIFTLINE_MLFLOW_TRACKING_URI=models)
    (tmp_path / "payments.json").write_text(json.dumps(STREAM))
    await run_cli(pipeline, models, "streams", "declare", "--file", str(tmp_path / "payments.json"))
    await run_cli(
        pipeline, models, "deploy", "fraud", "--stream", "payments",
        "--champion", f"models:/{MODEL}@champion",
        "--canary", f"models:/{MODEL}/3", "--canary-weight", "0.1",
        "--rule", f'tier=="premium"=models:/{MODEL}/2',
    )  # fmt: skip
    assert f"champion(champion)=models:/{MODEL}@champion" in await run_cli(
        pipeline, models, "deployments", "list"
    )
    assert f"{MODEL}  versions=1,2,3  @champion=1" in await run_cli(
        pipeline, models, "models", "list"
    )

    n_entities = 5_000
    events = [
        feature_event(f"ev-{round_}-{i}", f"user-{i}", "payments")
        for round_ in range(2)
        for i in range(n_entities)
    ]
    events += [feature_event(f"vip-{i}", f"vip-{i}", "payments", tier="premium") for i in range(50)]
    await produce(pipeline.bootstrap, pipeline.topic(FEATURES), [(e.entity_id, e) for e in events])

    topic = pipeline.topic(PREDICTIONS)
    records = await consume_until(
        pipeline.bootstrap, [topic], count_of(topic, len(events)), timeout=150
    )

    served = served_by_event(records)
    assert len(served) == len(records) == len(events)
    variant_of_entity: dict[str, set[str]] = defaultdict(set)
    for prediction in served.values():
        variant_of_entity[prediction["entity_id"]].add(prediction["outcome"]["variant"])
    users = {e: v for e, v in variant_of_entity.items() if e.startswith("user-")}
    assert all(len(v) == 1 for v in users.values()), "an entity changed variant"
    share = Counter(next(iter(v)) for v in users.values())
    assert share.keys() == {"champion", "canary"}
    assert 0.08 <= share["canary"] / n_entities <= 0.12
    outputs = {(p["outcome"]["variant"], p["outcome"]["output"]) for p in served.values()}
    assert outputs == {("champion", 1), ("canary", 3), ("rule-1", 2)}
    assert all(served[f"vip-{i}"]["outcome"]["variant"] == "rule-1" for i in range(50))
    champion = next(p["outcome"] for p in served.values() if p["outcome"]["role"] == "champion")
    assert (champion["model_name"], champion["model_version"]) == (MODEL, "1")
    assert champion["probabilities"] == {"0": 0.0, "1": 1.0}
    assert all(r.key == r.json()["event_id"].encode() for r in records)


OTHER_STREAMS = (("clicks", "amount"), ("wide", "age"), ("orphan", "amount"))
STREAM = {
    "name": "payments",
    "features": [
        {"name": "amount", "type": "numeric", "min": 0, "max": 10000},
        {"name": "tier", "type": "categorical", "categories": ["basic", "premium"]},
        {"name": "online", "type": "boolean", "required": False},
    ],
    "aggregates": [{"field": "amount", "minutes": 10}],
}


def raw_event(event_id: str, stream: str = "payments", **data: object) -> bytes:
    return json.dumps(
        {
            "event_id": event_id,
            "stream": stream,
            "entity_id": "user-1",
            "event_time": time.time(),
            "data": {"amount": 10.0, "tier": "basic"} | data,
        }
    ).encode()


async def test_bad_events_are_dead_lettered_good_ones_predicted_and_shadowed_and_alias_followed(
    pipeline: Pipeline, models: str, tmp_path: Path
) -> None:
    declarations = [
        STREAM,
        *({"name": name, "features": [{"name": feature}]} for name, feature in OTHER_STREAMS),
    ]
    for declaration in declarations:
        path = tmp_path / f"{declaration['name']}.json"
        path.write_text(json.dumps(declaration))
        await run_cli(pipeline, models, "streams", "declare", "--file", str(path))
    assert "payments  amount:numeric, tier:categorical" in await run_cli(
        pipeline, models, "streams", "list"
    )
    await run_cli(
        pipeline, models, "deploy", "fraud", "--stream", "payments",
        "--champion", f"models:/{MODEL}@champion", "--shadow", f"models:/{MODEL}/3",
    )  # fmt: skip
    await run_cli(
        pipeline, models, "deploy", "wide", "--stream", "wide", "--champion", f"models:/{MODEL}/1"
    )
    # `driftline deploy` refuses a model that does not exist; another writer of the topic may not.
    ghost = Variant(name="champion", role="champion", model_uri="models:/no-such-model@champion")
    await publish(
        pipeline.settings,
        DEPLOYMENTS,
        "ghost",
        encode(Deployment(name="ghost", stream="clicks", variants=[ghost])),
    )
    set_alias(models, MODEL, "champion", "1")
    ingestion, router = pipeline.start_together(
        {
            "ingestion": {"DRIFTLINE_INGESTION_MAX_EVENT_BYTES": "1000"},
            "router": {
                "DRIFTLINE_MLFLOW_TRACKING_URI": models,
                "DRIFTLINE_ROUTER_MODEL_REFRESH_SECONDS": "1",
            },
        }
    )

    bad = {
        b"\xff not json": "not valid JSON",
        raw_event("b-big", note="x" * 2000): "oversized payload",
        raw_event("b-missing", tier=None): "missing field: event 'b-missing'",
        raw_event("b-type", amount="ten"): "wrong type: event 'b-type'",
        raw_event("b-nan").replace(b"10.0", b"NaN"): "not finite: event 'b-nan'",
        raw_event("b-range", amount=-5): "out of range: event 'b-range'",
        raw_event("b-cat", tier="gold"): "unknown category: event 'b-cat'",
        raw_event("b-stream", stream="refunds"): "unknown stream: 'refunds'",
    }
    messages = [raw_event("g-0")]
    for i, value in enumerate(bad, start=1):
        messages += [value, raw_event(f"g-{i}")]
    messages += [raw_event("g-1"), raw_event("c-1", stream="clicks")]
    messages += [raw_event("w-1", stream="wide", age=3.0), raw_event("o-1", stream="orphan")]
    await produce(
        pipeline.bootstrap, pipeline.topic(EVENTS_RAW), [(b"user-1", m) for m in messages]
    )

    good = {f"g-{i}" for i in range(len(bad) + 1)}
    predictions_topic, letters_topic = pipeline.topic(PREDICTIONS), pipeline.topic(DEADLETTER)
    records = await consume_until(
        pipeline.bootstrap,
        [predictions_topic, letters_topic],
        lambda rs: (
            sum(r.topic == predictions_topic for r in rs) >= 2 * len(good)
            and sum(r.topic == letters_topic for r in rs) >= len(bad) + 3
        ),
        timeout=120,
    )

    predictions = [r.json() for r in records if r.topic == predictions_topic]
    served = served_by_event([r for r in records if r.topic == predictions_topic])
    assert served.keys() == good
    assert {p["outcome"]["output"] for p in served.values()} == {1}
    shadows = [p for p in predictions if not p["outcome"]["served"]]
    assert {p["event_id"] for p in shadows} == good
    assert {(p["outcome"]["variant"], p["outcome"]["output"]) for p in shadows} == {("shadow-1", 3)}
    first = next(p for p in predictions if p["event_id"] == "g-0")
    assert first["features"]["amount_count_10m"] == 1.0
    assert first["features"]["amount_mean_10m"] == 10.0
    letters = [r.json() for r in records if r.topic == letters_topic]
    from_ingestion = [x for x in letters if x["service"] == "ingestion"]
    assert len(from_ingestion) == len(bad)
    for letter, (value, reason) in zip(from_ingestion, bad.items(), strict=True):
        assert reason in letter["reason"]
        assert letter["source_topic"] == pipeline.topic(EVENTS_RAW)
        assert base64.b64decode(letter["value"]) == value
        assert letter["partition"] >= 0 and letter["offset"] >= 0
    from_router = sorted(x["reason"] for x in letters if x["service"] == "router")
    assert from_router[0].startswith("no deployment: stream 'orphan'")
    assert from_router[1].startswith("unknown model: models:/no-such-model@champion")
    assert from_router[2].startswith(f"wrong feature set: models:/{MODEL}/1: event lacks amount")
    assert 'driftline_duplicate_events_total{stream="payments"} 1.0' in ingestion.metrics()
    counted = ingestion.metrics()
    for code, count in (("bad_event", 2), ("missing_field", 1), ("unknown_stream", 1)):
        labels = {"service": "ingestion", "source_topic": pipeline.topic(EVENTS_RAW)}
        found = sample_value(counted, "driftline_dead_letters_total", {**labels, "reason": code})
        assert found == count, code
    assert "b-missing" not in counted and "refunds" not in counted, "no value in a label"
    routed = router.metrics()
    assert sample_value(routed, "driftline_build_info", {"faust": "0.15.3"}) == 1
    assert sample_value(routed, "driftline_worker_ready", {"service": "router"}) == 1
    for histogram in ("processing", "end_to_end"):
        name = f"driftline_{histogram}_seconds_count"
        assert (sample_value(routed, name, {"service": "router"}) or 0) >= len(good), name

    set_alias(models, MODEL, "champion", "2")
    probe, version = 0, "1"
    deadline = time.monotonic() + 60
    while version != "2" and time.monotonic() < deadline:
        probe += 1
        event_id = f"probe-{probe}"
        await produce(pipeline.bootstrap, pipeline.topic(EVENTS_RAW), [("u", raw_event(event_id))])
        answer = await consume_until(
            pipeline.bootstrap,
            [predictions_topic],
            lambda rs, event_id=event_id: event_id in served_by_event(rs),
        )
        version = served_by_event(answer)[event_id]["outcome"]["model_version"]
    assert served_by_event(answer)[event_id]["outcome"]["output"] == 2
    assert version == "2"
    assert router.process is not None and router.process.poll() is None, "router restarted"
    loads = f'driftline_model_loads_total{{uri="models:/{MODEL}@champion"}} 2.0'
    assert loads in router.metrics()


def sample_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of the first sample `name` in a worker's /metrics `text` with `labels`."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return None
