"""Driftline over SASL_SSL with a user per service and ACLs from `shared.access`, on a broker
of its own (``driftline kafka start --secure``; the `secure_kafka` session fixture): the main
path runs with each worker as its own principal, a wrong password is one clear line within
30 s, and the router may read ``model-snapshots`` but never write it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import TopicAuthorizationFailedError
from prometheus_client.parser import text_string_to_metric_families

from shared import kafka_clients
from shared.events import Deployment, Feedback, ModelSnapshot, OnlineModelSpec, Variant
from shared.kafka_clients import KafkaAccess
from shared.localkafka import LocalKafka
from shared.topics import (
    EVENTS_RAW,
    FEATURES,
    FEEDBACK,
    MODEL_SNAPSHOTS,
    PREDICTIONS,
    PREDICTIONS_LABELED,
)
from tests.support.kafka import consume_until, produce
from tests.support.pipeline import Pipeline
from tests.support.workers import Worker

pytestmark = pytest.mark.integration

STREAM = {"name": "pay", "features": [{"name": "amount", "type": "numeric"}]}


@pytest.fixture
def secure(secure_kafka: LocalKafka, tmp_path: Path) -> Iterator[Pipeline]:
    """A private Driftline on the secure broker: ACLs granted for its prefix, topics created and
    the CLI run as the operator; each worker is started as its own user."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    secure_kafka.grant(prefix)
    pipe = Pipeline(
        secure_kafka.bootstrap,
        tmp_path,
        kafka_env=secure_kafka.client_env("operator"),
        prefix=prefix,
    )
    yield pipe
    pipe.close(keep_topics=True)  # the secure broker is deleted after the run


def raw_event(event_id: str, amount: float) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "stream": "pay",
            "entity_id": f"u{event_id}",
            "event_time": time.time(),
            "data": {"amount": amount},
        }
    )


def served_versions(records: list) -> dict[str, str]:
    return {
        r.json()["event_id"]: r.json()["outcome"]["model_version"]
        for r in records
        if r.json()["outcome"]["served"]
    }


async def test_the_pipeline_runs_over_sasl_ssl_each_service_as_its_own_user(
    secure: Pipeline, secure_kafka: LocalKafka, tmp_path: Path
) -> None:
    pipe = secure
    files = {"stream.json": STREAM}
    deployment = Deployment(
        name="fraud",
        stream="pay",
        variants=[Variant(name="champion", role="champion", model_uri="online:fraud-lr")],
        online_models=[OnlineModelSpec(model_id="fraud-lr", model_type="logistic_regression")],
    )
    files["deployment.json"] = deployment.model_dump(mode="json")
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    for command in (("streams", "declare"), ("deploy",)):
        file = "stream.json" if command[0] == "streams" else "deployment.json"
        done = pipe.driftline(*command, "--file", str(tmp_path / file))
        assert done.returncode == 0, done.stderr
    learner = {
        "DRIFTLINE_LEARNER_MLFLOW_ENABLED": "false",
        "DRIFTLINE_LEARNER_SNAPSHOT_EVERY": "5",
        "DRIFTLINE_LEARNER_SNAPSHOT_EVERY_S": "1",
        "DRIFTLINE_LEARNER_BATCH_WITHIN_S": "0.1",
    }
    pipe.start_together(
        {
            service: {
                **secure_kafka.client_env(service),
                **(learner if service == "learner" else {}),
            }
            for service in ("ingestion", "router", "feedback", "drift", "learner")
        }
    )
    producer, operator = secure_kafka.access("producer"), KafkaAccess.of(pipe.settings)
    predictions = pipe.topic(PREDICTIONS)

    # Events answered cold (no snapshot yet), then labelled by the producers' user.
    events = [(f"e{i}", raw_event(f"e{i}", float(i % 10))) for i in range(20)]
    await produce(producer, pipe.topic(EVENTS_RAW), events)
    cold = await consume_until(
        operator,
        [predictions],
        lambda records: len(served_versions(records)) >= len(events),
    )
    assert set(served_versions(cold).values()) == {"cold"}
    labels = [(e, Feedback(event_id=e, label=int(e[1:]) % 10 > 4)) for e, _ in events]
    await produce(producer, pipe.topic(FEEDBACK), labels)

    # The learner's snapshot reaches the router, which now serves a learned model.
    deadline = time.monotonic() + 120
    probe = 0
    while True:
        assert time.monotonic() < deadline, "no prediction from a learned snapshot in 120 s"
        probe += 1
        await produce(producer, pipe.topic(EVENTS_RAW), [(f"p{probe}", raw_event(f"p{probe}", 7))])
        found = await consume_until(
            operator,
            [predictions],
            lambda records, wanted=f"p{probe}": wanted in served_versions(records),
        )
        if served_versions(found)[f"p{probe}"] != "cold":
            break
        await asyncio.sleep(2)
    snapshots = await consume_until(operator, [pipe.topic(MODEL_SNAPSHOTS)], lambda r: len(r) >= 1)
    assert ModelSnapshot.model_validate_json(snapshots[0].value).model_id == "fraud-lr"

    # The drift worker, as its own user, read every feature and labeled event (and its own
    # feature-values topic in between) without a dead letter.
    drift = next(worker for worker in pipe.workers if worker.service == "drift")
    wanted = {pipe.topic(FEATURES): len(events), pipe.topic(PREDICTIONS_LABELED): len(events)}
    deadline = time.monotonic() + 120
    while True:
        consumed = events_in(drift.metrics(), "drift")
        if all(consumed.get(topic, 0) >= n for topic, n in wanted.items()):
            break
        assert time.monotonic() < deadline, f"drift consumed only {consumed} in 120 s"
        await asyncio.sleep(1)
    assert "driftline_dead_letters_total{" not in drift.metrics()


