"""The V2 gateway on the real broker with models from a real MLflow registry: a plain-HTTP V2
client gets answers from `driftline gateway` (a real process) for a deployment published after
it started, the router does not predict those events again, labels sent for the answered event
ids come back joined on ``predictions.labeled``, and the drift service counts the events'
features and the served model's errors; bad requests get 400 with a V2 error body, an unknown
model 404."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature
from sklearn.linear_model import LogisticRegression

from services.processes import ServiceProcess
from shared.admin import publish
from shared.deploying import deployment_from_options
from shared.events import Feedback, StreamSchema, encode
from shared.topics import (
    DEPLOYMENTS,
    FEATURES,
    FEEDBACK,
    PREDICTIONS,
    PREDICTIONS_LABELED,
    STREAMS,
)
from tests.support.kafka import Record, consume_until, produce
from tests.support.pipeline import Pipeline
from tests.support.records import stored_state

pytestmark = pytest.mark.integration

MODEL = f"gw-{uuid.uuid4().hex[:8]}"
N = 40
"""Requests answered (one event each)."""
STREAM = StreamSchema.model_validate(
    {
        "name": "loans",
        "features": [
            {"name": "amount", "min": 0, "max": 1000},
            {"name": "plan", "type": "categorical", "categories": ["basic", "gold"]},
        ],
    }
)


@pytest.fixture(scope="module")
def model_uri(mlflow_uri: str) -> Iterator[str]:
    """A logistic regression on ``amount`` registered as version 1 of `MODEL`."""
    frame = pd.DataFrame({"amount": [float(a) for a in range(0, 1000, 10)]})
    labels = (frame["amount"] > 500).astype(int)
    model = LogisticRegression().fit(frame, labels)
    mlflow.set_tracking_uri(mlflow_uri)
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model,
            name="model",
            registered_model_name=MODEL,
            signature=infer_signature(frame, model.predict(frame)),
            pip_requirements=["scikit-learn"],
        )
    yield mlflow_uri


def infer_body(i: int) -> dict:
    return {
        "id": f"gw-{i}",
        "parameters": {"entity_id": f"user-{i % 7}"},
        "inputs": [
            {"name": "amount", "shape": [1], "datatype": "FP64", "data": [i * 25.0]},
            {"name": "plan", "shape": [1], "datatype": "BYTES", "data": ["basic"]},
        ],
    }


async def until(condition, timeout: float = 90.0) -> None:
    """Wait until `condition()` (awaited) holds; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.3)


async def test_v2_answers_are_recorded_labeled_and_monitored(
    pipeline: Pipeline, model_uri: str
) -> None:
    env = {**pipeline.env, "DRIFTLINE_MLFLOW_TRACKING_URI": model_uri}
    await publish(pipeline.settings, STREAMS, STREAM.name, encode(STREAM))
    gateway = ServiceProcess(
        "gateway", env, pipeline.workdir / "gateway.log", argv=["-m", "services.cli", "gateway"]
    )
    workers = [
        ServiceProcess(service, env, pipeline.workdir / f"{service}.log")
        for service in ("router", "feedback", "drift")
    ]
    processes = [gateway, *workers]
    pipeline.workers += processes  # stopped by the fixture too, whatever fails
    try:
        for process in processes:
            process.spawn()
        for process in processes:
            process.wait_ready(120)
        await answer_label_and_monitor(pipeline, gateway, workers[0])
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in processes))


