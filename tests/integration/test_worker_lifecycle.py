"""A worker's life on real brokers: its internal topics exist before its first rebalance, a send
that fails for good stops it before the offsets of its input commit, a SIGTERM ends it in
bounded time even with its broker gone, and its log is one JSON record per line throughout."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.drift.app import build as build_drift
from services.processes import ServiceProcess, free_port
from shared import kafka_clients
from shared.admin import create_topics
from shared.kafka_clients import KafkaAccess
from shared.localkafka import LocalKafka
from shared.settings import DriftlineSettings, DriftSettings
from shared.worker import create_internal_topics, internal_topics
from tests.support.faust_doubles import isolate_prometheus
from tests.support.interrupted_app import INTERRUPT
from tests.support.kafka import consume_until, produce
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.integration


def _records(log_path: Path) -> list[dict]:
    """Every line of a worker's log, parsed: a line that is not one JSON record fails."""
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]


async def _topic_configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = kafka_clients.admin_client(KafkaAccess(bootstrap))
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        responses = await admin.describe_configs(resources)
        partitions = {
            item["topic"]: len(item["partitions"]) for item in await admin.describe_topics(names)
        }
    finally:
        await admin.close()
    configs: dict[str, dict[str, str]] = {}
    for response in responses:
        for _, _, _, name, entries in response.resources:
            values = {entry[0]: entry[1] for entry in entries}
            configs[name] = {
                "partitions": str(partitions[name]),
                "cleanup.policy": values["cleanup.policy"],
                "retention.ms": values["retention.ms"],
            }
    return configs


async def test_internal_topics_are_created_as_faust_declares_them(
    monkeypatch: pytest.MonkeyPatch, kafka_bootstrap: str, tmp_path: Path
) -> None:
    isolate_prometheus(monkeypatch)
    common = DriftlineSettings(
        kafka_broker=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        topic_partitions=3,
        data_dir=tmp_path,
    )
    app = build_drift(common, DriftSettings())
    wanted = internal_topics(app)

    created = await create_internal_topics(app)

    assert sorted(created) == sorted(topic.name for topic in wanted)
    assert await create_internal_topics(app) == []  # a second worker creates nothing
    configs = await _topic_configs(kafka_bootstrap, [topic.name for topic in wanted])
    for topic in wanted:
        found = configs[topic.name]
        assert found["partitions"] == str(topic.num_partitions), topic.name
        expected_policy = topic.topic_configs.get("cleanup.policy", "delete")
        assert found["cleanup.policy"] == expected_policy, topic.name
        if "retention.ms" in topic.topic_configs:
            assert found["retention.ms"] == topic.topic_configs["retention.ms"], topic.name
    changelog = configs[f"{common.topic_prefix}driftline-drift-feature_to_monitor-changelog"]
    assert (changelog["partitions"], changelog["cleanup.policy"]) == ("3", "compact")


def test_a_fresh_worker_has_its_internal_topics_before_its_first_rebalance(
    monkeypatch: pytest.MonkeyPatch, pipeline: Pipeline
) -> None:
    """The drift service has every kind: global and windowed tables' changelogs, an internal
    agent topic, the leader topic. All are listed before the first assignment, so none is
    "missing" to the assignor and recovery has every partition it waits for."""
    isolate_prometheus(monkeypatch)
    common = pipeline.settings.model_copy(update={"data_dir": pipeline.workdir / "built"})
    wanted = {topic.name for topic in internal_topics(build_drift(common, DriftSettings()))}

    worker = pipeline.start("drift")

    records = _records(worker.log_path)
    events = [str(record.get("event", "")) for record in records]
    ready_at = events.index("internal topics ready")
    assert set(records[ready_at]["topics"]) == wanted
    assert set(records[ready_at]["created"]) == wanted  # fresh prefix: none existed
    first_assignment = next(i for i, e in enumerate(events) if "_on_partitions_assigned" in e)
    assert ready_at < first_assignment
    assert not [e for e in events if "Ignoring missing topic" in e]


async def test_a_send_that_fails_for_good_stops_the_worker_before_its_input_commits(
    pipeline: Pipeline,
) -> None:
    """The target refuses records over 1 KB: the worker forwards a 10 KB one, the broker
    rejects its batch, and the commit that follows refuses to pass over it."""
    source, target = pipeline.prefix + "relay.in", pipeline.prefix + "relay.out"
    admin = kafka_clients.admin_client(KafkaAccess(pipeline.bootstrap))
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(source, 1, 1),
                NewTopic(target, 1, 1, topic_configs={"max.message.bytes": "1024"}),
            ]
        )
    finally:
        await admin.close()
    await produce(
        pipeline.bootstrap, source, [("k", b"small"), ("k", b"x" * 10_000), ("k", b"small")]
    )
    forwarder = ServiceProcess(
        "forward",
        {
            **pipeline.env,
            "DRIFTLINE_FORWARD_SOURCE": source,
            "DRIFTLINE_FORWARD_TARGET": target,
        },
        pipeline.workdir / "forward.log",
        argv=["-m", "loadtest.forward_app"],
    )
    pipeline.workers.append(forwarder)
    forwarder.spawn()
    assert forwarder.process is not None

    exit_code = await asyncio.to_thread(forwarder.process.wait, 90)

    assert exit_code != 0
    admin = kafka_clients.admin_client(KafkaAccess(pipeline.bootstrap))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"{pipeline.prefix}driftline-forward")
    finally:
        await admin.close()
    assert all(meta.offset <= 1 for meta in committed.values()), committed  # not past the big one
    records = _records(forwarder.log_path)
    failed = [r for r in records if r.get("event", "").startswith("sends failed")]
    assert len(failed) == 1
    assert failed[0]["level"] == "error"
    assert {r["topic"] for r in failed[0]["records"]} == {target}
    assert 10_000 in {r["bytes"] for r in failed[0]["records"]}
    crashes = [r for r in records if "Crashed reason=DeliveryFailedError" in r.get("event", "")]
    assert len(crashes) == 1
    assert "Traceback" in crashes[0]["exception"]  # the traceback inside its one record


