"""The `driftline` command against the real broker: `deploy` refuses what routers could not
serve and publishes nothing, listings say when they are empty and print JSON, and a deleted
deployment is no longer served by a running router."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shared.events import FeatureEvent
from shared.topics import DEADLETTER, FEATURES, PREDICTIONS
from tests.support.kafka import Record, consume_until, produce
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.integration

STREAM = {"name": "payments", "features": [{"name": "amount"}]}


async def _answer_to_probe(pipeline: Pipeline, probe: str) -> Record:
    """Send one feature event and return what the router made of it: a prediction, or a dead
    letter naming it."""
    event = FeatureEvent(
        event_id=probe,
        stream="payments",
        entity_id="user-1",
        event_time=datetime.now(UTC),
        features={"amount": 1.0},
    )
    await produce(pipeline.bootstrap, pipeline.topic(FEATURES), [("user-1", event)])

    def about_probe(record: Record) -> bool:
        value = record.json()
        if record.topic == pipeline.topic(DEADLETTER):
            return f'"{probe}"'.encode() in base64.b64decode(value["value"])
        return value["event_id"] == probe

    records = await consume_until(
        pipeline.bootstrap,
        [pipeline.topic(PREDICTIONS), pipeline.topic(DEADLETTER)],
        lambda rs: any(about_probe(r) for r in rs),
    )
    return next(r for r in records if about_probe(r))


async def _probe_until(pipeline: Pipeline, topic: str, what: str) -> Record:
    """Probe until the router's answer lands on `topic`: it applies a deployment record a
    moment after it is published."""
    deadline = time.monotonic() + 60
    n = 0
    while (answer := await _answer_to_probe(pipeline, f"{what}-{n}")).topic != pipeline.topic(
        topic
    ):
        assert time.monotonic() < deadline, f"the router's answers never reached {topic}"
        n += 1
        await asyncio.sleep(0.5)
    return answer


async def test_deploy_checks_listings_and_a_deleted_deployment_is_no_longer_served(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    router = pipeline.start("router")

    def driftline(*args: str) -> tuple[int, str]:
        result = pipeline.driftline(*args)
        assert "Traceback" not in result.stderr
        return result.returncode, (result.stderr if result.returncode else result.stdout).strip()

    assert driftline("deployments", "list") == (0, "no deployments")
    assert driftline("deployments", "list", "--json") == (0, "[]")
    assert driftline("streams", "list") == (0, "no declared streams")
    assert driftline("streams", "list", "--json") == (0, "[]")

    deploy = ("deploy", "fraud", "--stream", "payments", "--champion", "online:fraud-lr")
    assert driftline(*deploy) == (
        2,
        "error: deployment 'fraud': stream 'payments' is not declared "
        "(`driftline streams declare --file ...` first; `driftline streams list` shows them)",
    )
    assert driftline("deployments", "list", "--json") == (0, "[]"), "a refused deploy published"

    (tmp_path / "payments.json").write_text(json.dumps(STREAM))
    assert driftline("streams", "declare", "--file", str(tmp_path / "payments.json"))[0] == 0
    assert driftline(*deploy) == (0, "deployed fraud on stream payments: champion=online:fraud-lr")
    [listed] = json.loads(driftline("streams", "list", "--json")[1])
    assert (listed["name"], [f["name"] for f in listed["features"]]) == ("payments", ["amount"])
    assert driftline("streams", "list") == (0, f"payments  amount:{listed['features'][0]['type']}")
    [deployed] = json.loads(driftline("deployments", "list", "--json")[1])
    assert (deployed["name"], deployed["stream"]) == ("fraud", "payments")
    assert [(v["name"], v["role"], v["model_uri"]) for v in deployed["variants"]] == [
        ("champion", "champion", "online:fraud-lr")
    ]

    served = await _probe_until(pipeline, PREDICTIONS, "before")
    assert (served.json()["deployment"], served.json()["outcome"]["model_name"]) == (
        "fraud",
        "fraud-lr",
    )
    event_id = served.json()["event_id"]
    journey = json.loads(pipeline.driftline("trace", event_id, "--json").stdout)
    assert [(step["topic"], step["record"]["event_id"]) for step in journey] == [
        ("features", event_id),
        ("predictions", event_id),
    ]
    never = pipeline.driftline("trace", "never-sent", "--json")
    assert (never.returncode, never.stdout.strip()) == (1, "[]")

    router_url = f"http://127.0.0.1:{router.port}/health"
    status = pipeline.driftline(
        "status", "--json", DRIFTLINE_HEALTH_URLS=json.dumps({"router": router_url})
    )
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert {"service": "router", "url": router_url, "health": "ok"} in report["services"]
    assert [d["name"] for d in report["deployments"]] == ["fraud"]
    assert report["decisions"] == []
    # the router's offsets may not be committed yet: lag lists only the groups that have some
    assert {row["group"] for row in report["lag"]} <= {f"{pipeline.prefix}driftline-router"}

    assert driftline("deployments", "delete", "fraud", "--dry-run") == (
        0,
        "would delete fraud (stream payments: champion(champion)=online:fraud-lr)",
    )
    assert driftline("deployments", "delete", "fraud") == (
        2,
        "error: delete deployment fraud (stream payments)? needs confirmation: pass --yes "
        "(no terminal to ask on)",
    )
    assert driftline("deployments", "list")[1].startswith("fraud  stream=payments")
    assert driftline("deployments", "delete", "fraud", "--yes") == (0, "deleted fraud")

    refused = await _probe_until(pipeline, DEADLETTER, "after")
    assert refused.json()["reason"].startswith("no deployment: stream 'payments' has none")
    assert driftline("deployments", "list") == (0, "no deployments")
    assert driftline("deployments", "delete", "fraud", "--yes") == (
        2,
        "error: unknown deployment 'fraud': `driftline deployments list` shows them",
    )


def test_deploy_refuses_a_model_mlflow_does_not_have(
    pipeline: Pipeline, mlflow_uri: str, tmp_path: Path
) -> None:
    (tmp_path / "payments.json").write_text(json.dumps(STREAM))
    declared = pipeline.driftline("streams", "declare", "--file", str(tmp_path / "payments.json"))
    assert declared.returncode == 0, declared.stderr
    result = pipeline.driftline(
        "deploy",
        "fraud",
        "--stream",
        "payments",
        "--champion",
        "models:/no-such-model@champion",
        DRIFTLINE_MLFLOW_TRACKING_URI=mlflow_uri,
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: unknown model: models:/no-such-model@champion: ")
    assert pipeline.driftline("deployments", "list", "--json").stdout.strip() == "[]"

    name = f"empty-{uuid.uuid4().hex[:8]}"
    MlflowClient(mlflow_uri).create_registered_model(name)
    listed = pipeline.driftline(
        "models", "list", "--json", DRIFTLINE_MLFLOW_TRACKING_URI=mlflow_uri
    )
    assert listed.returncode == 0, listed.stderr
    assert {"name": name, "versions": [], "aliases": {}} in json.loads(listed.stdout)
