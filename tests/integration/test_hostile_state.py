"""Nothing is unpickled unless it was verified, on the real broker (issue 16).

An attacker who can write a table's changelog, or ``model-snapshots``, appends a pickle whose
loading would create a marker file. Each worker, (re)started over those records, refuses them
before loading (the marker never appears, each refusal is logged naming its table and key), and
the router keeps serving the snapshot it had.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from river import linear_model

from services.drift.app import build as build_drift
from services.learner.app import build as build_learner
from shared.admin import publish
from shared.events import (
    Deployment,
    FeatureEvent,
    LabeledPrediction,
    ModelSnapshot,
    OnlineModelSpec,
    Variant,
    VariantOutput,
    encode,
)
from shared.sealing import seal
from shared.settings import DriftSettings, LearnerSettings
from shared.signing import sign_snapshot
from shared.topics import DEADLETTER, DEPLOYMENTS, FEATURES, MODEL_SNAPSHOTS, PREDICTIONS
from shared.topics import PREDICTIONS_LABELED as LABELED
from shared.worker import create_internal_topics
from tests.support.faust_doubles import isolate_prometheus
from tests.support.hostile import marker_pickle, payload_only_signature
from tests.support.kafka import consume_until, count_of, produce
from tests.support.pipeline import Pipeline, failed
from tests.support.records import unsigned_snapshot
from tests.support.workers import Worker

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@pytest.fixture
def one_partition(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Pipeline]:
    """A private Driftline whose topics and tables have one partition (one changelog partition
    for the forged records to go to)."""
    pipe = Pipeline(kafka_bootstrap, tmp_path, partitions=1)
    yield pipe
    pipe.close(keep_topics=failed(request))


def changelog(pipe: Pipeline, service: str, table: str) -> str:
    return f"{pipe.prefix}driftline-{service}-{table}-changelog"


def refusals(worker: Worker, table: str, key: str) -> int:
    """Error records in the worker's (JSON) log refusing the value of `key` in `table`."""
    lines = worker.log_path.read_text(errors="replace").splitlines()
    records = [orjson.loads(line) for line in lines if line.startswith("{")]
    return sum(
        r.get("level") == "error" and r.get("table") == table and r.get("key") == key
        for r in records
    )


async def until_refused(worker: Worker, table: str, key: str, n: int = 1) -> None:
    deadline = time.monotonic() + 60
    while refusals(worker, table, key) < n:
        assert time.monotonic() < deadline, f"{table}[{key}] not refused:\n{worker.tail()}"
        await asyncio.sleep(0.25)


def snapshot(model_id: str, sequence: int, payload: bytes) -> ModelSnapshot:
    return unsigned_snapshot(model_id, sequence, payload, model_type="logistic_regression")


def trained() -> bytes:
    """A pickled River model the router can answer with."""
    model = linear_model.LogisticRegression()
    for i in range(20):
        model.learn_one({"amount": float(i)}, i > 10)
    return pickle.dumps(model)


async def test_the_router_refuses_forged_snapshots_and_keeps_serving_the_previous(
    one_partition: Pipeline, tmp_path: Path
) -> None:
    pipe = one_partition
    keys = pipe.settings.snapshot_keys
    marker = tmp_path / "router-pwned"
    hostile = marker_pickle(marker)
    champion = Variant(name="champion", role="champion", model_uri="online:m")
    deployment = Deployment(name="fraud", stream="pay", variants=[champion])
    await publish(pipe.settings, DEPLOYMENTS, "fraud", encode(deployment))
    genuine = sign_snapshot(snapshot("m", 5, trained()), keys)
    other = sign_snapshot(snapshot("other", 9, trained()), keys)
    await produce(pipe.bootstrap, pipe.topic(MODEL_SNAPSHOTS), [("m", genuine)])
    router = pipe.start("router")
    predictions, letters = pipe.topic(PREDICTIONS), pipe.topic(DEADLETTER)

    async def served_version(event_id: str) -> str:
        event = FeatureEvent(
            event_id=event_id, stream="pay", entity_id="u1", event_time=NOW, features={"amount": 3}
        )
        await produce(pipe.bootstrap, pipe.topic(FEATURES), [("u1", event)])
        records = await consume_until(
            pipe.bootstrap,
            [predictions],
            lambda rs: any(r.json()["event_id"] == event_id for r in rs),
        )
        [found] = [r.json() for r in records if r.json()["event_id"] == event_id]
        return found["outcome"]["model_version"]

    assert await served_version("e1") == "5"

    # On model-snapshots: a hostile pickle unsigned, and signed the old way (payload only); a
    # genuine payload republished with sequence 10**30, and another model's under this id.
    unsigned = snapshot("m", 6, hostile)
    forged_snapshots = [
        unsigned,
        unsigned.model_copy(
            update={"signature": payload_only_signature(hostile, pipe.settings.snapshot_hmac_key)}
        ),
        genuine.model_copy(update={"sequence": 10**30}),
        other.model_copy(update={"model_id": "m"}),
    ]
    await produce(pipe.bootstrap, pipe.topic(MODEL_SNAPSHOTS), [("m", s) for s in forged_snapshots])
    dead = await consume_until(pipe.bootstrap, [letters], count_of(letters, 4))
    assert all("refused: bad signature" in r.json()["reason"] for r in dead[1:])
    assert "refused: unsigned" in dead[0].json()["reason"]

    # Straight into the router's table changelog, which no signature check guarded before.
    table = changelog(pipe, "router", "model_snapshots")
    await produce(pipe.bootstrap, table, [("m", encode(unsigned)), ("m", hostile)])
    await until_refused(router, "model_snapshots", "m", n=2)
    assert await served_version("e2") == "5"

    router.stop()
    router = pipe.start("router")
    await until_refused(router, "model_snapshots", "m", n=2)
    assert await served_version("e3") == "5"
    assert not marker.exists()

    # The real next snapshot is still taken: the forged sequence did not block it.
    await produce(
        pipe.bootstrap,
        pipe.topic(MODEL_SNAPSHOTS),
        [("m", sign_snapshot(snapshot("m", 6, trained()), keys))],
    )
    deadline = time.monotonic() + 30
    while await served_version(f"e4-{time.monotonic()}") != "6":
        assert time.monotonic() < deadline, "the genuine snapshot 6 was not taken"
    assert not marker.exists()


