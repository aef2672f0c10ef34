"""The learning path on the real broker: the feedback worker joins late, early, duplicate, expired
and unknown feedback; the learner learns a River synthetic stream exactly as plain River does,
through a SIGKILL in the middle, holds 1,000 per-entity models, signs its snapshots and registers
versions in a real MLflow."""

from __future__ import annotations

import asyncio
import base64
import pickle
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from mlflow import MlflowClient
from pydantic import SecretStr
from river import linear_model, metrics, preprocessing, utils
from river.datasets import synth

from shared.admin import publish
from shared.backends import SnapshotStore
from shared.errors import SignatureError
from shared.events import (
    Deployment,
    Feedback,
    LabeledPrediction,
    ModelSnapshot,
    OnlineModelSpec,
    Prediction,
    Variant,
    encode,
)
from shared.settings import INSECURE_DEV_KEY
from shared.signing import KeyRing
from shared.topics import DEADLETTER, DEPLOYMENTS, FEEDBACK, MODEL_SNAPSHOTS, PREDICTIONS
from shared.topics import PREDICTIONS_LABELED as LABELED
from tests.support.kafka import Record, consume_until, count_of, produce
from tests.support.pipeline import Pipeline, failed
from tests.support.records import fraud_prediction

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
N_EXAMPLES = 1200
N_ENTITIES = 1000


@pytest.fixture
def one_partition(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Pipeline]:
    """A private Driftline whose topics have one partition: one watermark, one arrival order."""
    pipe = Pipeline(kafka_bootstrap, tmp_path, partitions=1)
    yield pipe
    pipe.close(keep_topics=failed(request))


def prediction(event_id: str, at: float, variant: str = "champion") -> Prediction:
    return fraud_prediction(event_id, at, variant)


def feedback(event_id: str, label: Any = True) -> Feedback:
    return Feedback(event_id=event_id, label=label)


def metric(worker: Any, name: str, **labels: str) -> float:
    """One sample of a worker's Prometheus metrics (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    selector = re.escape(f"{{{wanted}}}") if labels else ""
    pattern = re.compile(rf"^{name}{selector} (\S+)$", re.MULTILINE)
    found = pattern.search(worker.metrics())
    return float(found.group(1)) if found else 0.0


async def test_feedback_joins_late_early_duplicate_expired_and_unknown(
    one_partition: Pipeline,
) -> None:
    pipe = one_partition
    worker = pipe.start(
        "feedback",
        DRIFTLINE_FEEDBACK_PREDICTION_TTL_S="100",
        DRIFTLINE_FEEDBACK_EARLY_FEEDBACK_TTL_S="20",
        DRIFTLINE_FEEDBACK_REMEMBER_S="500",
        DRIFTLINE_FEEDBACK_SWEEP_EVERY_S="1",
    )
    labeled, letters = pipe.topic(LABELED), pipe.topic(DEADLETTER)
    changelog = f"{pipe.prefix}driftline-feedback-event_to_join-changelog"

    async def send(topic: str, *events: Prediction | Feedback) -> None:
        await produce(pipe.bootstrap, pipe.topic(topic), [(e.event_id, e) for e in events])

    async def wait_for(topic: str, n: int) -> list[Record]:
        return await consume_until(pipe.bootstrap, [topic], count_of(topic, n))

    # Predictions waiting for feedback, and feedback waiting for its prediction (stored first).
    await send(
        PREDICTIONS,
        prediction("late", T0),
        prediction("late", T0, variant="shadow"),
        prediction("gone", T0 + 2),
    )
    await stored(pipe, changelog, b"late", b"gone")
    await send(FEEDBACK, feedback("early"), feedback("nobody"))
    await stored(pipe, changelog, b"early", b"nobody")
    # The early feedback's prediction, the late feedback and its duplicate.
    await send(PREDICTIONS, prediction("early", T0 + 1))
    await send(FEEDBACK, feedback("late"), feedback("late", label=False))
    await wait_for(labeled, 2)
    # A variant whose prediction comes after the label; then event time jumps past every expiry.
    await send(
        PREDICTIONS, prediction("late", T0 + 3, variant="canary"), prediction("tick", T0 + 200)
    )
    await wait_for(letters, 1)
    await send(FEEDBACK, feedback("gone"), feedback("late"))
    await produce(pipe.bootstrap, pipe.topic(FEEDBACK), [(b"bad", b"{not json")])
    dead = await wait_for(letters, 3)
    joined = await wait_for(labeled, 3)

    assert sorted(
        (r.json()["event_id"], [o["variant"] for o in r.json()["outcomes"]]) for r in joined
    ) == [
        ("early", ["champion"]),
        ("late", ["canary"]),
        ("late", ["champion", "shadow"]),
    ]
    assert labeled_count(pipe.bootstrap, labeled) == 3
    assert {r.key for r in joined} == {b"fraud"}
    late = next(r.json() for r in joined if len(r.json()["outcomes"]) == 2)
    assert late["label"] is True
    assert [r.json()["reason"].split(":")[0] for r in dead] == [
        "unknown event",
        "feedback past expiry",
        f"bad event on {pipe.topic(FEEDBACK)}",
    ]
    original = base64.b64decode(dead[0].json()["value"])
    assert Feedback.model_validate_json(original).event_id == "nobody"
    assert (
        metric(
            worker, "driftline_expired_predictions_total", deployment="fraud", model="fraud-model"
        )
        == 1
    )
    assert metric(worker, "driftline_duplicate_feedback_total") == 2
    # Bounded memory: only the events still inside their expiry or memory span are kept.
    assert metric(worker, "driftline_table_entries", service="feedback", table="event_to_join") == 4


def labeled_count(bootstrap: str, topic: str) -> int:
    """Records on the (one-partition) labeled topic, read from its end offset."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partition = TopicPartition(topic, 0)
        return consumer.end_offsets([partition])[partition]
    finally:
        consumer.close()


