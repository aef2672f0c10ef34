"""Fault injection on the real broker, checked by event id (issue 15).

    .venv/bin/python -m loadtest.chaos            # every scenario, 3 runs each (make chaos)
    .venv/bin/python -m loadtest.chaos --quick    # the small set CI runs

A scenario runs a private Driftline (`loadtest.harness.Run`), sends a known workload at a fixed
rate with a label for every event one second later, and injects its faults on a schedule while
the events flow (SIGKILL a worker and start its successor at once, ...). Then it waits until
every consumer group has committed everything it was given, reads the output topics back and
checks every event's effects by id, as a run without faults would have them:

- one prediction per event and answering variant (re-sent records of one prediction id are
  counted apart: downstream drops them by id);
- exactly one join per (event, variant) on ``predictions.labeled`` (records a replay re-sent
  with the provenance of the first are counted apart: downstream applies each provenance once);
- the online model learned every labeled event exactly once (the ``n_learned`` of its state,
  the last record of the learner table's changelog, equals the events, where a loss shows as
  less and a twice-learned record as more);
- with the drift service in the pipeline (the workload then drifts at its middle event), its
  detectors hold what a worker without faults holds after the same input, the alerts on
  ``alerts`` are the ones that worker sends, by id (`loadtest.drift_oracle`), and a webhook
  receiver got a post of each.

The broker is a `LocalKafka` on port 39093 (not the tests' 19092 nor the bench's 39092), started
if none answers and stopped afterwards if this run started it. A full run writes
``docs/reliability.json`` and the generated block of ``docs/reliability.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import typer

from loadtest.drift_oracle import differing, expected_detectors
from loadtest.generator import FeedbackPlan, generate
from loadtest.harness import Run, load_average
from loadtest.measure import OutputRecord, partition_lag, partitions_of, read_records
from loadtest.report import write_block
from loadtest.workload import MODEL_ID, Record, Workload
from services.drift.logic import notifies
from services.processes import ServiceProcess
from shared import failpoints, kafka_clients
from shared.kafka_clients import KafkaAccess
from shared.localkafka import KAFKA_VERSION, LocalKafka, default_home
from shared.sealing import PICKLE, SealedState
from shared.settings import DriftlineSettings, DriftSettings
from shared.topics import ALERTS, EVENTS_RAW, FEATURES, FEEDBACK, PREDICTIONS
from shared.topics import PREDICTIONS_LABELED as LABELED
from shared.webhooks import ID_HEADER
from tests.support.webhook_server import Received, WebhookReceiver

DEPLOYMENT = "deployment-0"


@dataclass(frozen=True)
class Fault:
    """One fault: at `at_s` seconds into the sending, `action` on `service`'s worker."""

    at_s: float
    action: Literal[
        "kill", "wipe", "stop", "add", "remove", "restart", "terminate", "cold", "failpoint"
    ]
    """``kill``: SIGKILL the worker and start its successor at once, as a crash would.
    ``add``: start one more worker of the service (scale out); ``remove``: stop its newest
    worker with SIGTERM (scale in), its partitions handed to the others. ``restart`` (service
    ``broker``): stop the broker for `for_s` seconds and start it again on the same storage;
    the workers are left to recover on their own. ``wipe``: as ``kill``, and the worker's local
    data directory is deleted before its successor starts. ``terminate`` (service ``broker``):
    stop the broker, SIGTERM every worker (each must exit within `STOP_WITHOUT_BROKER_S`), then
    start the broker and a successor of each service. ``cold`` (service ``all``): SIGTERM every
    worker, start one of each service and wait until each is ready (at most
    `COLD_START_READY_S`); the next fault waits for it.
    ``stop``: SIGSTOP the worker and start its successor at once, as for a hung node; SIGCONT
    it `for_s` later, past its session timeout, so it comes back as a zombie that still holds
    the records it had batched, and then stays as a second worker.
    ``failpoint``: SIGKILL the worker and start a successor armed to exit on its third pass
    through ``outputs-delivered`` (`shared.failpoints`): after a micro-batch's outputs were
    acknowledged, before the state recording them is written; once it has exited, start a
    plain successor. One that has not reached it within `for_s` (it first waits out its
    predecessor's session) is killed and replaced all the same, and the run notes it."""
    service: str
    for_s: float = 0.0