async def answer_label_and_monitor(
    pipeline: Pipeline, gateway: ServiceProcess, router: ServiceProcess
) -> None:

    base = f"http://127.0.0.1:{gateway.port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        assert (await client.get("/v2/health/ready")).json() == {"ready": True}
        missing = await client.post("/v2/models/loan-risk/infer", json=infer_body(0))
        assert missing.status_code == 404 and "no model 'loan-risk'" in missing.json()["error"]

        deployment = deployment_from_options(
            "loan-risk",
            "loans",
            f"models:/{MODEL}/1",
            canary=f"models:/{MODEL}/1",
            canary_weight=0.5,
        )
        await publish(pipeline.settings, DEPLOYMENTS, deployment.name, encode(deployment))

        async def model_ready() -> bool:
            # the first ask loads the model from MLflow: half a minute or more on a busy machine
            ready = await client.get("/v2/models/loan-risk/ready", timeout=180)
            return ready.status_code == 200

        await until(model_ready, timeout=240)  # applied without a restart, the model loaded
        metadata = (await client.get("/v2/models/loan-risk")).json()
        assert metadata["versions"] == ["champion", "canary"]
        assert [i["name"] for i in metadata["inputs"]] == ["amount", "plan"]

        answers = await asyncio.gather(
            *(client.post("/v2/models/loan-risk/infer", json=infer_body(i)) for i in range(N))
        )
        out_of_range = infer_body(99) | {"id": "bad-1"}
        out_of_range["inputs"][0]["data"] = [-5.0]
        no_tensor = {"id": "bad-2", "inputs": [{"name": "amount", "data": [1.0]}]}
        refused = [
            await client.post("/v2/models/loan-risk/infer", json=body)
            for body in (out_of_range, no_tensor)
        ]
        garbage = await client.post("/v2/models/loan-risk/infer", content=b"{")
        pinned = await client.post("/v2/models/loan-risk/versions/canary/infer", json=infer_body(N))
        metrics_text = (await client.get("/metrics")).text

    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    by_id = {a.json()["id"]: a.json() for a in answers}
    assert set(by_id) == {f"gw-{i}" for i in range(N)}
    served_by = {}
    for i in range(N):
        outputs = {o["name"]: o for o in by_id[f"gw-{i}"]["outputs"]}
        assert outputs["output"]["data"] == [int(i * 25.0 > 500)]
        assert outputs["classes"]["data"] == ["0", "1"] and outputs["probabilities"]["shape"] == [
            1,
            2,
        ]
        assert outputs["event_id"]["data"] == [f"gw-{i}"]
        served_by[f"gw-{i}"] = outputs["variant"]["data"][0]
        assert by_id[f"gw-{i}"]["model_version"] == "1"
    assert set(served_by.values()) == {"champion", "canary"}
    assert [r.status_code for r in refused] == [400, 400]
    assert "out of range: event 'bad-1' of stream 'loans'" in refused[0].json()["error"]
    assert "datatype None is not a V2 datatype" in refused[1].json()["error"]
    assert garbage.status_code == 400 and "not JSON" in garbage.json()["error"]
    assert pinned.status_code == 200
    assert {o["name"]: o["data"] for o in pinned.json()["outputs"]}["variant"] == ["canary"]
    assert 'driftline_gateway_requests_total{model="loan-risk",status="400"} 3.0' in metrics_text

    answered = [f"gw-{i}" for i in range(N)]
    labels = [(event_id, Feedback(event_id=event_id, label=1)) for event_id in answered]
    await produce(pipeline.bootstrap, pipeline.topic(FEEDBACK), labels)
    labeled_topic = pipeline.topic(PREDICTIONS_LABELED)

    def all_labeled(records: list[Record]) -> bool:
        return {r.json()["event_id"] for r in records if r.topic == labeled_topic} >= set(answered)

    labeled = await consume_until(pipeline.bootstrap, [labeled_topic], all_labeled, timeout=120)
    for record in labeled:
        joined = record.json()
        assert joined["label"] == 1 and joined["deployment"] == "loan-risk"
        assert [o["variant"] for o in joined["outcomes"]] == [served_by[joined["event_id"]]]

    # drift counted every answered event's features and the served model's errors
    feature_changelog = f"{pipeline.prefix}driftline-drift-feature_to_monitor-changelog"
    model_changelog = f"{pipeline.prefix}driftline-drift-model_to_monitor-changelog"
    n_events = N + 1  # the pinned request too

    def monitored(records: list[Record]) -> bool:
        latest = {(r.topic, r.key): r.value for r in records}
        tables = {feature_changelog: "feature_to_monitor", model_changelog: "model_to_monitor"}
        seen = {
            (topic, key): stored_state("drift", tables[topic], key, value).n_seen
            for (topic, key), value in latest.items()
        }
        features = [n for (t, _), n in seen.items() if t == feature_changelog]
        models = [n for (t, _), n in seen.items() if t == model_changelog]
        return features == [n_events, n_events] and sum(models) == N

    await consume_until(
        pipeline.bootstrap, [feature_changelog, model_changelog], monitored, timeout=120
    )

    # the router read the events and predicted none of them again
    routed = f'driftline_events_in_total{{service="router",topic="{pipeline.topic(FEATURES)}"}}'

    async def router_read_all() -> bool:
        return f"{routed} {float(n_events)}" in router.metrics()

    await until(router_read_all)
    predictions_topic = pipeline.topic(PREDICTIONS)
    predictions = await consume_until(
        pipeline.bootstrap, [predictions_topic], lambda rs: len(rs) >= n_events
    )
    assert sorted(r.json()["event_id"] for r in predictions) == sorted([*answered, f"gw-{N}"])