async def stored(pipe: Pipeline, changelog: str, *keys: bytes) -> None:
    """Wait until the join table's changelog holds these event ids."""
    await consume_until(
        pipe.bootstrap, [changelog], lambda records: set(keys) <= {r.key for r in records}
    )


def eventually(read: Any, expected: float, timeout: float = 30.0) -> bool:
    """Whether `read()` reaches `expected` (a gauge a timer updates) within `timeout`."""
    deadline = time.monotonic() + timeout
    while read() != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    return read() == expected


def labeled_prediction(
    deployment: str, index: int, entity: str, x: dict[str, Any], y: bool
) -> LabeledPrediction:
    at = datetime.fromtimestamp(T0 + index, UTC)
    return LabeledPrediction(
        event_id=f"{deployment}-{index}",
        entity_id=entity,
        stream="agrawal",
        deployment=deployment,
        features=x,
        outcomes=[],
        label=y,
        event_time=at,
        label_time=at,
        feedback_delay_s=0.0,
    )


def plain_river(stream: list[tuple[dict[str, Any], bool]]) -> tuple[Any, dict[str, float]]:
    """The same model and metrics in plain River: predict, score, learn."""
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    scores = {
        "accuracy": metrics.Accuracy(),
        "log_loss": metrics.CrossEntropy(),
        "rolling_accuracy": utils.Rolling(metrics.Accuracy, window_size=1000),
        "rolling_log_loss": utils.Rolling(metrics.CrossEntropy, window_size=1000),
    }
    for x, y in stream:
        y_pred, proba = model.predict_one(x), model.predict_proba_one(x)
        for name, score in scores.items():
            score.update(y, proba if "log_loss" in name else y_pred)
        model.learn_one(x, y)
    return model, {name: score.get() for name, score in scores.items()}


def latest(records: list[Record]) -> dict[bytes, ModelSnapshot]:
    """The highest-sequence snapshot of each model."""
    found: dict[bytes, ModelSnapshot] = {}
    for record in records:
        snapshot = ModelSnapshot.model_validate_json(record.value)
        if record.key not in found or found[record.key].sequence < snapshot.sequence:
            found[record.key] = snapshot
    return found