SESSION_TIMEOUT_S: float = DriftlineSettings.model_fields["kafka_session_timeout_s"].default
"""Driftline's default DRIFTLINE_KAFKA_SESSION_TIMEOUT_S: a stopped worker's partitions go to
its successor after this long."""


@dataclass(frozen=True)
class Scenario:
    """A pipeline, a workload and a fault schedule."""

    name: str
    services: tuple[str, ...]
    events: int
    rate: float
    """Events per second the generator sends (labels follow one second later)."""
    faults: tuple[Fault, ...]
    partitions: int = 4
    busy_cpus: int = 0
    """CPU-bound processes kept running beside the pipeline for the whole run."""
    runs: int | None = None
    """Runs of a full `make chaos` when not the default (a scenario that repeats its fault)."""
    session_timeout_s: float = SESSION_TIMEOUT_S
    """The workers' DRIFTLINE_KAFKA_SESSION_TIMEOUT_S: how long a killed worker's partitions
    wait before its successor gets them."""

    @property
    def shift_at(self) -> int | None:
        """With the drift service in the pipeline, the workload drifts at its middle event
        (`Workload.shift_at`), so there are alerts and webhooks to check."""
        return self.events // 2 if "drift" in self.services else None

    @property
    def input_topic(self) -> Any:
        """Where the workload's events go: raw events with ingestion in the pipeline, else
        feature events straight to the router."""
        return EVENTS_RAW if "ingestion" in self.services else FEATURES


def kill_each(
    services: Iterable[str],
    first_s: float,
    every_s: float,
    rounds: int = 1,
    action: Literal["kill", "wipe"] = "kill",
) -> tuple:
    """SIGKILL each service in turn, `every_s` apart, `rounds` times over (``wipe``: and delete
    its data directory)."""
    names = list(services) * rounds
    return tuple(Fault(first_s + i * every_s, action, s) for i, s in enumerate(names))


def stop_each(services: Iterable[str], first_s: float, every_s: float, for_s: float) -> tuple:
    """SIGSTOP each service in turn, `every_s` apart, for `for_s` seconds each."""
    return tuple(Fault(first_s + i * every_s, "stop", s, for_s) for i, s in enumerate(services))


def plan(quick: bool) -> list[Scenario]:
    """The scenarios of a full run (`make chaos`) or of the quick set CI runs."""
    learning = ("router", "feedback", "learner")
    everything = ("ingestion", "router", "feedback", "drift", "learner")
    if quick:
        return [
            Scenario("T1a kill router, feedback, learner", learning, 1_500, 100.0,
                     kill_each(learning, 4.0, 3.0), session_timeout_s=10.0),
            Scenario("T1b kill each of the five services once", everything, 2_000, 100.0,
                     kill_each(everything, 4.0, 3.0), session_timeout_s=10.0),
        ]  # fmt: skip
    return [
        Scenario("T1a kill router, feedback, learner", learning, 3_000, 140.0,
                 kill_each(learning, 7.0, 7.0)),
        Scenario("T1b kill each of the five services twice", everything, 6_000, 140.0,
                 kill_each(everything, 5.0, 4.0, rounds=2)),
        Scenario("T1c kill each of the five services three times in a long run", everything,
                 100_000, 140.0, kill_each(everything, 60.0, 40.0, rounds=3)),
        Scenario("T2 stop router, feedback, learner past their session timeout", learning,
                 3_000, 140.0, stop_each(learning, 5.0, 4.0, for_s=SESSION_TIMEOUT_S + 15)),
        Scenario("T3 broker stopped for 10 s and restarted", everything, 6_000, 140.0,
                 (Fault(10.0, "restart", "broker", 10.0),)),
        Scenario("T5 kill each of the five services and wipe its data directory", everything,
                 6_000, 140.0, kill_each(everything, 5.0, 4.0, action="wipe")),
        Scenario("T7 SIGTERM every worker with the broker gone, then restart all", everything,
                 6_000, 140.0, (Fault(15.0, "terminate", "broker"),)),
        Scenario("T6 twenty cold starts of the five services with two busy CPUs", everything,
                 4_000, 10.0, tuple(Fault(5.0 + i, "cold", "all") for i in range(20)),
                 busy_cpus=2, runs=1),
        Scenario("T8 exit between a batch's delivered outputs and its state", everything,
                 6_000, 140.0, tuple(Fault(5.0 + 4 * i, "failpoint", s, 180.0)
                                     for i, s in enumerate(("ingestion", "feedback", "learner")))),
        Scenario("T4 scale each of the five services 1 -> 2 -> 1", everything, 6_000, 140.0,
                 tuple(Fault(4.0 + 2 * i, "add", s) for i, s in enumerate(everything))
                 + tuple(Fault(24.0 + 2 * i, "remove", s) for i, s in enumerate(everything))),
    ]  # fmt: skip


