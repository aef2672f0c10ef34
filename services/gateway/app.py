"""The V2 gateway's process: ``driftline gateway``, the Open Inference Protocol over HTTP.

It is no stream agent: it reads the compacted ``deployments``, ``streams`` and
``model-snapshots`` topics from their start with a plain consumer outside any group (ready once
it has read each to the end it had at start, live afterwards, so a new deployment applies
without a restart), asks the models through the router's own `ModelCache` and routing rules,
and writes each answered event to ``features`` (marked answered for its deployment, so routers
do not predict it again, while drift monitors it) and its predictions to ``predictions`` with
an idempotent, acks=all producer. Only once Kafka has stored them is the answer returned: a
request whose records cannot be written is answered 503 and nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.gateway.logic import (
    V2Error,
    answer_of,
    feature_events,
    has_cold_answer,
    model_metadata,
    parse_request,
    plan_request,
    served_predictions,
    unknown_version,
)
from shared import metrics
from shared.admin import caught_up, durable_producer, partition_counts
from shared.backends import ModelBackend, SnapshotStore, model_cache
from shared.errors import DriftlineError, ModelError
from shared.events import Deployment, FeatureEvent, Prediction, StreamSchema, encode
from shared.kafka_clients import consumer
from shared.logging import get_logger
from shared.records import check_declaration, check_deployment
from shared.routing import DeploymentIndex, answer_calls, count_answers
from shared.settings import DriftlineSettings, GatewaySettings
from shared.sidecar import run_until_stopped
from shared.topics import DEPLOYMENTS, FEATURES, MODEL_SNAPSHOTS, PREDICTIONS, STREAMS

SERVICE = "gateway"
log = get_logger(__name__)
JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gateway:
    """The gateway's HTTP endpoint, its view of the topics of record, and its producer."""

    def __init__(self, common: DriftlineSettings, own: GatewaySettings) -> None:
        self.common = common
        self.own = own
        self.index = DeploymentIndex.empty()
        self.streams: dict[str, StreamSchema] = {}
        self.snapshots = SnapshotStore(common.snapshot_keys, own.online_model_cache_size)
        self.models = model_cache(own, common.mlflow_tracking_uri, self.snapshots)
        self.ready = asyncio.Event()
        self.features_topic = FEATURES.full_name(common)
        self.predictions_topic = PREDICTIONS.full_name(common)
        self._producer = durable_producer(common, linger_ms=0)
        self.tasks: list[asyncio.Task[None]] = []
        """Following the topics of record, refreshing models: neither ends unless it fails."""
        self._runner: web.AppRunner | None = None
        metrics.show_build_info(SERVICE)

    def web_app(self) -> web.Application:
        """The V2 REST endpoints, and ``/health``, ``/live`` and ``/metrics`` as every worker."""
        app = web.Application(
            client_max_size=self.own.max_request_bytes, middlewares=[self._no_traceback]
        )
        model = "/v2/models/{model}"
        version = model + "/versions/{version}"
        app.router.add_get("/v2/health/live", self.live)
        app.router.add_get("/v2/health/ready", self.server_ready)
        app.router.add_get("/v2", self.server_metadata)
        for path in (model, version):
            app.router.add_get(path, self.model_metadata)
            app.router.add_get(path + "/ready", self.model_ready)
            app.router.add_post(path + "/infer", self.infer)
        app.router.add_get("/health", self.health)
        app.router.add_get("/live", self.live)
        app.router.add_get("/metrics", self.serve_metrics)
        return app

    async def start(self) -> None:
        """Connect the producer, follow the topics of record and listen on the web port."""
        await self._producer.start()
        self.tasks = [
            asyncio.create_task(self._follow_records()),
            asyncio.create_task(self._refresh_models()),
        ]
        self._runner = web.AppRunner(self.web_app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.common.web_host, self.own.web_port).start()
        log.info("gateway listening", host=self.common.web_host, port=self.own.web_port)

    async def stop(self) -> None:
        """Stop listening, following and producing."""
        if self._runner is not None:
            await self._runner.cleanup()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self._producer.stop()

    @web.middleware
    async def _no_traceback(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A request the gateway refuses gets the protocol's error body; a bug is logged with
        its traceback and answered 500 with the same body, never an HTML page."""
        try:
            return await handler(request)
        except V2Error as exc:
            return web.Response(body=exc.body(), status=exc.status, content_type=JSON)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = V2Error(exc.status, f"{exc.reason}: {request.method} {request.path}")
            return web.Response(body=error.body(), status=exc.status, content_type=JSON)
        except Exception:
            log.exception("request failed", method=request.method, path=request.path)
            error = V2Error(500, f"internal error answering {request.method} {request.path}")
            return web.Response(body=error.body(), status=500, content_type=JSON)

    async def infer(self, request: web.Request) -> web.Response:
        """Answer one V2 inference request, once its event and predictions are stored."""
        started = time.perf_counter()
        name = request.match_info["model"]
        deployment = self.index.by_name.get(name)
        try:
            answer = await self._answer(request, deployment, request.match_info.get("version"))
        except V2Error as exc:
            model = name if deployment is not None else "-"
            metrics.child(metrics.GATEWAY_REQUESTS, model, str(exc.status)).inc()
            raise
        metrics.child(metrics.GATEWAY_REQUESTS, name, "200").inc()
        elapsed = time.perf_counter() - started
        metrics.child(metrics.GATEWAY_REQUEST_SECONDS, name).observe(elapsed)
        return web.Response(body=orjson.dumps(answer), content_type=JSON)

    async def _answer(
        self, request: web.Request, deployment: Deployment | None, version: str | None
    ) -> dict:
        deployment = self._deployment(request.match_info["model"], deployment)
        schema = self.streams.get(deployment.stream)
        if schema is None:
            raise V2Error(
                503, f"stream {deployment.stream!r} of model {deployment.name!r} is not declared"
            )
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise V2Error(
                413, f"the body is larger than {self.own.max_request_bytes} bytes"
            ) from None
        parsed = parse_request(body, self.own.max_rows)
        events = feature_events(parsed, schema, deployment)
        calls = plan_request(events, deployment, version)
        backends = {uri: await self._backend(uri) for uri in {c.variant.model_uri for c in calls}}
        predictions, failures = await answer_calls(calls, backends)
        served = served_predictions(events, predictions, failures)
        count_answers(predictions, failures)
        for position, failed in failures.items():
            log.error(
                "shadow variant failed",
                event_id=events[position].event_id,
                variants=[variant for _, variant, _ in failed],
                reason="; ".join(str(exc) for _, _, exc in failed),
            )
        await self._record(events, predictions)
        cold = has_cold_answer(parsed, served)
        if cold is not None:
            raise cold
        return answer_of(parsed, deployment, served)

    def _deployment(self, name: str, deployment: Deployment | None) -> Deployment:
        if deployment is None:
            known = ", ".join(sorted(self.index.by_name)) or "none"
            raise V2Error(404, f"no model {name!r} (models are deployments; live ones: {known})")
        return deployment

    async def _backend(self, uri: str) -> ModelBackend | ModelError:
        try:
            return await self.models.get(uri)
        except ModelError as exc:
            return exc

    async def _record(self, events: list[FeatureEvent], predictions: list[Prediction]) -> None:
        """Write the events and their predictions and wait until Kafka stored every one; a
        `V2Error` (503) when it does not within `write_timeout_s` (nothing is answered)."""

        async def send_all() -> None:
            deliveries = [
                await self._producer.send(
                    self.features_topic, key=e.entity_id.encode(), value=encode(e)
                )
                for e in events
            ]
            deliveries += [
                await self._producer.send(
                    self.predictions_topic, key=p.event_id.encode(), value=encode(p)
                )
                for p in predictions
            ]
            await asyncio.gather(*deliveries)

        try:
            await asyncio.wait_for(send_all(), self.own.write_timeout_s)
        except (KafkaError, TimeoutError) as exc:
            ids = [e.event_id for e in events]
            log.error("request not recorded; answered 503", event_ids=ids, reason=repr(exc))
            raise V2Error(
                503,
                f"the request's events could not be recorded in Kafka ({type(exc).__name__}); "
                "nothing was answered: retry with the same id",
            ) from None
        metrics.child(metrics.EVENTS_OUT, SERVICE, self.features_topic).inc(len(events))
        metrics.child(metrics.EVENTS_OUT, SERVICE, self.predictions_topic).inc(len(predictions))
        metrics.observe_end_to_end(SERVICE, (e.event_time.timestamp() for e in events))

    async def model_metadata(self, request: web.Request) -> web.Response:
        """The deployment as a V2 model: its variants as versions, its features as inputs."""
        deployment = self._deployment(
            request.match_info["model"], self.index.by_name.get(request.match_info["model"])
        )
        version = request.match_info.get("version")
        if version is not None and version not in {v.name for v in deployment.variants}:
            raise V2Error(404, unknown_version(deployment, version))
        metadata = model_metadata(deployment, self.streams.get(deployment.stream))
        return web.Response(body=orjson.dumps(metadata), content_type=JSON)

    async def model_ready(self, request: web.Request) -> web.Response:
        """200 when the deployment's stream is declared and every model it asks loads (loading
        them now, so the first request does not pay for it), 400 otherwise, as V2 says."""
        deployment = self._deployment(
            request.match_info["model"], self.index.by_name.get(request.match_info["model"])
        )
        version = request.match_info.get("version")
        variants = [v for v in deployment.variants if version in (None, v.name)]
        if not variants:
            raise V2Error(404, unknown_version(deployment, version or ""))
        loaded = [await self._backend(v.model_uri) for v in variants]
        ready = deployment.stream in self.streams and not any(
            isinstance(b, ModelError) for b in loaded
        )
        body = {"name": deployment.name, "ready": ready}
        return web.Response(
            body=orjson.dumps(body), status=200 if ready else 400, content_type=JSON
        )

    async def server_ready(self, _: web.Request) -> web.Response:
        """200 once the topics of record were read to their end, 400 before (as V2 says)."""
        ready = self.ready.is_set()
        body = orjson.dumps({"ready": ready})
        return web.Response(body=body, status=200 if ready else 400, content_type=JSON)

    async def server_metadata(self, _: web.Request) -> web.Response:
        """The V2 server metadata."""
        from importlib.metadata import version

        body = {"name": "driftline-gateway", "version": version("driftline"), "extensions": []}
        return web.Response(body=orjson.dumps(body), content_type=JSON)

    async def health(self, _: web.Request) -> web.Response:
        """As the workers' ``/health``: 200 once ready (topics of record read), 503 before."""
        if not self.ready.is_set():
            return web.json_response({"status": "recovering"}, status=503)
        return web.json_response({"status": "ok", "deployments": len(self.index)})

    async def live(self, _: web.Request) -> web.Response:
        """Liveness: 200 whenever the event loop answers."""
        return web.json_response({"live": True})

    async def serve_metrics(self, _: web.Request) -> web.Response:
        """The process's Prometheus metrics."""
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _follow_records(self) -> None:
        """Read the topics of record from their start, then follow them; set `ready` once each
        partition was read to the end it had when reading began."""
        topics = {
            DEPLOYMENTS.full_name(self.common): self._apply_deployment,
            STREAMS.full_name(self.common): self._apply_declaration,
            MODEL_SNAPSHOTS.full_name(self.common): self.snapshots.apply,
        }
        counts = await partition_counts(self.common, DEPLOYMENTS, STREAMS, MODEL_SNAPSHOTS)
        missing = [name for name, n in counts.items() if n == 0]
        if missing:
            log.error("topics missing: run `driftline topics create`", topics=missing)
        partitions = [TopicPartition(name, p) for name, n in counts.items() for p in range(n)]
        reader = consumer(self.common, enable_auto_commit=False, group_id=None)
        await reader.start()
        try:
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            ends = await reader.end_offsets(partitions)
            while True:
                if not self.ready.is_set() and await caught_up(reader, ends):
                    self.ready.set()
                    log.info(
                        "gateway ready", deployments=len(self.index), streams=len(self.streams)
                    )
                for messages in (await reader.getmany(timeout_ms=500)).values():
                    for message in messages:
                        if message.key is None:  # every record of these topics is keyed
                            log.warning(
                                "record without a key skipped",
                                topic=message.topic,
                                partition=message.partition,
                                offset=message.offset,
                            )
                            continue
                        topics[message.topic](message.key, message.value)
        finally:
            await reader.stop()

    def _apply_deployment(self, key: bytes, value: bytes | None) -> None:
        try:
            deployment = check_deployment(key, value, DEPLOYMENTS.full_name(self.common))
        except DriftlineError as exc:
            log.warning("deployment record skipped", key=key, reason=str(exc))
            return
        self.index.apply(key.decode(), deployment)

    def _apply_declaration(self, key: bytes, value: bytes | None) -> None:
        try:
            schema = check_declaration(key, value, STREAMS.full_name(self.common))
        except DriftlineError as exc:
            log.warning("stream declaration skipped", key=key, reason=str(exc))
            return
        if schema is None:
            self.streams.pop(key.decode(), None)
        else:
            self.streams[schema.name] = schema

    async def _refresh_models(self) -> None:
        """Unload models no deployment uses; reload those whose MLflow alias moved."""
        while True:
            await asyncio.sleep(self.own.model_refresh_seconds)
            await self.models.refresh(self.index.model_uris())


async def serve(common: DriftlineSettings, own: GatewaySettings) -> None:
    """Run the gateway until SIGTERM (as a container is stopped) or Ctrl-C, then stop it."""
    gateway = Gateway(common, own)
    await gateway.start()
    try:
        # a task that ends (following the topics, say) has failed: the process must not serve
        # stale deployments, so it stops with that task's error
        await run_until_stopped(gateway.stop, gateway.tasks)
    finally:
        log.info("gateway stopped")
