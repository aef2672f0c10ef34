"""Retraining on a drift alert's window (#9) on the real broker and MLflow: exactly the window's
events are read, a challenger is registered, logged and deployed, a second retrain of the alert
returns the same version, too few labels is a clear error, and the webhook job retrains once
enough labels have come."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from services.processes import free_port
from services.tools.retrain_job import RetrainJob
from shared.admin import publish, read_compacted
from shared.events import Deployment, DriftAlert, decode, encode
from shared.registry import UnsearchableError, register_sklearn_model, set_alias
from shared.retraining import (
    ALERT_TAG,
    CHALLENGER,
    DEPLOYMENT_TAG,
    NotEnoughLabelsError,
    find_earlier,
    retrain,
)
from shared.settings import DriftlineSettings, RetrainSettings
from shared.topics import ALERTS, DEPLOYMENTS, PREDICTIONS_LABELED
from shared.webhooks import signed_headers
from tests.support.kafka import consume_until, count_of, end_offsets, produce
from tests.support.pipeline import Pipeline
from tests.support.retraining import concept_alert, labeled, loans_deployment

pytestmark = pytest.mark.integration

BEFORE, AFTER, OTHERS = 300, 400, 50


@pytest.fixture
def champion(mlflow_uri: str) -> Iterator[str]:
    """A fresh registered model whose v1 (`champion`) learned the old concept, ``y = x > 0``."""
    name = f"loans-{uuid.uuid4().hex[:8]}"
    x = np.random.default_rng(1).normal(size=200)
    features = pd.DataFrame({"flag": np.zeros(200), "x": x})
    model = LogisticRegression().fit(features, x > 0)
    assert register_sklearn_model(mlflow_uri, name, model, features) == "1"
    set_alias(mlflow_uri, name, "champion", "1")
    yield name


def settings_of(pipeline: Pipeline, mlflow_uri: str) -> DriftlineSettings:
    return pipeline.settings.model_copy(update={"mlflow_tracking_uri": mlflow_uri})


async def send_labeled(pipeline: Pipeline, first: int, n: int, flipped: bool) -> None:
    """`n` labeled events of ``loans`` from index `first`; the concept is ``x > 0``, or its
    opposite once `flipped`. Every fifth index also sends an event of another deployment on the
    same partition (as a hash collision would), which a retrain of ``loans`` must skip."""
    rng = np.random.default_rng(first)
    now = time.time()
    messages = []
    for i in range(first, first + n):
        x = float(rng.normal())
        messages.append(("loans", labeled(i, x, (x > 0) != flipped, now + i * 0.01)))
        if i % 5 == 0:
            other = labeled(i + 10**6, x, True, now + i * 0.01, deployment="other")
            messages.append(("loans", other))
    await produce(pipeline.bootstrap, pipeline.topic(PREDICTIONS_LABELED), messages)


async def drift_at_the_flip(
    pipeline: Pipeline, deployment: Deployment, min_after: int
) -> DriftAlert:
    """Deploy, send the old concept, then an alert whose window starts where the flipped
    concept starts, then `min_after` events of the flipped concept."""
    await publish(pipeline.settings, DEPLOYMENTS, deployment.name, encode(deployment))
    await send_labeled(pipeline, 0, BEFORE, flipped=False)
    topic = pipeline.topic(PREDICTIONS_LABELED)
    window_start = await end_offsets(pipeline.bootstrap, topic)
    alert = concept_alert({topic: window_start}, start=time.time() + BEFORE * 0.01)
    alert = alert.model_copy(update={"alert_id": uuid.uuid4().hex})
    await produce(pipeline.bootstrap, pipeline.topic(ALERTS), [(alert.key, alert)])
    await send_labeled(pipeline, BEFORE, min_after, flipped=True)
    return alert


async def independent_count(pipeline: Pipeline, alert: DriftAlert) -> int:
    """Records of ``loans`` at or after the window's offsets, read by a plain consumer."""
    topic = pipeline.topic(PREDICTIONS_LABELED)
    total = sum((await end_offsets(pipeline.bootstrap, topic)).values())
    records = await consume_until(pipeline.bootstrap, [topic], count_of(topic, total))
    assert alert.window is not None
    starts = alert.window.offsets[topic]
    return sum(
        r.offset >= starts[r.partition] and r.json()["deployment"] == "loans" for r in records
    )


def driftline(pipeline: Pipeline, mlflow_uri: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `driftline` command against this test's Driftline."""
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            **pipeline.env,
            "DRIFTLINE_MLFLOW_TRACKING_URI": mlflow_uri,
            "COLUMNS": "200",
        },
        timeout=120,
        check=False,
    )


async def current_deployment(settings: DriftlineSettings) -> Deployment:
    values = await read_compacted(settings, DEPLOYMENTS)
    return decode(Deployment, values[b"loans"], DEPLOYMENTS.full_name(settings))