@dataclass
class Effects:
    """What the outputs hold, by id, against what a run without faults gives."""

    events: int
    featured: int | None = None
    """Events with a feature event (with ingestion in the pipeline)."""
    duplicate_feature_records: int = 0
    """Feature records beyond one per event (absorbed downstream by prediction id)."""
    predicted: int = 0
    """Events with a prediction of the champion."""
    duplicate_prediction_records: int = 0
    """Prediction records beyond one per prediction id (absorbed downstream by id)."""
    labeled: int = 0
    """(event, variant) pairs with a labeled record."""
    duplicate_labeled: int = 0
    """Joins beyond one per (event, variant), by provenance: duplicated effects."""
    duplicate_labeled_records: int = 0
    """Labeled records a replay re-sent with the provenance of the first (applied once)."""
    learned: int | None = None
    """The online model's ``n_learned`` in the learner's table at the end."""
    detector_values: dict[str, int] | None = None
    """Values each drift detector counted (its ``n_seen``), by what it watches: every data
    detector watches one feature of every event; the concept detectors' sum is one per
    labeled event (with drift in the pipeline)."""
    detectors_differing: list[str] = field(default_factory=list)
    """Drift detectors whose stored state is not what a worker without faults would hold
    after the same input (`loadtest.drift_oracle`), each with how it differs."""
    alerts: int | None = None
    """Alerts a drift worker without faults sends on the same input (with drift in the
    pipeline)."""
    alerts_missing: list[str] = field(default_factory=list)
    """Ids of those alerts not on ``alerts``."""
    alerts_unexpected: list[str] = field(default_factory=list)
    """Ids on ``alerts`` a worker without faults does not send (a value counted twice or out
    of order moves a detector's positions)."""
    webhooks_missing: list[str] = field(default_factory=list)
    """Ids of sent alerts of the webhook levels that no post announced."""
    webhook_repeats: int = 0
    """Posts beyond one per alert id (receivers act once per ``webhook-id``)."""
    caught_up_s: float | None = None
    """Seconds from the last event sent until every group had committed all its input."""
    behind: dict[str, int] = field(default_factory=dict)
    """Where groups had not caught up by the timeout: group topic[partition] -> records left."""
    faults: list[str] = field(default_factory=list)
    slow_exits: list[str] = field(default_factory=list)
    """Workers that took longer than `STOP_WITHOUT_BROKER_S` to exit after SIGTERM."""

    @property
    def lost(self) -> int:
        """Events missing a feature event, a prediction, a labeled record or a learning
        step."""
        learned = self.events if self.learned is None else self.learned
        featured = self.events if self.featured is None else self.featured
        return (
            (self.events - featured)
            + (self.events - self.predicted)
            + (self.events - self.labeled)
            + max(0, self.events - learned)
            + sum(max(0, self.events - n) for n in (self.detector_values or {}).values())
            + len(self.alerts_missing)
            + len(self.webhooks_missing)
        )

    @property
    def duplicated(self) -> int:
        """Effects applied more than once (an unexpected alert counts as one)."""
        learned = self.events if self.learned is None else self.learned
        return (
            self.duplicate_labeled
            + max(0, learned - self.events)
            + sum(max(0, n - self.events) for n in (self.detector_values or {}).values())
            + len(self.alerts_unexpected)
        )

    @property
    def passed(self) -> bool:
        """Nothing lost, nothing done twice, the detectors as without faults, everything caught
        up, every stop in time."""
        return (
            self.lost == 0
            and self.duplicated == 0
            and not self.detectors_differing
            and self.caught_up_s is not None
            and not self.slow_exits
        )