async def test_the_learner_refuses_a_forged_model_state_and_learns_afresh(
    one_partition: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = one_partition
    marker = tmp_path / "learner-pwned"
    spec = OnlineModelSpec(model_id="m", model_type="logistic_regression")
    champion = Variant(name="champion", role="champion", model_uri="online:m")
    deployment = Deployment(name="fraud", stream="pay", variants=[champion], online_models=[spec])
    await publish(pipe.settings, DEPLOYMENTS, "fraud", encode(deployment))
    env = {"DRIFTLINE_LEARNER_MLFLOW_ENABLED": "false", "DRIFTLINE_LEARNER_SNAPSHOT_EVERY": "5"}
    isolate_prometheus(monkeypatch)
    await create_internal_topics(build_learner(pipe.settings, LearnerSettings()))

    await produce(
        pipe.bootstrap, changelog(pipe, "learner", "model_state"), [("m", marker_pickle(marker))]
    )
    learner = pipe.start("learner", **env)
    examples = [
        ("fraud", labeled("fraud", f"ev-{i}", [], {"amount": float(i)}, i > 2)) for i in range(5)
    ]
    await produce(pipe.bootstrap, pipe.topic(LABELED), examples)
    await until_refused(learner, "model_state", "m")
    snapshots = pipe.topic(MODEL_SNAPSHOTS)
    [record] = await consume_until(pipe.bootstrap, [snapshots], count_of(snapshots, 1))
    assert ModelSnapshot.model_validate_json(record.value).sequence == 5
    assert not marker.exists()


async def test_the_drift_worker_refuses_forged_detectors_and_trials(
    one_partition: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = one_partition
    markers = [tmp_path / f"drift-pwned-{i}" for i in range(2)]
    variants = [
        Variant(name="champion", role="champion", model_uri="models:/fraud-model/3"),
        Variant(name="shadow", role="shadow", model_uri="models:/fraud-model/4"),
    ]
    deployment = Deployment(name="fraud", stream="pay", variants=variants)
    await publish(pipe.settings, DEPLOYMENTS, "fraud", encode(deployment))
    isolate_prometheus(monkeypatch)
    await create_internal_topics(build_drift(pipe.settings, DriftSettings()))

    model_key = orjson.dumps(["fraud", "fraud-model", "3"])
    trial_key = orjson.dumps(["fraud", "fraud-model", "4"])
    forged_trial = orjson.dumps(
        {
            "deployment": "fraud",
            "model_name": "fraud-model",
            "variant": "shadow",
            "version": "4",
            "decided": "rollback",
            "reason": "forged",
            "executed": False,
        }
    )
    state_keys = pipe.settings.state_keys
    await produce(
        pipe.bootstrap,
        changelog(pipe, "drift", "feature_to_monitor"),
        [(b"pay:amount", marker_pickle(markers[0]))],
    )
    # A genuine seal copied from another key is refused too.
    other_key = ("state", "drift", "model_to_monitor", b"another-key")
    await produce(
        pipe.bootstrap,
        changelog(pipe, "drift", "model_to_monitor"),
        [(model_key, seal(marker_pickle(markers[1]), other_key, state_keys, 0))],
    )
    await produce(
        pipe.bootstrap, changelog(pipe, "drift", "promotion_trials"), [(trial_key, forged_trial)]
    )
    drift = pipe.start("drift")
    event = FeatureEvent(
        event_id="e1", stream="pay", entity_id="u1", event_time=NOW, features={"amount": 3.0}
    )
    await produce(pipe.bootstrap, pipe.topic(FEATURES), [("u1", event)])
    outcomes = [
        VariantOutput(
            variant="champion",
            role="champion",
            served=True,
            model_name="fraud-model",
            model_version="3",
            output=True,
        ),
        VariantOutput(
            variant="shadow",
            role="shadow",
            served=False,
            model_name="fraud-model",
            model_version="4",
            output=False,
        ),
    ]
    await produce(
        pipe.bootstrap, pipe.topic(LABELED), [("fraud", labeled("fraud", "e1", outcomes, {}, True))]
    )
    await until_refused(drift, "feature_to_monitor", "pay:amount")
    await until_refused(drift, "model_to_monitor", model_key.decode())
    await until_refused(drift, "promotion_trials", trial_key.decode())
    assert not any(m.exists() for m in markers)
    assert "forged" not in drift.log_path.read_text()


def labeled(
    deployment: str,
    event_id: str,
    outcomes: list[VariantOutput],
    features: dict[str, float],
    label: bool,
) -> LabeledPrediction:
    return LabeledPrediction(
        event_id=event_id,
        entity_id="u1",
        stream="pay",
        deployment=deployment,
        features=features,
        outcomes=outcomes,
        label=label,
        event_time=NOW,
        label_time=NOW,
        feedback_delay_s=0.0,
    )