async def test_retrain_reads_exactly_the_window_registers_logs_and_deploys_a_challenger_once(
    pipeline: Pipeline, mlflow_uri: str, champion: str
) -> None:
    settings = settings_of(pipeline, mlflow_uri)
    alert = await drift_at_the_flip(pipeline, loans_deployment(champion), AFTER)
    expected_rows = await independent_count(pipeline, alert)
    assert expected_rows == AFTER
    topic = pipeline.topic(PREDICTIONS_LABELED)
    ends = await end_offsets(pipeline.bootstrap, topic)

    result = await retrain(settings, alert.alert_id)

    assert (result.new, result.deployed, result.rows) == (True, True, expected_rows)
    assert result.start_offsets == alert.window.offsets[topic]  # type: ignore[union-attr]
    assert result.end_offsets == ends
    assert result.metrics["holdout_accuracy"] > 0.9, "it learned the flipped concept"
    client = MlflowClient(tracking_uri=mlflow_uri)
    assert result.version == "2"
    assert client.get_model_version_by_alias(champion, CHALLENGER).version == "2"
    assert client.get_model_version_by_alias(champion, "champion").version == "1"
    run = client.get_run(client.get_model_version(champion, "2").run_id)
    assert run.data.tags[ALERT_TAG] == alert.alert_id
    assert run.data.tags[DEPLOYMENT_TAG] == "loans"
    params = run.data.params
    assert params["trainer"] == "shared.trainers:gradient_boosting"
    assert params["window.rows"] == str(expected_rows)
    assert params["window.start_time"] == alert.window.start_time.isoformat()  # type: ignore[union-attr]
    assert orjson.loads(params["window.start_offsets"]) == {
        str(p): o
        for p, o in alert.window.offsets[topic].items()  # type: ignore[union-attr]
    }
    assert orjson.loads(params["window.end_offsets"]) == {str(p): o for p, o in ends.items()}
    assert params["features"] == "flag,x"
    assert run.data.metrics["holdout_rows"] == expected_rows // 5
    deployed = await current_deployment(settings)
    assert [(v.name, v.role, v.model_uri) for v in deployed.variants] == [
        ("champion", "champion", f"models:/{champion}@champion"),
        (CHALLENGER, "shadow", f"models:/{champion}/2"),
    ]

    await send_labeled(pipeline, BEFORE + AFTER, 50, flipped=True)
    again = await retrain(settings, alert)
    assert (again.new, again.deployed, again.version, again.rows) == (False, False, "2", AFTER)
    assert again.end_offsets == ends
    printed = driftline(pipeline, mlflow_uri, "retrain", "--alert", alert.alert_id)
    assert printed.returncode == 0, printed.stderr
    assert f"models:/{champion}/2 (already registered by an earlier retrain)" in printed.stdout
    assert f"[0] {alert.window.offsets[topic][0]}..{ends[0]}" in printed.stdout  # type: ignore[union-attr]
    versions = client.search_model_versions(f"name = '{champion}'")
    assert sorted(v.version for v in versions) == ["1", "2"]


def test_hostile_names_and_alert_ids_never_reach_an_mlflow_filter(
    pipeline: Pipeline, mlflow_uri: str, champion: str
) -> None:
    """Filters were built by formatting names into quotes: an alert id or model name holding a
    quote rewrote the query. Now such a value is refused by name, and `models list` still lists
    every other model."""
    with pytest.raises(UnsearchableError, match=r"alert id .* cannot be searched for in MLflow"):
        find_earlier(mlflow_uri, champion, "x' and tags.`driftline.deployment` != 'y")
    with pytest.raises(UnsearchableError, match="model name"):
        find_earlier(mlflow_uri, f"{champion}' and run_id != '", "alert-1")
    tag = uuid.uuid4().hex[:8]
    hostile = f'o\'brien \\ "{tag}"'
    MlflowClient(tracking_uri=mlflow_uri).create_registered_model(hostile)
    listed = driftline(pipeline, mlflow_uri, "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert f"{champion}  versions=1  @champion=1" in listed.stdout
    [line] = [shown for shown in listed.stdout.splitlines() if tag in shown]
    assert "versions=?" in line and "cannot be searched for in MLflow" in line


async def test_a_window_with_too_few_labels_is_a_clear_error(
    pipeline: Pipeline, mlflow_uri: str, champion: str
) -> None:
    settings = settings_of(pipeline, mlflow_uri)
    alert = await drift_at_the_flip(pipeline, loans_deployment(champion, min_samples=1000), 120)
    with pytest.raises(NotEnoughLabelsError) as caught:
        await retrain(settings, alert)
    assert (caught.value.have, caught.value.need) == (120, 1000)
    assert caught.value.since == alert.window.start_time  # type: ignore[union-attr]
    assert "120 labeled events since" in str(caught.value)
    aliases = MlflowClient(tracking_uri=mlflow_uri).get_registered_model(champion).aliases
    assert {alias: str(v) for alias, v in aliases.items()} == {"champion": "1"}


def test_the_cli_says_in_one_line_that_an_alert_id_is_unknown(
    pipeline: Pipeline, mlflow_uri: str
) -> None:
    result = driftline(pipeline, mlflow_uri, "retrain", "--alert", "no-such-alert")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: no alert 'no-such-alert' on {pipeline.topic(ALERTS)}: see `driftline alerts list`"
    ]