def live_worker(run: Run, service: str) -> ServiceProcess:
    """The newest running worker of `service`."""
    return next(
        w
        for w in reversed(run.workers)
        if w.service == service and w.process is not None and w.process.poll() is None
    )


async def inject(run: Run, faults: tuple[Fault, ...], began: float, effects: Effects) -> None:
    """Carry out `faults` at their times (measured from `began`, a monotonic time)."""
    resumes: list[asyncio.Task[None]] = []
    paused: list[ServiceProcess] = []

    def note(what: str) -> None:
        effects.faults.append(f"{time.monotonic() - began:.1f}s {what}")

    async def resume_later(worker: ServiceProcess, fault: Fault) -> None:
        await asyncio.sleep(fault.for_s)
        worker.resume()
        note(f"resume {fault.service}")

    async def replace_when_exited(worker: ServiceProcess, fault: Fault) -> None:
        assert worker.process is not None
        try:
            status = await asyncio.to_thread(worker.process.wait, fault.for_s)
            outcome = f"exited at its failpoint ({status})"
        except subprocess.TimeoutExpired:
            outcome = f"did not reach its failpoint in {fault.for_s:.0f}s; killed"
        await asyncio.to_thread(run.kill, worker)  # exited: only forgets it and reaps the rest
        run.spawn(fault.service)
        note(f"{fault.service} {outcome}; successor started")

    try:
        for fault in sorted(faults, key=lambda f: f.at_s):
            await asyncio.sleep(max(0.0, began + fault.at_s - time.monotonic()))
            if fault.action == "restart":
                await restart_broker(run.bootstrap, fault.for_s)
                note("broker back")
                continue
            if fault.action == "cold":
                took = await cold_start(run)
                note(f"cold start, every worker ready in {took:.0f}s")
                continue
            if fault.action == "terminate":
                slow = await terminate_without_broker(run)
                effects.slow_exits += slow
                note(f"every worker stopped with the broker gone; slow: {slow or 'none'}")
                continue
            worker = live_worker(run, fault.service)
            if fault.action == "remove":
                await asyncio.to_thread(run.stop, worker)
            elif fault.action in ("kill", "wipe"):
                await asyncio.to_thread(run.kill, worker)
                if fault.action == "wipe":
                    shutil.rmtree(run.workdir / "data" / fault.service, ignore_errors=True)
            elif fault.action == "stop":
                worker.pause()
                paused.append(worker)
                resumes.append(asyncio.create_task(resume_later(worker, fault)))
            elif fault.action == "failpoint":
                await asyncio.to_thread(run.kill, worker)
                run.spawn(fault.service, **{failpoints.ENV: "outputs-delivered=3"})
                armed = live_worker(run, fault.service)
                resumes.append(asyncio.create_task(replace_when_exited(armed, fault)))
                note(f"failpoint armed in {fault.service}")
                continue
            if fault.action != "remove":
                run.spawn(fault.service)
            note(f"{fault.action} {fault.service}")
        await asyncio.gather(*resumes)
    finally:
        for task in resumes:
            task.cancel()
        for worker in paused:
            worker.resume()  # never leave a stopped worker behind, whatever failed


STOP_WITHOUT_BROKER_S = 30.0
"""How long a worker may take to exit after SIGTERM when its broker is gone (issue 15, T7)."""


async def terminate_without_broker(run: Run) -> list[str]:
    """Stop the broker, SIGTERM every running worker at once, then start the broker and a
    successor of each service; the workers that took longer than `STOP_WITHOUT_BROKER_S` to
    exit, with their times."""
    broker = LocalKafka(port=int(run.bootstrap.rsplit(":", 1)[1]), home=default_home())
    await asyncio.to_thread(broker.stop)
    running = [w for w in run.workers if w.process is not None and w.process.poll() is None]

    async def timed_stop(worker: ServiceProcess) -> float:
        began = time.monotonic()
        await asyncio.to_thread(run.stop, worker, STOP_WITHOUT_BROKER_S + 30)
        return time.monotonic() - began

    took = await asyncio.gather(*(timed_stop(w) for w in running))
    await asyncio.to_thread(broker.start)
    for service in dict.fromkeys(w.service for w in running):
        run.spawn(service)
    return [
        f"{w.service} {t:.0f}s"
        for w, t in zip(running, took, strict=True)
        if t > STOP_WITHOUT_BROKER_S
    ]


