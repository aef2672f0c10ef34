"""The foundation on the real broker: plain clients, a Faust table across a crash, the whole chain
of five services, and a foreign (non-Driftline) Kafka client on both ends."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import NewTopic
from kafka import KafkaConsumer, KafkaProducer

from services.processes import free_port
from shared import kafka_clients
from shared.admin import create_topics, partition_counts, publish
from shared.errors import KafkaStartError
from shared.events import (
    Deployment,
    FeatureSpec,
    Feedback,
    OnlineModelSpec,
    Prediction,
    StreamSchema,
    Variant,
    VariantOutput,
    encode,
    prediction_id_for,
    utc_now,
)
from shared.kafka_clients import KafkaAccess
from shared.localkafka import LocalKafka
from shared.settings import DriftlineSettings
from shared.topics import (
    ALERTS,
    DEADLETTER,
    DEPLOYMENTS,
    EVENTS_RAW,
    FEATURES,
    FEEDBACK,
    MODEL_SNAPSHOTS,
    PREDICTIONS,
    PREDICTIONS_LABELED,
    STREAMS,
    Topic,
)
from tests.support.kafka import consume_until, count_of, produce
from tests.support.pipeline import Pipeline
from tests.support.workers import Worker

pytestmark = pytest.mark.integration


async def test_plain_aiokafka_client_round_trips(pipeline: Pipeline) -> None:
    topic = pipeline.prefix + "roundtrip"
    sent = [(f"k{i % 7}", f"value-{i}".encode()) for i in range(200)]
    await produce(pipeline.bootstrap, topic, sent)

    records = await consume_until(pipeline.bootstrap, [topic], count_of(topic, 200))

    assert sorted(r.value for r in records) == sorted(v for _, v in sent)
    by_key: dict[bytes, set[int]] = {}
    for record in records:
        by_key.setdefault(record.key, set()).add(record.partition)
    assert all(len(partitions) == 1 for partitions in by_key.values())


def _prediction(event_id: str) -> Prediction:
    outcome = VariantOutput(
        variant="v", role="champion", served=True, model_name="m", model_version="1", output=1
    )
    return Prediction(
        prediction_id=prediction_id_for(event_id, "d", outcome),
        event_id=event_id,
        entity_id="e1",
        stream="s",
        deployment="d",
        outcome=outcome,
        features={"x": 1.0},
        latency_ms=1.0,
        event_time=utc_now(),
    )


async def test_faust_table_keeps_state_across_a_killed_worker(pipeline: Pipeline) -> None:
    """Early feedback waits in a changelog-backed table; a SIGKILLed worker recovers it."""
    worker = pipeline.start("feedback")
    assert httpx.get(f"http://127.0.0.1:{worker.port}/live").json()["status"] == "alive"
    await produce(
        pipeline.bootstrap,
        pipeline.topic(FEEDBACK),
        [("ev-1", Feedback(event_id="ev-1", label=True))],
    )
    changelog = f"{pipeline.prefix}driftline-feedback-event_to_join-changelog"
    await consume_until(pipeline.bootstrap, [changelog], count_of(changelog, 1))
    worker.kill()

    pipeline.start("feedback")
    await produce(pipeline.bootstrap, pipeline.topic(PREDICTIONS), [("ev-1", _prediction("ev-1"))])

    labeled_topic = pipeline.topic(PREDICTIONS_LABELED)
    records = await consume_until(pipeline.bootstrap, [labeled_topic], count_of(labeled_topic, 1))
    assert records[0].json()["event_id"] == "ev-1"
    assert records[0].json()["label"] is True


def test_events_flow_through_all_five_services_with_a_foreign_client(pipeline: Pipeline) -> None:
    """kafka-python (not Driftline's client) produces raw events and feedback and reads each
    service's output: features, predictions, labeled predictions, snapshots, alerts, dead letters.
    """
    stream = StreamSchema(name="payments", features=[FeatureSpec(name="amount")])
    champion = Variant(name="champion", role="champion", model_uri="online:payments")
    learner = OnlineModelSpec(model_id="payments", model_type="logistic_regression")
    deployment = Deployment(
        name="payments", stream="payments", variants=[champion], online_models=[learner]
    )
    asyncio.run(publish(pipeline.settings, STREAMS, "payments", encode(stream)))
    asyncio.run(publish(pipeline.settings, DEPLOYMENTS, "payments", encode(deployment)))
    services = ("ingestion", "router", "feedback", "learner", "drift")
    pipeline.start_together({s: {"DRIFTLINE_LEARNER_SNAPSHOT_EVERY": "1"} for s in services})
    producer = KafkaProducer(bootstrap_servers=pipeline.bootstrap)
    now = time.time()
    n_events = 300
    for i in range(n_events):
        x = (i % 5) * 0.1 + (10.0 if i >= n_events // 2 else 0.0)
        raw = {
            "event_id": f"ev-{i}",
            "stream": "payments",
            "entity_id": f"user-{i % 10}",
            "event_time": now + i,
            "data": {"amount": x, "country": "NL"},
        }
        producer.send(
            pipeline.topic(EVENTS_RAW),
            key=raw["entity_id"].encode(),
            value=json.dumps(raw).encode(),
        )
    producer.send(pipeline.topic(EVENTS_RAW), key=b"user-0", value=b"\xff not json")
    for i in range(0, n_events, 10):
        producer.send(
            pipeline.topic(FEEDBACK),
            key=f"ev-{i}".encode(),
            value=json.dumps({"event_id": f"ev-{i}", "label": i % 20 == 0}).encode(),
        )
    producer.flush()

    wanted = {
        pipeline.topic(FEATURES): n_events,
        pipeline.topic(PREDICTIONS): n_events,
        pipeline.topic(PREDICTIONS_LABELED): n_events // 10,
        pipeline.topic(MODEL_SNAPSHOTS): n_events // 10,
        pipeline.topic(ALERTS): 1,
        pipeline.topic(DEADLETTER): 1,
    }
    consumer = KafkaConsumer(
        *wanted,
        bootstrap_servers=pipeline.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    seen: dict[str, list[dict]] = {topic: [] for topic in wanted}
    deadline = time.monotonic() + 120
    while any(len(seen[t]) < n for t, n in wanted.items()) and time.monotonic() < deadline:
        for message in consumer:
            seen[message.topic].append(json.loads(message.value))
    consumer.close()

    counts = {topic: len(values) for topic, values in seen.items()}
    assert all(counts[topic] >= n for topic, n in wanted.items()), counts
    assert len(seen[pipeline.topic(FEATURES)]) == n_events
    features = seen[pipeline.topic(FEATURES)]
    assert {f["event_id"] for f in features} == {f"ev-{i}" for i in range(n_events)}
    letter = seen[pipeline.topic(DEADLETTER)][0]
    assert letter["source_topic"] == pipeline.topic(EVENTS_RAW)
    assert "not valid JSON" in letter["reason"]
    alert = seen[pipeline.topic(ALERTS)][0]
    assert (alert["kind"], alert["feature"]) == ("data", "amount")
    # Entities spread over partitions, so the detector sees `amount` values interleaved in
    # arrival order: its position need not match the event index, but the mean went up.
    assert alert["stats_after"]["mean"] > alert["stats_before"]["mean"]


def test_a_fresh_local_kafka_coordinates_groups_as_soon_as_start_returns(tmp_path: Path) -> None:
    """A broker answers metadata before its group coordinator has loaded the offsets topic; a
    consumer group started then failed with GroupCoordinatorNotAvailableError (the first bench
    scenario after a fresh start did). `start` returns only once groups are coordinated: a
    fresh client's first group request, without retries, succeeds."""
    broker = LocalKafka(port=free_port(), controller_port=free_port(), home=tmp_path)
    broker.libs.symlink_to(LocalKafka().ensure_jars(), target_is_directory=True)

    async def first_group_request() -> dict:
        admin = kafka_clients.admin_client(KafkaAccess(broker.bootstrap))
        await admin.start()
        try:
            return await admin.list_consumer_group_offsets("a-group-of-a-fresh-broker")
        finally:
            await admin.close()

    try:
        broker.start()
        offsets = asyncio.run(first_group_request())
    finally:
        broker.stop()
    assert offsets == {}


def test_local_kafka_that_cannot_start_says_why(tmp_path: Path, kafka_bootstrap: str) -> None:
    """A broker whose controller port is taken fails fast with the reason from its log."""
    taken = int(kafka_bootstrap.rsplit(":", 1)[1])
    shared_jars = LocalKafka(port=taken).libs
    clash = LocalKafka(port=taken + 7, controller_port=taken, home=tmp_path)
    clash.libs.symlink_to(shared_jars, target_is_directory=True)

    steps: list[str] = []
    with pytest.raises(KafkaStartError, match="Address already in use"):
        clash.start(timeout=60, on_step=steps.append)
    assert clash.pid() is None
    assert steps[0] == "formatting the broker's storage (first start)"
    assert re.fullmatch(
        rf"waiting for the broker \(pid \d+\) to answer on {clash.bootstrap} \(\d+s\)", steps[1]
    ), steps


def test_feedback_worker_refuses_topics_that_are_not_copartitioned(pipeline: Pipeline) -> None:
    """`partition_counts` reads the cluster's real counts, so the feedback join's guard fires."""
    prefix = pipeline.prefix + "skewed."
    skewed = DriftlineSettings(
        kafka_broker=pipeline.bootstrap, topic_prefix=prefix, topic_partitions=2
    )

    async def create() -> None:
        admin = kafka_clients.admin_client(KafkaAccess(pipeline.bootstrap))
        await admin.start()
        try:
            await admin.create_topics([NewTopic(FEEDBACK.full_name(skewed), 3, 1)])
        finally:
            await admin.close()
        await create_topics(skewed)

    asyncio.run(create())
    counts = asyncio.run(partition_counts(skewed, PREDICTIONS, FEEDBACK, Topic("missing", "-")))
    assert counts == {prefix + "predictions": 2, prefix + "feedback": 3, prefix + "missing": 0}
    assert asyncio.run(partition_counts(pipeline.settings, PREDICTIONS, FEEDBACK)) == {
        pipeline.topic(PREDICTIONS): 2,
        pipeline.topic(FEEDBACK): 2,
    }

    worker = Worker(
        "feedback", {**pipeline.env, "DRIFTLINE_TOPIC_PREFIX": prefix}, pipeline.workdir / "f.log"
    )
    pipeline.workers.append(worker)
    worker.spawn()
    assert worker.process is not None
    assert worker.process.wait(timeout=90) != 0
    assert "topics to join are not co-partitioned" in worker.log_path.read_text()