def events_in(exposition: str, service: str) -> dict[str, float]:
    """``driftline_events_in_total`` of `service` by topic, from a worker's metrics page."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "driftline_events_in_total" and sample.labels["service"] == service:
                counts[sample.labels["topic"]] = sample.value
    return counts


def test_a_wrong_password_is_one_clear_line_within_30_s(
    secure: Pipeline, secure_kafka: LocalKafka, tmp_path: Path
) -> None:
    wrong = {**secure_kafka.client_env("router"), "DRIFTLINE_KAFKA_SASL_PASSWORD": "wrong"}
    began = time.monotonic()
    cli = secure.driftline("topics", "create", **wrong)
    assert time.monotonic() - began < 30
    assert cli.returncode == 2
    assert "Traceback" not in cli.stderr
    error_lines = [line for line in cli.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, cli.stderr
    assert "SaslAuthenticationFailed" in cli.stderr

    worker = Worker("router", {**secure.env, **wrong}, tmp_path / "router-wrong.log")
    began = time.monotonic()
    worker.spawn()
    try:
        assert worker.process is not None
        assert worker.process.wait(timeout=30) == 2
    finally:
        worker.stop()
    assert time.monotonic() - began < 30
    log = worker.log_path.read_text()
    records = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    errors = [r for r in records if r["level"] in ("error", "critical")]
    assert "Traceback" not in log
    assert [r["event"] for r in errors] == [
        f'Unable connect to "{secure_kafka.bootstrap}": [Error 58] SaslAuthenticationFailed: '
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-512",
        "cannot use Kafka; check the DRIFTLINE_KAFKA_* settings",
    ]
    assert errors[1]["user"] == "router"


async def test_the_router_may_read_model_snapshots_but_is_denied_writing_them(
    secure: Pipeline, secure_kafka: LocalKafka
) -> None:
    snapshots = secure.topic(MODEL_SNAPSHOTS)
    router = kafka_clients.producer(secure_kafka.access("router"))
    await router.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await router.send_and_wait(snapshots, b"forged", key=b"fraud-lr")
    finally:
        await router.stop()
    learner = kafka_clients.producer(secure_kafka.access("learner"))
    await learner.start()
    try:
        await learner.send_and_wait(snapshots, b"genuine", key=b"fraud-lr")
    finally:
        await learner.stop()
    read = await consume_until(secure_kafka.access("router"), [snapshots], lambda r: len(r) >= 1)
    assert [r.value for r in read] == [b"genuine"]