COLD_START_READY_S = 180.0
"""How long a cold-started worker may take to be ready (issue 15, T6: every start must be)."""


async def cold_start(run: Run) -> float:
    """SIGTERM every running worker, start one of each service, wait until all are ready
    (`ServiceStartError` if one is not within `COLD_START_READY_S`); the seconds it took."""
    began = time.monotonic()
    running = [w for w in run.workers if w.process is not None and w.process.poll() is None]
    await asyncio.gather(*(asyncio.to_thread(run.stop, w) for w in running))
    for service in dict.fromkeys(w.service for w in running):
        run.spawn(service)
    await asyncio.to_thread(run.wait_ready, COLD_START_READY_S)
    return time.monotonic() - began


@contextlib.contextmanager
def busy_cpus(count: int) -> Iterator[None]:
    """`count` CPU-bound processes running meanwhile, each in its own process group, killed
    on the way out whatever happened."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for burner in burners:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(burner.pid, signal.SIGKILL)
            burner.wait()


async def restart_broker(bootstrap: str, down_s: float) -> None:
    """Stop the run's broker, wait `down_s`, start it again on the same storage."""
    broker = LocalKafka(port=int(bootstrap.rsplit(":", 1)[1]), home=default_home())
    await asyncio.to_thread(broker.stop)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(broker.start)


def feature_values_topic(run: Run) -> str:
    """The drift worker's internal topic of single feature values (its data detectors' input)."""
    return f"{run.group('drift')}-feature-values"


def input_topics(run: Run, services: Iterable[str]) -> dict[str, list[str]]:
    """Each service's consumer group with the topics it reads (internal ones included)."""
    topics = {
        "ingestion": [run.topic(EVENTS_RAW)],
        "router": [run.topic(FEATURES)],
        "feedback": [run.topic(PREDICTIONS), run.topic(FEEDBACK)],
        "learner": [run.topic(LABELED), f"{run.group('learner')}-training-examples"],
        "drift": [
            run.topic(FEATURES),
            run.topic(LABELED),
            feature_values_topic(run),
            run.topic(ALERTS),  # its webhooks are posted from alerts read back
        ],
    }
    return {run.group(s): topics[s] for s in services}


async def wait_caught_up(
    bootstrap: str, groups: dict[str, list[str]], timeout: float
) -> dict[str, int]:
    """Wait until every group has committed the end of every partition it reads, twice in a
    row a second apart (a worker may still be writing what the first look saw as done); what
    was left at the timeout, per group and partition (empty: caught up)."""
    partitions = {
        group: [await partitions_of(bootstrap, topic) for topic in topics]
        for group, topics in groups.items()
    }
    admin = kafka_clients.admin_client(KafkaAccess(bootstrap))
    consumer = kafka_clients.consumer(KafkaAccess(bootstrap))
    await admin.start()
    await consumer.start()
    deadline = time.monotonic() + timeout
    streak = 0
    try:
        behind: dict[str, int] = {}
        while time.monotonic() < deadline:
            behind = {
                f"{group} {tp.topic}[{tp.partition}]": left
                for group, topics in partitions.items()
                for tp, left in (await partition_lag(admin, consumer, group, topics)).items()
                if left
            }
            streak = streak + 1 if not behind else 0
            if streak >= 2:
                return {}
            await asyncio.sleep(1.0)
        return behind
    finally:
        await consumer.stop()
        await admin.close()