async def test_the_webhook_job_retrains_once_enough_labels_have_come(
    pipeline: Pipeline, mlflow_uri: str, champion: str
) -> None:
    settings = settings_of(pipeline, mlflow_uri)
    own = RetrainSettings(web_port=free_port(), retry_every_s=0.5, retry_for_s=120)
    job = RetrainJob(settings, own)
    await job.start()
    try:
        alert = await drift_at_the_flip(pipeline, loans_deployment(champion, min_samples=300), 100)
        body = encode(alert)
        url = f"http://127.0.0.1:{own.web_port}/retrain"
        async with httpx.AsyncClient() as http:
            unsigned = await http.post(url, content=body)
            headers = signed_headers(alert.alert_id, body, settings.webhook_hmac_key, time.time())
            signed = await http.post(url, content=body, headers=headers)
        assert unsigned.status_code == 401
        assert signed.status_code == 202
        await asyncio.sleep(1.5)
        client = MlflowClient(tracking_uri=mlflow_uri)
        assert CHALLENGER not in client.get_registered_model(champion).aliases, "too few yet"
        await send_labeled(pipeline, BEFORE + 100, 250, flipped=True)
        deadline = time.monotonic() + 120
        while CHALLENGER not in client.get_registered_model(champion).aliases:
            assert time.monotonic() < deadline, "the job never registered a challenger"
            await asyncio.sleep(0.5)
        version = client.get_registered_model(champion).aliases[CHALLENGER]
        run = client.get_run(client.get_model_version(champion, version).run_id)
        assert run.data.tags[ALERT_TAG] == alert.alert_id
        assert int(run.data.params["window.rows"]) >= 300
    finally:
        await job.stop()


async def test_a_real_concept_drift_alert_reaches_the_job_which_retrains_on_its_window(
    pipeline: Pipeline, mlflow_uri: str, champion: str
) -> None:
    """The drift worker's own alert, posted by its webhook: the loop from detection to a
    registered challenger, on exactly the records from the alert's window to the end."""
    settings = settings_of(pipeline, mlflow_uri)
    own = RetrainSettings(web_port=free_port(), retry_every_s=1.0, retry_for_s=120)
    job = RetrainJob(settings, own)
    await job.start()
    try:
        deployment = loans_deployment(champion, min_samples=200)
        await publish(settings, DEPLOYMENTS, deployment.name, encode(deployment))
        pipeline.start(
            "drift",
            DRIFTLINE_DRIFT_COOLDOWN_S="0",
            DRIFTLINE_DRIFT_WEBHOOK_URLS=f'["http://127.0.0.1:{own.web_port}/retrain"]',
        )
        rng = np.random.default_rng(5)
        start = time.time() - 3600
        stream = []
        for i in range(1500):
            x, noise = float(rng.normal()), bool(rng.random() < 0.05)
            stream.append(labeled(i, x, (x > 0) ^ (i >= 600) ^ noise, start + i))
        topic = pipeline.topic(PREDICTIONS_LABELED)
        await produce(pipeline.bootstrap, topic, [("loans", r) for r in stream])

        client = MlflowClient(tracking_uri=mlflow_uri)
        deadline = time.monotonic() + 180
        while CHALLENGER not in client.get_registered_model(champion).aliases:
            assert time.monotonic() < deadline, "no challenger from the drift worker's alert"
            await asyncio.sleep(1.0)
        run = client.get_run(client.get_model_version(champion, "2").run_id)
        alert_id = run.data.tags[ALERT_TAG]
        records = await consume_until(
            pipeline.bootstrap,
            [pipeline.topic(ALERTS), topic],
            lambda rs: (
                any(r.json().get("alert_id") == alert_id for r in rs)
                and sum(r.topic == topic for r in rs) == len(stream)
            ),
        )
    finally:
        await job.stop()
    alert = next(
        DriftAlert.model_validate_json(r.value)
        for r in records
        if r.topic != topic and r.json()["alert_id"] == alert_id
    )
    assert (alert.kind, alert.level, alert.deployment) == ("concept", "drift", "loans")
    assert alert.window is not None
    starts = alert.window.offsets[topic]
    ends = {int(p): o for p, o in orjson.loads(run.data.params["window.end_offsets"]).items()}
    in_window = [
        r
        for r in records
        if r.topic == topic and starts[r.partition] <= r.offset < ends[r.partition]
    ]
    assert run.data.params["window.rows"] == str(len(in_window))
    assert run.data.params["window.start_time"] == alert.window.start_time.isoformat()
    first = min(int(r.json()["event_id"].removeprefix("ev-")) for r in in_window)
    assert 550 <= first <= 700, f"the window starts near the switch at 600, not at {first}"
