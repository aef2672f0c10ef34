"""Runs the demo: brings up Kafka, MLflow and the five services as processes, replays the
scenario like an outside producer would, watches the topics, retrains on drift, then cleans up.

The retraining is the platform's own: the drift alert's webhook reaches a local receiver that
stands in for CI, which retrains on the alert's fresh-data window (`shared.retraining.retrain`)
and deploys the new version as a shadow challenger; the drift service's promotion policy then
weighs it against the champion on live labels and moves the champion alias when the evidence
is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import shlex
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pandas as pd
from aiohttp import web
from aiokafka import AIOKafkaProducer

from services.demo.observer import DemoObserver
from services.demo.scenario import (
    FEATURES,
    STREAM,
    Labeled,
    Scenario,
    malformed_record,
    replay,
    training_rows,
)
from services.processes import ServiceProcess, free_port, stop_all
from shared import kafka_clients
from shared.admin import create_topics, durable_producer, publish
from shared.errors import WebhookRefusedError
from shared.events import (
    Deployment,
    DriftAlert,
    FeatureSpec,
    LabeledPrediction,
    OnlineModelSpec,
    Prediction,
    PromotionDecision,
    PromotionPolicy,
    RetrainSpec,
    StreamSchema,
    Variant,
    decode,
    encode,
)
from shared.localkafka import LocalKafka
from shared.localmlflow import LocalMlflow
from shared.registry import register_sklearn_model, set_alias
from shared.retraining import RetrainResult
from shared.settings import DriftlineSettings
from shared.topics import (
    ALERTS,
    DEADLETTER,
    DECISIONS,
    DEPLOYMENTS,
    EVENTS_RAW,
    FEEDBACK,
    PREDICTIONS,
    PREDICTIONS_LABELED,
    STREAMS,
    Topic,
)
from shared.trainers import gradient_boosting
from shared.webhooks import verify_request

SERVICES = ("ingestion", "router", "feedback", "learner", "drift")
MODEL_NAME = "driftline-demo-loans"
CHAMPION = "champion"
DEPLOYMENT = "loans"


@dataclass
class DemoConfig:
    """Where the demo runs and how much it replays."""

    scenario: Scenario = field(default_factory=Scenario)
    results_dir: Path = Path("results")
    kafka_port: int = 9092
    mlflow_port: int = 5000
    retrain_min_rows: int = 500
    """Labeled events the alert's window must hold before the retrain runs."""
    promotion_min_samples: int = 300
    """Labeled outcomes champion and challenger each need before the policy decides."""
    drain_timeout: float = 60.0
    """How long to wait for the last labels to be joined after the replay ends."""
    console_port: int = field(default_factory=free_port)
    """Where the run's operator console listens (`driftline demo` asks for 6068)."""
    console_token: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    """The console's editor token for this run: the password of any user name."""
    max_backlog: int = 900
    """Events sent but not yet answered by the champion beyond which the replay waits for the
    pipeline: a machine too busy for the rate closes the loop later, instead of under a
    backlog that outlives the replay (its events keep their times: the scenario's clock)."""
    switch_timeout: float = 900.0
    """How long the replay goes on after `n_events` while the loop (alert, retrain, promotion,
    the new champion's tail) has not closed: a busy machine closes it later, not never."""

    @property
    def longest_replay_s(self) -> float:
        """The time `n_events` take at the scenario's rate, plus `switch_timeout`: after it the
        replay neither goes on past `n_events` nor waits for the pipeline."""
        return self.scenario.n_events / self.scenario.rate + self.switch_timeout


@dataclass
class DemoRun:
    """One run's identity and files."""

    config: DemoConfig
    stamp: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))

    @property
    def directory(self) -> Path:
        """Results of this run: report, PNG, service logs."""
        return self.config.results_dir / f"demo-{self.stamp}"

    @property
    def prefix(self) -> str:
        """Topic prefix: every run has its own topics and consumer groups, so reruns start clean."""
        return f"demo{self.stamp.replace('-', '')}."