async def check(
    run: Run, workload: Workload, scenario: Scenario, effects: Effects, received: list[Received]
) -> None:
    """Fill `effects` from the output topics, the tables' changelogs and the webhook posts
    `received`."""
    wanted = {workload.event_id(i) for i in range(scenario.events)}
    if "ingestion" in scenario.services:
        features = Counter(
            orjson.loads(r.value)["event_id"]
            for r in await read_records(run.bootstrap, run.topic(FEATURES))
        )
        effects.featured = len(wanted & set(features))
        effects.duplicate_feature_records = sum(n - 1 for n in features.values())
    predictions = [
        orjson.loads(r.value) for r in await read_records(run.bootstrap, run.topic(PREDICTIONS))
    ]
    by_id = Counter(p["prediction_id"] for p in predictions)
    effects.duplicate_prediction_records = sum(n - 1 for n in by_id.values())
    effects.predicted = len(wanted & {p["event_id"] for p in predictions})
    labeled_records = await read_records(run.bootstrap, run.topic(LABELED))
    labeled = [orjson.loads(r.value) for r in labeled_records]
    sent = Counter(
        (record["event_id"], outcome["variant"], orjson.dumps(record.get("provenance")))
        for record in labeled
        for outcome in record["outcomes"]
    )
    joins = Counter((event, variant) for event, variant, _ in sent)
    effects.labeled = len({event for event, _ in joins} & wanted)
    effects.duplicate_labeled = sum(n - 1 for n in joins.values())
    effects.duplicate_labeled_records = sum(n - 1 for n in sent.values())
    if "learner" in scenario.services:
        # the learner's state itself, as a worker rebuilds it from its table's changelog: the
        # record of the highest version (its snapshots are published only when it learns, so a
        # successor with nothing left to learn sends none)
        learners = await table_state(run, "learner", "model_state")
        learner = learners.get(MODEL_ID.encode())
        effects.learned = learner.n_learned if learner is not None else 0
    if "drift" in scenario.services:
        data = await table_state(run, "drift", "feature_to_monitor")
        concept = await table_state(run, "drift", "model_to_monitor")
        effects.detector_values = {key.decode(): m.n_seen for key, m in data.items()} | {
            "concept (all model versions)": sum(m.n_seen for m in concept.values())
        }
        await check_alerts(run, effects, data, concept, labeled_records, received)


async def check_alerts(
    run: Run,
    effects: Effects,
    data: dict[bytes, Any],
    concept: dict[bytes, Any],
    labeled: list[OutputRecord],
    received: list[Received],
) -> None:
    """Compare the drift service's detectors and alerts with a worker's without faults on the
    same input (`loadtest.drift_oracle`), and the webhooks `received` with the alerts."""
    own = DriftSettings()
    values = await read_records(run.bootstrap, feature_values_topic(run))
    expected = expected_detectors(own, values, labeled, run.topic(FEATURES), run.topic(LABELED))
    effects.detectors_differing = differing(expected.data, data) + differing(
        expected.concept, concept
    )
    sent = {
        orjson.loads(r.value)["alert_id"]
        for r in await read_records(run.bootstrap, run.topic(ALERTS))
    }
    effects.alerts = len(expected.sent)
    effects.alerts_missing = sorted(expected.sent.keys() - sent)
    effects.alerts_unexpected = sorted(sent - expected.sent.keys())
    posts = Counter(r.headers[ID_HEADER] for r in received)
    announced = [i for i, alert in expected.sent.items() if notifies(alert, own.webhook_levels)]
    effects.webhooks_missing = sorted(set(announced) - posts.keys())
    effects.webhook_repeats = sum(n - 1 for n in posts.values())


async def table_state(run: Run, service: str, table: str) -> dict[bytes, Any]:
    """A pickled table of `service` as a worker rebuilds it from its changelog
    (`shared.sealing.SealedTable`): per key, the verified value of the highest version."""
    sealed = SealedState[Any](service, table, run.settings.state_keys, PICKLE)
    newest: dict[bytes, tuple[int, bytes]] = {}
    for record in await read_records(run.bootstrap, run.changelog(service, table)):
        key = record.key or b""
        verified = sealed.verified(key, record.value)
        if verified is not None and verified[0] >= newest.get(key, (-1, b""))[0]:
            newest[key] = verified
    return {key: PICKLE.loads(value) for key, (_, value) in newest.items()}


