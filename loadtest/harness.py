"""Running one benchmark scenario: a private Driftline on the bench broker and its measured phases.

Each `Run` gets its own topic prefix (so its topics and consumer groups are its own), creates the
public topics, starts real worker processes and, on `close`, stops them and deletes every topic
of its prefix. A phase either fills the input topic as fast as the producer allows once every
worker is idle and ready (maximum sustained rate) or sends at a fixed rate (latency); both wait
for the outputs with a timeout and read them back from the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from loadtest.generator import FeedbackPlan, generate
from loadtest.measure import (
    LagSampler,
    ProcessUsage,
    event_latencies_ms,
    lag_summary,
    latency_summary,
    read_records,
    sustained_rate,
    topic_end,
    wait_for_records,
    worker_latency_ms,
)
from loadtest.workload import Record, Workload, setup_records
from services.processes import ServiceProcess
from shared import kafka_clients
from shared.admin import create_topics, delete_prefixed_topics
from shared.kafka_clients import KafkaAccess
from shared.logging import get_logger
from shared.settings import DriftlineSettings
from shared.topics import MODEL_SNAPSHOTS, Topic

log = get_logger(__name__)


@dataclass
class Run:
    """One scenario's Driftline: prefix, settings, workers; `close` stops and deletes it all.

    Its files (worker logs, table data) go to a folder of `workdir` named after the prefix.
    """

    bootstrap: str
    workdir: Path
    name: str
    partitions: int = 4
    session_timeout_s: float | None = None
    """The workers' DRIFTLINE_KAFKA_SESSION_TIMEOUT_S (Driftline's default when None)."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """Settings every worker of the run gets on top of the run's own (successors too)."""
    prefix: str = field(init=False)
    settings: DriftlineSettings = field(init=False)
    workers: list[ServiceProcess] = field(default_factory=list)
    startup_s: dict[str, float] = field(default_factory=dict)
    """Seconds from spawning each worker to its health check passing."""
    ready_s: float | None = None
    """Seconds from spawning the workers to their having stored the set-up records."""
    _spawned: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prefix = f"b{uuid.uuid4().hex[:8]}-{self.name}."
        self.workdir = self.workdir / self.prefix.rstrip(".")
        self.settings = DriftlineSettings(
            kafka_broker=self.bootstrap,
            topic_prefix=self.prefix,
            topic_partitions=self.partitions,
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        asyncio.run(create_topics(self.settings))

    @property
    def env(self) -> dict[str, str]:
        """The environment every worker of this run gets (no MLflow server runs in a benchmark)."""
        session = self.session_timeout_s
        return {
            **({"DRIFTLINE_KAFKA_SESSION_TIMEOUT_S": str(session)} if session else {}),
            "DRIFTLINE_KAFKA_BROKER": self.bootstrap,
            "DRIFTLINE_TOPIC_PREFIX": self.prefix,
            "DRIFTLINE_TOPIC_PARTITIONS": str(self.partitions),
            "DRIFTLINE_DATA_DIR": str(self.workdir / "data"),
            "DRIFTLINE_LOG_LEVEL": "info",
            "DRIFTLINE_SNAPSHOT_HMAC_KEY": self.settings.snapshot_hmac_key.get_secret_value(),
            "DRIFTLINE_ALLOW_DEFAULT_KEYS": "true",  # a private, throw-away Driftline
            "DRIFTLINE_LEARNER_MLFLOW_ENABLED": "false",
            **self.extra_env,
        }

    def topic(self, topic: Topic) -> str:
        """A public topic's full name in this run."""
        return topic.full_name(self.settings)

    def group(self, service: str) -> str:
        """The consumer group (Faust app id) of a service in this run."""
        return f"{self.prefix}driftline-{service}"

    def spawn(self, service: str, argv: list[str] | None = None, **extra_env: str) -> None:
        """Start a worker without waiting for it (`wait_ready` waits for all)."""
        index = sum(w.service == service for w in self.workers)
        worker = ServiceProcess(
            service,
            {**self.env, **extra_env},
            self.workdir / f"{service}-{index}.log",
            argv=argv,
        )
        worker.spawn()
        self.workers.append(worker)
        self._spawned[f"{service}-{index}"] = time.monotonic()

    def kill(self, worker: ServiceProcess) -> None:
        """SIGKILL `worker`, as a crash would, and stop waiting for it to be ready."""
        worker.kill()
        self._spawned.pop(self._names()[self.workers.index(worker)], None)

    def stop(self, worker: ServiceProcess, timeout: float = 30.0) -> None:
        """Stop `worker` with SIGTERM (its partitions go to the others), as a scale-in would;
        SIGKILL it after `timeout`."""
        worker.stop(timeout=timeout)
        self._spawned.pop(self._names()[self.workers.index(worker)], None)

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Wait until every spawned worker is healthy (`ServiceStartError` if one is not within
        `timeout`); record each one's start-up time."""
        for name, worker in zip(self._names(), self.workers, strict=True):
            if name in self._spawned:
                worker.wait_ready(timeout=timeout)
                self.startup_s[name] = round(time.monotonic() - self._spawned.pop(name), 2)

    def publish_setup(
        self,
        workload: Workload,
        models: dict[str, str],
        per_entity: bool,
        entity_snapshots: bool = False,
    ) -> int:
        """Publish the workload's set-up records (see `setup_records`); return how many
        snapshots."""
        records = setup_records(
            workload, models, self.settings.snapshot_keys, per_entity, entity_snapshots
        )
        for topic, values in records.items():
            asyncio.run(publish_all(self.bootstrap, self.topic(topic), values))
        return len(records[MODEL_SNAPSHOTS])

    def start_services(
        self,
        services: dict[str, int],
        streams: int,
        deployments: int,
        snapshots: int,
        **extra_env: str,
    ) -> None:
        """Start `services` (name -> workers) together, with `extra_env` on top of the run's
        settings, and wait until their agents have stored the set-up records, so what follows
        sees a ready pipeline."""
        began = time.monotonic()
        for service, workers in services.items():
            for _ in range(workers):
                self.spawn(service, **extra_env)
        self.wait_ready()
        if "ingestion" in services:
            self.wait_stored("ingestion", "stream_to_schema", streams)
        if "router" in services:
            self.wait_stored("router", "deployments", deployments)
            self.wait_stored("router", "model_snapshots", snapshots)
        self.ready_s = round(time.monotonic() - began, 2)

    def _names(self) -> list[str]:
        """``service-index`` of each worker, in start order."""
        counts: dict[str, int] = {}
        names = []
        for worker in self.workers:
            counts[worker.service] = counts.get(worker.service, -1) + 1
            names.append(f"{worker.service}-{counts[worker.service]}")
        return names

    def changelog(self, service: str, table: str) -> str:
        """The changelog topic of `service`'s table `table`."""
        return f"{self.group(service)}-{table}-changelog"

    def wait_stored(self, service: str, table: str, expected: int, timeout: float = 180) -> None:
        """Wait until `service`'s agents have stored `expected` records in `table` (its changelog
        holds them) and every worker has had a moment to read them."""
        changelog = self.changelog(service, table)
        held = asyncio.run(wait_for_records(self.bootstrap, changelog, expected, timeout))
        if held < expected:
            raise TimeoutError(f"{service} stored {held} of {expected} records in {table}")
        time.sleep(1.0)

    def usage(self) -> dict[str, ProcessUsage]:
        """Memory and CPU time of every running worker, by ``service-index``."""
        return {
            name: ProcessUsage.of(worker.process.pid)
            for name, worker in zip(self._names(), self.workers, strict=True)
            if worker.process is not None and worker.process.poll() is None
        }

    def metrics(self) -> dict[str, str]:
        """The /metrics text of every running worker that answers, by ``service-index`` (one
        too busy to answer within the client's timeout is left out of this reading)."""
        texts = {}
        for name, worker in zip(self._names(), self.workers, strict=True):
            if worker.process is None or worker.process.poll() is not None:
                continue
            try:
                texts[name] = worker.metrics()
            except httpx.HTTPError as exc:
                log.warning("worker metrics not read", worker=name, error=str(exc))
        return texts

    def close(self, keep_topics: bool = False) -> None:
        """Stop the workers and delete every topic of this run, unless `keep_topics` (a failed
        run's records are the evidence)."""
        for worker in self.workers:
            worker.stop(timeout=15.0)
        if not keep_topics:
            asyncio.run(delete_prefixed_topics(KafkaAccess(self.bootstrap), self.prefix))


async def create_plain_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """Create topics outside Driftline's table (the references' source and target)."""
    admin = kafka_clients.admin_client(KafkaAccess(bootstrap))
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def publish_all(bootstrap: str, topic: str, records: list[Record]) -> None:
    """Write set-up records (declarations, deployments, snapshots) and wait until stored."""
    producer = kafka_clients.producer(
        KafkaAccess(bootstrap), linger_ms=5, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


def load_average() -> float:
    """The machine's one-minute load average."""
    return round(os.getloadavg()[0], 2)


@dataclass(frozen=True)
class Phase:
    """What to send and what to wait for."""

    input_topic: str
    make: Callable[[int, float | None], Record]
    count: int
    output_topic: str
    outputs_per_event: float = 1.0
    """Output records each event yields (predictions per event, labels per event...)."""
    groups: dict[str, list[str]] = field(default_factory=dict)
    """Consumer groups whose lag is sampled, with the topics they read."""
    feedback: FeedbackPlan | None = None
    timeout_s: float = 180.0


def run_phase(run: Run, phase: Phase, rate: float | None, first: int = 0) -> dict[str, Any]:
    """Send `phase.count` events (as fast as possible when `rate` is None) and wait for the
    outputs; figures of the outputs written during this phase."""
    return asyncio.run(_run_phase(run, phase, rate, first))


async def _run_phase(run: Run, phase: Phase, rate: float | None, first: int) -> dict[str, Any]:
    load = load_average()
    before = run.usage()
    metrics_before = run.metrics()
    held_before = await topic_end(run.bootstrap, phase.output_topic)
    since_ms = time.time() * 1000
    sampler = LagSampler(run.bootstrap, phase.groups)
    sampling = asyncio.create_task(sampler.run(max_seconds=phase.timeout_s + 60))
    sent = await generate(
        run.bootstrap,
        phase.input_topic,
        phase.make,
        phase.count,
        rate=rate,
        max_seconds=phase.timeout_s,
        feedback=phase.feedback,
        first=first,
    )
    expected = held_before + round(sent.sent * phase.outputs_per_event)
    held = await wait_for_records(run.bootstrap, phase.output_topic, expected, phase.timeout_s)
    sampler.stop()
    await sampling
    after = run.usage()
    metrics_after = run.metrics()
    records = await read_records(run.bootstrap, phase.output_topic, since_ms=since_ms)
    result: dict[str, Any] = {
        "load_average": load,
        "rate_target": rate,
        "generator": sent.as_dict(),
        "expected_outputs": expected - held_before,
        "outputs": len(records),
        "complete": held >= expected,
        "rate": sustained_rate([r.timestamp_ms for r in records]),
        "cpu_s": {k: round(after[k].cpu_s - before[k].cpu_s, 2) for k in after if k in before},
        "rss_mb": {k: u.rss_mb for k, u in after.items()},
        "lag": lag_summary(sampler.samples),
        "worker_latency_ms": {
            name: worker_latency_ms(metrics_before[name], text)
            for name, text in metrics_after.items()
            if name in metrics_before
        },
    }
    if records:
        result["latency_ms"] = latency_summary(event_latencies_ms(records))
    return result