class Demo:
    """The demo's moving parts; `run()` returns the observer with everything it saw."""

    def __init__(self, config: DemoConfig, on_tick: Callable[[DemoObserver], None]) -> None:
        self.config = config
        self.run_info = DemoRun(config)
        self.observer = DemoObserver()
        self.on_tick = on_tick
        self.kafka = LocalKafka(port=config.kafka_port)
        self.mlflow = LocalMlflow(port=config.mlflow_port)
        self.settings = DriftlineSettings(
            kafka_broker=self.kafka.bootstrap,
            topic_prefix=self.run_info.prefix,
            topic_partitions=2,
            mlflow_tracking_uri=self.mlflow.uri,
        )
        self.processes: list[ServiceProcess] = []
        self.drift_alerts: asyncio.Queue[DriftAlert] = asyncio.Queue()
        self.replay_start = datetime.now(UTC)
        """Event time of the first event; reset when the replay begins."""

    def topic(self, topic: Topic) -> str:
        """Full topic name for this run."""
        return topic.full_name(self.settings)

    async def run(self) -> DemoObserver:
        """Everything, in order; whatever was started is stopped, also on Ctrl-C."""
        self.run_info.directory.mkdir(parents=True, exist_ok=True)
        async with self._infrastructure(), self._webhook_receiver() as webhook_url:
            await create_topics(self.settings)
            version = await asyncio.to_thread(self._train_first_champion)
            self.observer.retrain_status = f"champion v{version} serving; waiting for drift"
            await self._deploy()
            await asyncio.to_thread(self._start_services, webhook_url)
            watchers = [
                asyncio.create_task(self._watch()),
                asyncio.create_task(self._retrain_on_drift()),
                asyncio.create_task(self._tick()),
            ]
            try:
                await self._replay()
                await self._drain()
            finally:
                for task in watchers:
                    task.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
        return self.observer

    @contextlib.asynccontextmanager
    async def _infrastructure(self) -> AsyncIterator[None]:
        started_kafka = not await asyncio.to_thread(self.kafka.is_up, 1.0)
        started_mlflow = False
        try:
            if started_kafka:
                await asyncio.to_thread(self.kafka.start)
            started_mlflow = not await asyncio.to_thread(self.mlflow.is_up, 1.0)
            await asyncio.to_thread(self.mlflow.start)
            # MLflow clients take credentials from the environment only: this process's (the
            # first champion) and the services' and retrain commands', which inherit it.
            os.environ.update(self.mlflow.client_env())
            yield
        finally:
            await asyncio.to_thread(stop_all, self.processes)
            if started_mlflow:
                await asyncio.to_thread(self.mlflow.stop)
            if started_kafka:
                await asyncio.to_thread(self.kafka.stop)

    def _train_first_champion(self) -> str:
        rows, labels = training_rows(self.config.scenario)
        features = pd.DataFrame(rows)
        model = gradient_boosting(features, pd.Series(labels))
        version = register_sklearn_model(
            self.mlflow.uri, MODEL_NAME, model, features,
            params={"trainer": "gradient_boosting", "rows": len(rows)},
            tags={"driftline.reason": "initial champion"},
        )  # fmt: skip
        set_alias(self.mlflow.uri, MODEL_NAME, "champion", version)
        return version

    async def _deploy(self) -> None:
        deployment = Deployment(
            name=DEPLOYMENT,
            stream=STREAM,
            variants=[
                Variant(
                    name=CHAMPION, role="champion", model_uri=f"models:/{MODEL_NAME}@champion"
                ),
                Variant(name="river-hat", role="shadow", model_uri="online:loans-hat"),
                Variant(name="hbp", role="shadow", model_uri="online:loans-hbp"),
            ],
            online_models=[
                OnlineModelSpec(model_id="loans-hat", model_type="hoeffding_adaptive_tree"),
                OnlineModelSpec(
                    model_id="loans-hbp", model_type="hedge_backprop",
                    params={"n_layers": 4, "hidden_units": 32, "seed": 1},
                ),
            ],
            retrain=RetrainSpec(min_samples=self.config.retrain_min_rows, deploy_as="shadow"),
            promotion=PromotionPolicy(min_samples=self.config.promotion_min_samples),
        )  # fmt: skip
        stream = StreamSchema(
            name=STREAM, features=[FeatureSpec(name=name, min=0) for name in FEATURES]
        )
        await publish(self.settings, STREAMS, STREAM, encode(stream))
        await publish(self.settings, DEPLOYMENTS, DEPLOYMENT, encode(deployment))

    def _service_env(self) -> dict[str, str]:
        """Settings of this run for the processes it starts (services and retrain job)."""
        return {
            "DRIFTLINE_KAFKA_BROKER": self.settings.bootstrap_servers,
            "DRIFTLINE_TOPIC_PREFIX": self.settings.topic_prefix,
            "DRIFTLINE_TOPIC_PARTITIONS": str(self.settings.topic_partitions),
            "DRIFTLINE_MLFLOW_TRACKING_URI": self.mlflow.uri,
            "DRIFTLINE_DATA_DIR": str(self.run_info.directory / "data"),
            "DRIFTLINE_ALLOW_DEFAULT_KEYS": "true",  # a local demo; real keys set are used
            "DRIFTLINE_LEARNER_SNAPSHOT_EVERY": "100",
            "DRIFTLINE_ROUTER_MODEL_REFRESH_SECONDS": "2",
            "DRIFTLINE_DRIFT_PROMOTION_EVERY": "50",
        }

    def _start_services(self, webhook_url: str) -> None:
        logs = self.run_info.directory / "logs"
        logs.mkdir(exist_ok=True)
        env = {
            **self._service_env(),
            "DRIFTLINE_DRIFT_WEBHOOK_URLS": orjson.dumps([webhook_url]).decode(),
        }
        self.processes = [ServiceProcess(s, env, logs / f"{s}.log") for s in SERVICES]
        health = {p.service: f"http://127.0.0.1:{p.port}/health" for p in self.processes}
        console_env = {
            **self._service_env(),
            "DRIFTLINE_CONSOLE_EDITOR_TOKEN": self.config.console_token,
            "DRIFTLINE_HEALTH_URLS": orjson.dumps(health).decode(),
        }
        self.processes.append(
            ServiceProcess(
                "console",
                console_env,
                logs / "console.log",
                port=self.config.console_port,
                argv=["-m", "services.cli", "console"],
            )
        )
        for process in self.processes:
            process.spawn()
        for process in self.processes:
            process.wait_ready(timeout=180)

    async def _replay(self) -> None:
        """Send events at the scenario's rate and each label `label_delay` seconds later;
        wait while more than `max_backlog` events have no champion answer yet."""
        scenario = self.config.scenario
        producer = durable_producer(self.settings, linger_ms=5)
        await producer.start()
        raw_topic, feedback_topic = self.topic(EVENTS_RAW), self.topic(FEEDBACK)
        waiting: deque[tuple[float, Labeled]] = deque()
        loop = asyncio.get_running_loop()
        began = loop.time()
        # Seconds the replay waited for the pipeline: the schedule moves back by as much, so it
        # resumes at the rate instead of in a burst.
        held = 0.0
        self.replay_start = datetime.now(UTC)

        async def send_due_labels() -> None:
            while waiting and waiting[0][0] <= loop.time():
                _, labeled = waiting.popleft()
                await self._send_feedback(producer, feedback_topic, labeled)

        try:
            for item in replay(scenario, self.replay_start):
                if not self._keep_replaying(item.index, loop.time() - began):
                    break
                holding_from = loop.time()
                while (
                    self.observer.backlog > self.config.max_backlog
                    and loop.time() - began < self.config.longest_replay_s
                ):
                    await send_due_labels()
                    await asyncio.sleep(0.1)
                held += loop.time() - holding_from
                due = began + held + item.index / scenario.rate
                await asyncio.sleep(max(0.0, due - loop.time()))
                await producer.send(
                    raw_topic, key=item.event.entity_id.encode(), value=encode(item.event)
                )
                self.observer.sent += 1
                if self.observer.sent % scenario.malformed_every == 0:
                    bad = malformed_record(self.observer.malformed)
                    await producer.send(raw_topic, key=b"applicant-malformed", value=bad)
                    self.observer.malformed += 1
                waiting.append((loop.time() + scenario.label_delay, item))
                await send_due_labels()
            for due, labeled in waiting:
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._send_feedback(producer, feedback_topic, labeled)
        finally:
            await producer.stop()

    def _keep_replaying(self, index: int, seconds: float) -> bool:
        """Until `n_events`; then on until the retrained champion has served its tail (the
        drift service may still be catching up on the labels, a retrain may still run), for at
        most `switch_timeout` seconds beyond the time `n_events` take at the scenario's rate."""
        scenario = self.config.scenario
        if index < scenario.n_events:
            return True
        if seconds > self.config.longest_replay_s:
            return False
        served_from = self.observer.switches[-1].served_from if self.observer.switches else None
        return served_from is None or index - served_from < scenario.tail_after_switch

    @staticmethod
    async def _send_feedback(producer: AIOKafkaProducer, topic: str, item: Labeled) -> None:
        await producer.send(topic, key=item.event.event_id.encode(), value=encode(item.feedback()))

    async def _drain(self) -> None:
        """Wait until the champion's answer to every event has been labeled (or time runs out)."""
        deadline = asyncio.get_running_loop().time() + self.config.drain_timeout
        while self.observer.labeled_outcomes(CHAMPION) < self.observer.sent:
            if asyncio.get_running_loop().time() > deadline:
                return
            await asyncio.sleep(0.5)

    async def _watch(self) -> None:
        names = {
            self.topic(PREDICTIONS): "predictions",
            self.topic(PREDICTIONS_LABELED): "labeled",
            self.topic(ALERTS): "alerts",
            self.topic(DECISIONS): "decisions",
            self.topic(DEADLETTER): "deadletter",
        }
        consumer = kafka_clients.consumer(
            self.settings, *names, auto_offset_reset="earliest", group_id=None
        )
        await consumer.start()
        try:
            async for message in consumer:
                kind = names[message.topic]
                if kind == "predictions":
                    self.observer.on_prediction(decode(Prediction, message.value, message.topic))
                elif kind == "deadletter":
                    self.observer.dead_letters += 1
                elif kind == "labeled":
                    self.observer.on_labeled(
                        decode(LabeledPrediction, message.value, message.topic)
                    )
                elif kind == "decisions":
                    self.observer.on_decision(
                        decode(PromotionDecision, message.value, message.topic)
                    )
                else:
                    alert = decode(DriftAlert, message.value, message.topic)
                    index = self.config.scenario.index_at(self.replay_start, alert.event_time)
                    self.observer.on_alert(alert, index)
        finally:
            await consumer.stop()

    @contextlib.asynccontextmanager
    async def _webhook_receiver(self) -> AsyncIterator[str]:
        """A local HTTP endpoint standing in for CI: verifies the signature, queues drift alerts."""

        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            settings = self.settings
            try:
                verify_request(
                    request.headers, body, settings.webhook_keys, settings.webhook_tolerance_s,
                    time.time(),
                )  # fmt: skip
            except WebhookRefusedError as exc:
                return web.Response(status=401, text=str(exc))
            self.observer.webhook_calls += 1
            alert = DriftAlert.model_validate(orjson.loads(body))
            if (alert.kind, alert.level, alert.model_name) == ("concept", "drift", MODEL_NAME):
                await self.drift_alerts.put(alert)
            return web.Response(status=202, text="queued")

        app = web.Application()
        app.router.add_post("/retrain", receive)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield f"http://127.0.0.1:{port}/retrain"
        finally:
            await runner.cleanup()

    async def _retrain_on_drift(self) -> None:
        """On the first concept-drift alert, do what a CI job would: run `driftline retrain
        --alert ID` (in its own process) until the alert's window holds enough labels (exit 3
        means "try again later"); the new version joins as a shadow challenger for the promotion
        policy to weigh."""
        alert = await self.drift_alerts.get()
        self.observer.retrain_status = (
            f"drift alert received; driftline retrain --alert {alert.alert_id}"
        )
        command = [
            sys.executable,
            "-m",
            "services.cli",
            "retrain",
            "--alert",
            alert.alert_id,
            "--json",
        ]
        log_path = self.run_info.directory / "logs" / "retrain.log"
        for attempt in itertools.count(1):
            # One OpenMP thread: on a machine busy with five workers, a broker and MLflow, the
            # trainer's spinning thread pool made a fit of a few hundred rows take half a minute.
            with log_path.open("ab") as log:  # beside the services' logs, as it runs
                started = datetime.now(UTC).isoformat(timespec="seconds")
                log.write(f"{started} attempt {attempt}: {shlex.join(command[1:])}\n".encode())
                log.flush()
                process = await asyncio.create_subprocess_exec(
                    *command, env={**os.environ, **self._service_env(), "OMP_NUM_THREADS": "1"},
                    stdout=asyncio.subprocess.PIPE, stderr=log,
                )  # fmt: skip
                try:
                    out, _ = await process.communicate()
                except asyncio.CancelledError:
                    process.kill()
                    await process.wait()
                    raise
            lines = log_path.read_text(errors="replace").strip().splitlines()
            problem = lines[-1:] or ["no output"]
            if process.returncode == 0:
                break
            if process.returncode != 3:
                self.observer.retrain_status = f"retrain failed: {problem[0]}"
                return
            self.observer.retrain_status = f"waiting for labels: {problem[0]}"
            await asyncio.sleep(1.0)
        result = RetrainResult.from_json(out)
        self.observer.challenger = result
        self.observer.retrain_status = (
            f"challenger v{result.version} trained on {result.rows} labeled events from the "
            f"window ({result.window.estimated_by}), deployed in shadow; the policy weighs it"
        )

    async def _tick(self) -> None:
        while True:
            self.on_tick(self.observer)
            await asyncio.sleep(0.25)