def run_scenario(bootstrap: str, workdir: Path, scenario: Scenario, timeout_s: float) -> Effects:
    """One run of `scenario` on a fresh private Driftline; its effects checked by id."""
    run = Run(
        bootstrap,
        workdir,
        scenario.name.split()[0].lower(),
        scenario.partitions,
        session_timeout_s=scenario.session_timeout_s,
    )
    workload = Workload(run=run.prefix, shift_at=scenario.shift_at)
    effects = Effects(events=scenario.events)
    with contextlib.ExitStack() as stack:
        received: list[Received] = []
        if "drift" in scenario.services:
            receiver = stack.enter_context(webhook_receiver())
            run.extra_env["DRIFTLINE_DRIFT_WEBHOOK_URLS"] = orjson.dumps([receiver.url()]).decode()
            received = receiver.received
        try:
            with busy_cpus(scenario.busy_cpus):
                snapshots = run.publish_setup(workload, {DEPLOYMENT: MODEL_ID}, per_entity=False)
                run.start_services({s: 1 for s in scenario.services}, 1, 1, snapshots)
                asyncio.run(_send_with_faults(run, workload, scenario, effects))
                sent_at = time.monotonic()
                groups = input_topics(run, scenario.services)
                effects.behind = asyncio.run(wait_caught_up(bootstrap, groups, timeout_s))
                if not effects.behind:
                    effects.caught_up_s = round(time.monotonic() - sent_at, 1)
            asyncio.run(check(run, workload, scenario, effects, received))
        finally:
            kept = not effects.passed
            run.close(keep_topics=kept)
            if kept:
                print(f"{scenario.name}: topics of the failed run kept under {run.prefix}.*",
                      file=sys.stderr, flush=True)  # fmt: skip
    return effects