def test_learner_matches_river_through_a_kill_with_1000_entity_models(
    pipeline: Pipeline, mlflow_uri: str
) -> None:
    spec = OnlineModelSpec(model_id="agrawal-lr", model_type="logistic_regression")
    per_entity = OnlineModelSpec(
        model_id="agrawal-user", model_type="logistic_regression", per_entity=True
    )
    champion = Variant(name="champion", role="champion", model_uri="online:agrawal-lr")
    for name, online in (("agrawal", spec), ("per-user", per_entity)):
        deployment = Deployment(
            name=name, stream="agrawal", variants=[champion], online_models=[online]
        )
        asyncio.run(publish(pipeline.settings, DEPLOYMENTS, name, encode(deployment)))
    stream = [
        (x, bool(y)) for x, y in synth.Agrawal(classification_function=2, seed=42).take(N_EXAMPLES)
    ]
    shared_records = [
        ("agrawal", labeled_prediction("agrawal", i, f"u{i % 7}", x, y))
        for i, (x, y) in enumerate(stream)
    ]
    entity_records = [
        ("per-user", labeled_prediction("per-user", i, f"user-{i % N_ENTITIES}", x, y))
        for i, (x, y) in enumerate(stream * 3)
        if i < 3 * N_ENTITIES
    ]
    env = {
        "DRIFTLINE_LEARNER_SNAPSHOT_EVERY": "3",
        "DRIFTLINE_LEARNER_SNAPSHOT_EVERY_S": "1",
        "DRIFTLINE_LEARNER_BATCH_SIZE": "50",
        "DRIFTLINE_LEARNER_MLFLOW_EVERY_S": "2",
        "DRIFTLINE_MLFLOW_TRACKING_URI": mlflow_uri,
    }
    snapshots_topic = pipeline.topic(MODEL_SNAPSHOTS)
    labeled_topic = pipeline.topic(LABELED)

    def snapshot_of(key: bytes, sequence: int) -> Any:
        return lambda records: any(
            r.key == key and ModelSnapshot.model_validate_json(r.value).sequence >= sequence
            for r in records
        )

    learner = pipeline.start("learner", **env)
    half = N_EXAMPLES // 2
    asyncio.run(produce(pipeline.bootstrap, labeled_topic, shared_records[:half] + entity_records))
    asyncio.run(
        consume_until(pipeline.bootstrap, [snapshots_topic], snapshot_of(b"agrawal-lr", 300))
    )
    learner.kill()
    asyncio.run(produce(pipeline.bootstrap, labeled_topic, shared_records[half:]))
    learner = pipeline.start("learner", **env)

    def all_learned(records: list[Record]) -> bool:
        found = latest(records)
        entities = [s for k, s in found.items() if k.startswith(b"agrawal-user/")]
        shared = found.get(b"agrawal-lr")
        return (
            shared is not None
            and shared.sequence == N_EXAMPLES
            and len(entities) == N_ENTITIES
            and all(s.sequence == 3 for s in entities)
        )

    records = asyncio.run(
        consume_until(pipeline.bootstrap, [snapshots_topic], all_learned, timeout=180)
    )
    found = latest(records)

    # Same state and metrics as one uninterrupted run, i.e. as plain River on the same sequence.
    model, expected = plain_river(stream)
    shared = found[b"agrawal-lr"]
    assert shared.n_learned == N_EXAMPLES
    assert shared.metrics == expected
    restored = pickle.loads(shared.payload)
    probes = [x for x, _ in synth.Agrawal(classification_function=2, seed=7).take(50)]
    assert [restored.predict_proba_one(x) for x in probes] == [
        model.predict_proba_one(x) for x in probes
    ]
    assert (
        metric(
            learner,
            "driftline_online_model_accuracy",
            model_id="agrawal-lr",
            window="cumulative",
        )
        == expected["accuracy"]
    )

    # 1,000 entity models, each having learned its own three examples.
    assert sum(k.startswith(b"agrawal-user/") for k in found) == N_ENTITIES
    assert all(found[f"agrawal-user/user-{i}".encode()].n_learned == 3 for i in range(N_ENTITIES))
    _, user_7 = plain_river([stream[7], stream[1007], stream[2007 - N_EXAMPLES]])
    assert found[b"agrawal-user/user-7"].metrics == user_7
    assert eventually(
        lambda: metric(learner, "driftline_entity_models", model_id="agrawal-user"), N_ENTITIES
    )

    # Snapshots verify under the key; a tampered one is refused.
    store = SnapshotStore(KeyRing(SecretStr(INSECURE_DEV_KEY)), cache_size=1)
    assert store.accept(encode(shared), snapshots_topic) is not None
    tampered = shared.model_copy(update={"payload": shared.payload.replace(b"river", b"rivet", 1)})
    with pytest.raises(SignatureError, match="bad signature"):
        store.accept(encode(tampered), snapshots_topic)

    # MLflow: a registered version of the shared model, with its metrics.
    client = MlflowClient(tracking_uri=mlflow_uri)
    deadline = time.monotonic() + 120
    while not client.search_model_versions("name='agrawal-lr'") and time.monotonic() < deadline:
        time.sleep(1)
    [version, *_] = client.search_model_versions("name='agrawal-lr'")
    run = client.get_run(version.run_id)
    assert 0 < run.data.metrics["accuracy"] <= 1