@pytest.mark.parametrize("mode", ["batches", "events"])
async def test_a_handler_interrupted_mid_way_is_fetched_again_and_nothing_is_lost(
    pipeline: Pipeline, mode: str
) -> None:
    """An agent cancelled mid-batch (as a rebalance or a stop cancels it) is restarted by Faust,
    which acknowledges what it was handling as its generator closes: the commit passed those
    records and they were never forwarded. They stay unacknowledged, the commit holds before
    them, and the partition is fetched again from the first of them before anything after
    them is forwarded: outputs keep their input's order, by which consumers downstream tell a
    replay. One by one (`consume`) too, where faust-streaming's Cython iterator acknowledged
    records without `DriftlineConsumer.ack`."""
    source, target = pipeline.prefix + "interrupted.in", pipeline.prefix + "interrupted.out"
    admin = kafka_clients.admin_client(KafkaAccess(pipeline.bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(source, 1, 1), NewTopic(target, 1, 1)])
    finally:
        await admin.close()
    values = [f"r{i}".encode() for i in range(60)]
    values[30] = INTERRUPT
    worker = ServiceProcess(
        "interrupted",
        {
            **pipeline.env,
            "DRIFTLINE_INTERRUPTED_SOURCE": source,
            "DRIFTLINE_INTERRUPTED_TARGET": target,
            "DRIFTLINE_INTERRUPTED_MARKER": str(pipeline.workdir / "interrupted"),
            "DRIFTLINE_INTERRUPTED_MODE": mode,
        },
        pipeline.workdir / "interrupted.log",
        argv=["-m", "tests.support.interrupted_app"],
    )
    pipeline.workers.append(worker)
    await asyncio.to_thread(worker.start)
    await produce(pipeline.bootstrap, source, [(b"k", value) for value in values])

    forwarded = await consume_until(
        pipeline.bootstrap, [target], lambda got: set(values) <= {r.value for r in got}, 120
    )

    assert (pipeline.workdir / "interrupted").exists()  # the handler was interrupted once
    assert set(values) <= {record.value for record in forwarded}
    group = f"{pipeline.prefix}driftline-interrupted"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if await _committed(pipeline.bootstrap, group, source) == len(values):
            break
        await asyncio.sleep(0.5)
    assert await _committed(pipeline.bootstrap, group, source) == len(values)
    first_seen = list(dict.fromkeys(record.value for record in forwarded))
    assert first_seen == values[: len(first_seen)]  # in order; replays come as suffixes
    events = [r.get("event", "") for r in _records(worker.log_path)]
    assert any(event.startswith("records its stream has not processed") for event in events)
    assert not any(event.startswith("records were processed past one") for event in events)
    stopped = time.monotonic()
    assert worker.stop() == 0, "the interrupted record held the stop until its grace ran out"
    assert time.monotonic() - stopped < 15


async def _committed(bootstrap: str, group: str, topic: str) -> int | None:
    """The group's committed offset of partition 0 of `topic`."""
    admin = kafka_clients.admin_client(KafkaAccess(bootstrap))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(TopicPartition(topic, 0))
    return None if meta is None else meta.offset


def test_sigterm_ends_a_worker_whose_broker_is_gone_within_30_seconds(tmp_path: Path) -> None:
    broker = LocalKafka(port=free_port(), controller_port=free_port(), home=tmp_path)
    broker.libs.symlink_to(LocalKafka().ensure_jars(), target_is_directory=True)
    broker.start()
    worker = ServiceProcess(
        "feedback",
        {
            "DRIFTLINE_KAFKA_BROKER": broker.bootstrap,
            "DRIFTLINE_TOPIC_PARTITIONS": "2",
            "DRIFTLINE_DATA_DIR": str(tmp_path / "data"),
        },
        tmp_path / "feedback.log",
    )
    try:
        asyncio.run(
            create_topics(DriftlineSettings(kafka_broker=broker.bootstrap, topic_partitions=2))
        )
        worker.start(ready_timeout=120)
        broker.stop()
        time.sleep(3)  # the worker notices: fetches and heartbeats fail and back off

        began = time.monotonic()
        worker.stop(timeout=60)
        took = time.monotonic() - began
    finally:
        worker.kill()
        broker.stop()

    assert took < 30, worker.tail()
    assert worker.process is not None and worker.process.returncode is not None
    _records(worker.log_path)  # one JSON record per line, tracebacks included