@contextlib.contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver (every post verified and recorded) served from a thread of its own,
    so it answers across the run's separate event loops; stopped on the way out."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="webhook-receiver", daemon=True)
    thread.start()
    receiver = WebhookReceiver()
    try:
        asyncio.run_coroutine_threadsafe(receiver.__aenter__(), loop).result(30)
        try:
            yield receiver
        finally:
            asyncio.run_coroutine_threadsafe(receiver.__aexit__(), loop).result(30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


async def _send_with_faults(
    run: Run, workload: Workload, scenario: Scenario, effects: Effects
) -> None:
    """Send the workload at its rate, with event times as scheduled (event i at ``i / rate``
    after the start, whatever the sending's delays: the detectors' gates and windows then see
    the same times in every run), while `inject` carries out the faults."""
    base = workload.raw_event if scenario.input_topic is EVENTS_RAW else workload.feature_event
    start = time.time()

    def make(i: int, _: float | None) -> Record:
        return base(i, start + i / scenario.rate)

    began = time.monotonic()
    faults = asyncio.create_task(inject(run, scenario.faults, began, effects))
    try:
        await generate(
            run.bootstrap,
            run.topic(scenario.input_topic),
            make,
            scenario.events,
            rate=scenario.rate,
            max_seconds=scenario.events / scenario.rate * 3 + 60,
            feedback=FeedbackPlan(run.topic(FEEDBACK), workload.feedback, delay_s=1.0),
            durable=True,
        )
        await faults
    finally:
        faults.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await faults
    await asyncio.to_thread(run.wait_ready)


BLOCK_START = "<!-- chaos:start (generated by `make chaos`; edits inside are lost) -->"
BLOCK_END = "<!-- chaos:end -->"


def state_equal(row: dict[str, Any]) -> str:
    """Whether the learner and the drift detectors hold what a run without faults gives: every
    event learned once, every value counted once."""
    events, learned, detectors = row["events"], row["learned"], row.get("detector_values")
    if learned is None and detectors is None:
        return "–"
    wrong = [] if learned in (None, events) else [f"{learned:,} learned"]
    wrong += [f"{name}: {n:,}" for name, n in (detectors or {}).items() if n != events]
    wrong += row.get("detectors_differing", [])
    return "yes" if not wrong else f"no ({'; '.join(wrong)})"


def alerts_equal(row: dict[str, Any]) -> str:
    """Whether the alerts sent, and the webhooks posted, are those of a run without faults."""
    if row.get("alerts") is None:
        return "–"
    wrong = [
        f"{len(row[name])} {what}"
        for name, what in (
            ("alerts_missing", "missing"),
            ("alerts_unexpected", "unexpected"),
            ("webhooks_missing", "never posted"),
        )
        if row[name]
    ]
    return f"yes ({row['alerts']})" if not wrong else f"no ({', '.join(wrong)})"


def render(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table, one row per scenario and run."""
    lines = [
        BLOCK_START,
        f"Run {meta['started']} ({meta['mode']}, {meta['seconds']:.0f} s), Kafka"
        f" {meta['kafka']}, load average at start {meta['load_average_start']}.",
        "",
        "| scenario | run | events | lost | duplicated effects | duplicate records"
        " (absorbed) | state equal | alerts equal | caught up (s) | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['scenario']} | {row['run']} | – | – | – | – | – | – | – |"
                         f" error: {row['error']} |")  # fmt: skip
            continue
        equal = state_equal(row)
        resent = sum(
            row.get(name, 0)
            for name in (
                "duplicate_feature_records",
                "duplicate_prediction_records",
                "duplicate_labeled_records",
                "webhook_repeats",
            )
        )
        lines.append(
            f"| {row['scenario']} | {row['run']} | {row['events']:,} | {row['lost']} |"
            f" {row['duplicated']} |"
            f" {resent} | {equal} | {alerts_equal(row)} |"
            f" {row['caught_up_s'] if row['caught_up_s'] is not None else 'never'} |"
            f" {'pass' if row['passed'] else 'FAIL'} |"
        )
    lines.append(BLOCK_END)
    return "\n".join(lines)


def main(
    quick: Annotated[bool, typer.Option(help="Only the small set CI runs, once each.")] = False,
    runs: Annotated[
        int | None, typer.Option(help="Runs per scenario (default 3; quick 1).")
    ] = None,
    port: Annotated[int, typer.Option(help="Port of the chaos broker.")] = 39093,
    only: Annotated[
        list[str] | None, typer.Option(help="Only scenarios whose name has this.")
    ] = None,
    timeout_s: Annotated[
        float, typer.Option(help="Catch-up time allowed after the sending.")
    ] = 240.0,
    doc: Annotated[Path | None, typer.Option(help="Markdown page to update.")] = None,
) -> None:
    """Run the fault scenarios, print the table, exit 1 if any run lost or doubled an effect."""
    runs = runs or (1 if quick else 3)
    doc = doc or (None if quick else Path("docs/reliability.md"))
    broker = LocalKafka(port=port, home=default_home())
    started_broker = not broker.is_up(timeout=1.0)
    if started_broker:
        broker.start()
    began = time.monotonic()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    load_start = load_average()
    workdir = (Path(".driftline/chaos") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")).resolve()
    rows: list[dict[str, Any]] = []
    try:
        for scenario in plan(quick):
            if only and not any(o in scenario.name for o in only):
                continue
            for index in range(1, (scenario.runs if not quick and scenario.runs else runs) + 1):
                print(f"[{time.monotonic() - began:6.1f}s] {scenario.name} run {index} ...",
                      file=sys.stderr, flush=True)  # fmt: skip
                row: dict[str, Any] = {"scenario": scenario.name, "run": index}
                try:
                    effects = run_scenario(broker.bootstrap, workdir, scenario, timeout_s)
                    row |= asdict(effects) | {
                        "lost": effects.lost,
                        "duplicated": effects.duplicated,
                        "passed": effects.passed,
                    }
                except Exception as exc:
                    traceback.print_exc()
                    row |= {"error": f"{type(exc).__name__}: {exc}", "passed": False}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        if started_broker:
            broker.stop()
    meta = {
        "started": started,
        "mode": "quick" if quick else "full",
        "seconds": round(time.monotonic() - began, 1),
        "kafka": KAFKA_VERSION,
        "load_average_start": load_start,
    }
    table = render(meta, rows)
    print(table)
    if doc is not None:
        write_block(doc, table, BLOCK_START, BLOCK_END)
        doc.with_suffix(".json").write_text(
            json.dumps({"meta": meta, "runs": rows}, indent=1) + "\n"
        )
    if not all(row["passed"] for row in rows):
        raise typer.Exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    typer.run(main)
