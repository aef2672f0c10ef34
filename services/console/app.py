"""The console's wiring: an aiohttp web app over a live view of the topics (`logic.LiveView`),
fed by one reader outside any consumer group, and a board of the services' health, throughput
and lag asked every `ConsoleSettings.refresh_s`. Pages are rendered on the server (jinja2);
alerts reach open pages as server-sent events. Every change goes through the CLI's own code
(`shared.deploying`, `shared.overrides`) and names the signed-in user as its author.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlparse

import jinja2
from aiohttp import web
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from markupsafe import Markup
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.console.distributions import Distributions, distribution_chart
from services.console.logic import (
    ErrorSeries,
    LiveView,
    ServiceRow,
    User,
    authenticate,
    csrf_ok,
    csrf_token,
    deployment_from_form,
    error_chart,
    first_event,
    form_values,
    lag_of,
    per_second,
    policy_fields,
)
from shared import metrics
from shared.admin import caught_up, offsets_at_time, partition_counts, publish
from shared.deploying import check_deployable, describe_change, stream_from_text
from shared.errors import DriftlineError
from shared.events import DriftAlert, PromotionAction, encode
from shared.health import (
    Counts,
    consumer_lag,
    health_urls,
    metrics_url,
    scrape_counts,
    service_health,
)
from shared.kafka_clients import consumer
from shared.logging import get_logger
from shared.overrides import carry_out, describe, plan, retrain_as
from shared.registry import MlflowRegistry
from shared.settings import ConsoleSettings, DriftlineSettings
from shared.sidecar import run_until_stopped
from shared.topics import (
    ALERTS,
    DEADLETTER,
    DECISIONS,
    DEPLOYMENTS,
    FEATURES,
    PREDICTIONS_LABELED,
    STREAMS,
)
from shared.tracing import trace, what

log = get_logger(__name__)

OPEN_PATHS = frozenset({"/health", "/live", "/metrics"})
"""Probes and Prometheus reach these without signing in; they show no record."""
READ_FROM_START = (DEPLOYMENTS, STREAMS, ALERTS, DECISIONS, DEADLETTER)
STREAM_EXAMPLE = """{
  "name": "payments",
  "features": [
    {"name": "amount", "type": "numeric", "min": 0},
    {"name": "country", "type": "categorical", "categories": ["DE", "FR"]}
  ],
  "aggregates": [{"field": "amount", "minutes": 60}]
}"""
"""What a new declaration's form starts from."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Console:
    """The console's pages, its reader of the topics and its board of the services."""

    def __init__(self, common: DriftlineSettings, own: ConsoleSettings) -> None:
        self.common = common
        self.own = own
        self.view = LiveView(
            common.topic_prefix,
            own.history,
            ErrorSeries(own.error_bucket_s, own.error_horizon_s),
            Distributions(own.distribution_sample, own.distribution_bins),
        )
        self.board: list[ServiceRow] = []
        self.registry = MlflowRegistry(common.mlflow_tracking_uri)
        self.health_urls = health_urls("127.0.0.1", common.health_urls)
        self.ready = asyncio.Event()
        self.failed = False
        """Whether a background task died: the console then answers /health with 503."""
        self._csrf_key = secrets.token_bytes(32)
        self._subscribers: set[asyncio.Queue[DriftAlert | None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("services.console"), autoescape=True
        )
        self.templates.filters["q"] = quote
        metrics.show_build_info("console")

    def web_app(self) -> web.Application:
        """Every page, the alerts' event stream, and the open probes."""
        app = web.Application(middlewares=[self._authenticated])
        app.on_shutdown.append(self._close_streams)
        get, post = app.router.add_get, app.router.add_post
        get("/", self.launchpad)
        get("/alerts", self.alerts)
        get("/alerts/events", self.alert_events)
        get("/alerts/{alert_id}", self.alert_page)
        get("/alerts/{alert_id}/trace", self.alert_trace)
        post("/alerts/{alert_id}/retrain", self.retrain)
        get("/deploy", self.deploy_form)
        post("/deploy/preview", self.deploy_preview)
        post("/deploy/publish", self.deploy_publish)
        get("/deployments/{name}", self.deployment_page)
        get("/deployments/{name}/edit", self.deploy_form)
        post("/deployments/{name}/{action:promote|rollback}", self.override)
        get("/streams/new", self.stream_form)
        post("/streams/preview", self.stream_preview)
        post("/streams/publish", self.stream_publish)
        get("/streams/{name}", self.stream_page)
        get("/streams/{name}/edit", self.stream_form)
        post("/streams/{name}/reset-reference", self.reset_reference)
        get("/trace", self.trace_page)
        get("/health", self.health)
        get("/live", self.live)
        get("/metrics", self.serve_metrics)
        return app

    async def start(self) -> None:
        """Listen on ``web_host:web_port``, start reading the topics and asking the services."""
        self._spawn(self._read_topics())
        self._spawn(self._watch_services())
        self._runner = web.AppRunner(self.web_app(), shutdown_timeout=5)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.common.web_host, self.own.web_port).start()
        log.info("console listening", host=self.common.web_host, port=self.own.web_port)

    async def stop(self) -> None:
        """Stop listening (ending every event stream) and the background tasks."""
        if self._runner is not None:
            await self._runner.cleanup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- plumbing: access, rendering, background tasks ---

    @web.middleware
    async def _authenticated(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every page needs a user; every POST an editor, the same origin and the form's token."""
        if request.path in OPEN_PATHS:
            return await handler(request)
        user = authenticate(request.headers, self.own)
        if user is None:
            return web.Response(
                status=401,
                text="sign in: a console token (basic auth or bearer) or the proxy's header",
                headers={"WWW-Authenticate": 'Basic realm="Driftline console"'},
            )
        request["user"] = user
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and urlparse(origin).netloc != request.host:
                return self._problem(request, 403, f"a form from {origin} is refused here")
            form = await request.post()
            if not csrf_ok(self._csrf_key, user, str(form.get("csrf", ""))):
                return self._problem(request, 403, "the form's token is missing or stale")
            if not user.can_edit:
                return self._problem(request, 403, f"{user.name} may view, not change")
        return await handler(request)

    def render(
        self, request: web.Request, page: str, status: int = 200, **context: Any
    ) -> web.Response:
        """A page of `templates/` with the user, their form token and the live view."""
        user: User = request["user"]
        html = self.templates.get_template(page).render(
            user=user,
            csrf=csrf_token(self._csrf_key, user),
            view=self.view,
            prefix=self.common.topic_prefix,
            **context,
        )
        return web.Response(text=html, status=status, content_type="text/html")

    def _problem(self, request: web.Request, status: int, message: str) -> web.Response:
        return self.render(request, "problem.html", status=status, message=message)

    def _failure(self, request: web.Request, exc: DriftlineError) -> web.Response:
        """A refused change is the user's to fix (400), an outage theirs to retry (503)."""
        return self._problem(request, 503 if exc.exit_code == 3 else 400, str(exc))

    async def _read_topics(self) -> None:
        """Keep the live view up to date: the topics of record, alerts, decisions and dead
        letters from their start, labeled predictions from `error_horizon_s` ago, features from
        now on (the distributions' reference is what comes after the start). The console is
        ready once it has read up to where the topics ended when it started."""
        common = self.common
        names = [topic.full_name(common) for topic in READ_FROM_START]
        labeled = PREDICTIONS_LABELED.full_name(common)
        features = FEATURES.full_name(common)
        counts = await partition_counts(common, *READ_FROM_START, PREDICTIONS_LABELED, FEATURES)
        partitions = [TopicPartition(n, p) for n, count in counts.items() for p in range(count)]
        since = time.time() - self.own.error_horizon_s
        starts = await offsets_at_time(
            common, datetime.fromtimestamp(since, UTC), PREDICTIONS_LABELED
        )
        reader = consumer(common, enable_auto_commit=False, group_id=None)
        await reader.start()
        try:
            reader.assign(partitions)
            for partition in partitions:
                if partition.topic in names:
                    reader.seek(partition, 0)
                elif partition.topic == features:
                    await reader.seek_to_end(partition)
                else:
                    reader.seek(partition, starts[labeled][partition.partition])
            ends = await reader.end_offsets(partitions)
            while True:
                for batch in (await reader.getmany(timeout_ms=500)).values():
                    for record in batch:
                        self._take(record.topic, record.partition, record.offset, record)
                if not self.ready.is_set() and await caught_up(reader, ends):
                    self.ready.set()
                    log.info("console caught up", alerts=len(self.view.alerts))
        finally:
            await reader.stop()

    def _take(self, topic: str, partition: int, offset: int, record: Any) -> None:
        try:
            alert = self.view.apply(topic, record.key, record.value)
        except DriftlineError as exc:
            log.warning(
                "record skipped", topic=topic, partition=partition, offset=offset, reason=str(exc)
            )
            return
        if alert is not None:
            for subscriber in self._subscribers:
                subscriber.put_nowait(alert)

    async def _watch_services(self) -> None:
        """Ask every service's health and metrics, and the cluster for lag, again and again."""
        before: dict[str, tuple[float, Counts | None]] = {}
        while True:
            health = await asyncio.to_thread(service_health, self.health_urls)
            try:
                lag: dict[tuple[str, str], int] | None = await consumer_lag(self.common)
            except (KafkaError, DriftlineError) as exc:
                log.warning("consumer lag unknown", reason=str(exc))
                lag = None
            rows = []
            for service, url in self.health_urls.items():
                counts = await asyncio.to_thread(scrape_counts, metrics_url(url))
                now = time.monotonic()
                then, earlier = before.get(service, (now, None))
                before[service] = (now, counts)
                rows.append(
                    ServiceRow(
                        service,
                        health[service],
                        per_second(earlier, counts, now - then),
                        None if lag is None else lag_of(service, self.common.topic_prefix, lag),
                    )
                )
            self.board = rows
            await asyncio.sleep(self.own.refresh_s)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A background task only ends when stopped; one that failed is logged and leaves the
        console unhealthy (503), so its orchestrator restarts it."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("console task failed", exc_info=task.exception())
            self.ready.clear()
            self.failed = True

    async def _close_streams(self, _: web.Application) -> None:
        for subscriber in self._subscribers:
            subscriber.put_nowait(None)

    # --- pages ---

    async def launchpad(self, request: web.Request) -> web.Response:
        """Services, dead letters, open alerts, deployments with their current errors."""
        deployments = sorted(self.view.deployments.values(), key=lambda d: d.name)
        errors = {d.name: self.view.errors.recent(d.name) for d in deployments}
        letters = sorted(self.view.dead_letters.items(), key=lambda item: -item[1])
        return self.render(
            request,
            "launchpad.html",
            board=self.board,
            deployments=deployments,
            errors=errors,
            letters=letters,
            open_alerts=self.view.open_alerts()[:20],
        )

    async def alerts(self, request: web.Request) -> web.Response:
        """Every kept alert, newest first, filtered by kind, level and text; new ones arrive."""
        kind = request.query.get("kind", "")
        level = request.query.get("level", "")
        text = request.query.get("q", "")
        shown = [
            a
            for a in reversed(self.view.alerts)
            if (not kind or a.kind == kind)
            and (not level or a.level == level)
            and (not text or text in a.key)
        ]
        return self.render(request, "alerts.html", alerts=shown, kind=kind, level=level, q=text)

    async def alert_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: each new alert as JSON with its row, rendered as the page's."""
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[DriftAlert | None] = asyncio.Queue()
        self._subscribers.add(queue)
        row = self.templates.get_template("alert_row.html")
        try:
            while True:
                try:
                    alert = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    await response.write(b": still here\n\n")
                    continue
                if alert is None:
                    break
                data = {
                    "kind": alert.kind,
                    "level": alert.level,
                    "key": alert.key,
                    "html": row.render(alert=alert),
                }
                await response.write(f"data: {json.dumps(data)}\n\n".encode())
        except ConnectionResetError:
            log.info("alert stream closed by the browser", remote=request.remote)
        finally:
            self._subscribers.discard(queue)
        return response

    async def alert_page(self, request: web.Request) -> web.Response:
        """One alert: what fired, its statistics and its fresh-data window."""
        alert = self.view.alert(request.match_info["alert_id"])
        if alert is None:
            return self._problem(request, 404, "no such alert among the kept ones")
        return self.render(request, "alert.html", alert=alert)

    async def alert_trace(self, request: web.Request) -> web.StreamResponse:
        """Redirect to the trace of the first event in the alert's window."""
        alert = self.view.alert(request.match_info["alert_id"])
        if alert is None or alert.window is None:
            return self._problem(request, 404, "this alert has no window to trace")
        topic = (FEATURES if alert.kind == "data" else PREDICTIONS_LABELED).full_name(self.common)
        offsets = alert.window.offsets.get(topic) or next(iter(alert.window.offsets.values()), {})
        try:
            event_id = await self._first_event(topic, offsets)
        except KafkaError as exc:
            return self._problem(request, 503, f"cannot read {topic}: {exc}")
        if event_id is None:
            return self._problem(request, 404, f"no record of {topic} at the window's start")
        raise web.HTTPFound("/trace?" + urlencode({"event_id": event_id}))

    async def _first_event(self, topic: str, offsets: dict[int, int]) -> str | None:
        """The event id of the earliest record at `offsets` (partition: first offset)."""
        reader = consumer(self.common, enable_auto_commit=False, group_id=None)
        await reader.start()
        starts: list[tuple[int, str | None]] = []
        try:
            for partition, offset in offsets.items():
                where = TopicPartition(topic, partition)
                reader.assign([where])
                reader.seek(where, offset)
                found = await reader.getmany(where, timeout_ms=2000, max_records=1)
                for record in found.get(where, []):
                    value = json.loads(record.value or b"null")
                    event_id = value.get("event_id") if isinstance(value, dict) else None
                    starts.append((record.timestamp, event_id))
        finally:
            await reader.stop()
        return first_event(starts)

    async def retrain(self, request: web.Request) -> web.Response:
        """Retrain on an alert's window as the signed-in editor."""
        user: User = request["user"]
        alert_id = request.match_info["alert_id"]
        try:
            result = await retrain_as(self.common, alert_id, user.name)
        except DriftlineError as exc:
            return self._failure(request, exc)
        message = (
            f"retrained {result.model_name} on {result.rows} rows of alert {alert_id}'s window: "
            f"version {result.version} deployed as the challenger of {result.deployment}"
        )
        return self.render(request, "done.html", message=message, deployment=result.deployment)

    async def deployment_page(self, request: web.Request) -> web.Response:
        """Variants, the challenger's trial, errors over time and the deployment's alerts."""
        name = request.match_info["name"]
        deployment = self.view.deployments.get(name)
        if deployment is None:
            return self._problem(request, 404, f"no deployment {name!r}")
        alerts = self.view.alerts_of(deployment)[:50]
        chart = error_chart(self.view.errors.series(name), alerts)
        return self.render(
            request,
            "deployment.html",
            deployment=deployment,
            trial=self.view.trial(name),
            chart=Markup(chart),
            errors=self.view.errors.recent(name),
            alerts=alerts,
            notice=request.query.get("notice", ""),
        )

    async def override(self, request: web.Request) -> web.StreamResponse:
        """Promote or roll back the deployment's challenger as the signed-in editor."""
        user: User = request["user"]
        name = request.match_info["name"]
        action: PromotionAction = (
            "promote" if request.match_info["action"] == "promote" else "rollback"
        )
        try:
            decided = await plan(self.common, self.registry, name, action, None, user.name)
            await carry_out(self.common, self.registry, decided)
        except DriftlineError as exc:
            return self._failure(request, exc)
        notice = describe(decided.decision, done=True)
        raise web.HTTPSeeOther(f"/deployments/{quote(name)}?" + urlencode({"notice": notice}))

    async def deploy_form(self, request: web.Request) -> web.Response:
        """The form that creates a deployment, or changes the one named in the path."""
        name = request.match_info.get("name")
        live = self.view.deployments.get(name) if name else None
        if name and live is None:
            return self._problem(request, 404, f"no deployment {name!r}")
        return await self._form(request, form_values(live), editing=live is not None)

    async def _form(
        self, request: web.Request, values: dict[str, str], editing: bool, **extra: Any
    ) -> web.Response:
        try:
            models = await asyncio.to_thread(self.registry.aliased_uris)
        except DriftlineError as exc:
            log.warning("registry not listed", reason=str(exc))
            models = []
        return self.render(
            request,
            "deploy.html",
            status=400 if "error" in extra else 200,
            values=values,
            editing=editing,
            models=models,
            streams=sorted(self.view.streams),
            policy_fields=policy_fields(),
            **extra,
        )

    async def _checked(self, request: web.Request) -> tuple[dict[str, str], Any, Any]:
        """The posted form, the live deployment of its name and the new one, checked exactly as
        `driftline deploy` checks it."""
        form = {k: str(v) for k, v in (await request.post()).items() if k != "csrf"}
        live = self.view.deployments.get(form.get("name", "").strip())
        new = deployment_from_form(form, live)
        await check_deployable(self.common, new)
        return form, live, new

    async def deploy_preview(self, request: web.Request) -> web.Response:
        """The diff of the checked form against the live record, with the button to publish."""
        try:
            form, live, new = await self._checked(request)
        except DriftlineError as exc:
            form = {k: str(v) for k, v in (await request.post()).items() if k != "csrf"}
            return await self._form(
                request, form, editing=bool(form.get("editing")), error=str(exc)
            )
        diff = describe_change(live, new)
        return self.render(
            request,
            "preview.html",
            what="deployment",
            publish="/deploy/publish",
            form=form,
            diff=diff,
            live=live,
            new=new,
        )

    async def deploy_publish(self, request: web.Request) -> web.StreamResponse:
        """Check the form again and publish the deployment, signed by the editor."""
        user: User = request["user"]
        try:
            _, live, new = await self._checked(request)
        except DriftlineError as exc:
            return self._failure(request, exc)
        signed = new.model_copy(update={"updated_by": user.name})
        await publish(self.common, DEPLOYMENTS, signed.name, encode(signed))
        log.info("deployment published", deployment=signed.name, by=user.name, created=live is None)
        self.view.deployments[signed.name] = signed
        notice = f"{'changed' if live else 'created'} {signed.name} as {user.name}"
        raise web.HTTPSeeOther(
            f"/deployments/{quote(signed.name)}?" + urlencode({"notice": notice})
        )

    async def stream_page(self, request: web.Request) -> web.Response:
        """A stream's declared features, their distributions now against the reference, and its
        data-drift alerts."""
        name = request.match_info["name"]
        stream = self.view.streams.get(name)
        if stream is None:
            return self._problem(request, 404, f"no stream {name!r} is declared")
        deployments = [d for d in self.view.deployments.values() if d.stream == name]
        charts = [Markup(distribution_chart(c)) for c in self.view.distributions.compare(stream)]
        return self.render(
            request,
            "stream.html",
            stream=stream,
            alerts=self.view.stream_alerts(name)[:50],
            deployments=deployments,
            charts=charts,
            sample=self.own.distribution_sample,
        )

    async def reset_reference(self, request: web.Request) -> web.StreamResponse:
        """Start the stream's reference distributions again from the next feature events (after
        a change the operator wants to compare against)."""
        name = request.match_info["name"]
        self.view.distributions.reset(name)
        log.info("reference distributions reset", stream=name, by=request["user"].name)
        raise web.HTTPSeeOther(f"/streams/{quote(name)}")

    async def stream_form(self, request: web.Request) -> web.Response:
        """The form that declares a stream, or changes the one named in the path: its JSON, as
        `driftline streams declare --file` takes it."""
        name = request.match_info.get("name")
        live = self.view.streams.get(name) if name else None
        if name and live is None:
            return self._problem(request, 404, f"no stream {name!r} is declared")
        text = (
            live.model_dump_json(indent=2, exclude={"updated_at", "updated_by", "schema_version"})
            if live
            else STREAM_EXAMPLE
        )
        return self.render(request, "stream_form.html", declaration=text)

    async def _checked_stream(self, request: web.Request) -> tuple[str, Any, Any]:
        text = str((await request.post()).get("declaration", ""))
        new = stream_from_text(text, "the declaration")
        return text, self.view.streams.get(new.name), new

    async def stream_preview(self, request: web.Request) -> web.Response:
        """The diff of the declaration against the live one, with the button to publish."""
        try:
            text, live, new = await self._checked_stream(request)
        except DriftlineError as exc:
            text = str((await request.post()).get("declaration", ""))
            return self.render(
                request, "stream_form.html", status=400, declaration=text, error=str(exc)
            )
        return self.render(
            request,
            "preview.html",
            what="stream",
            publish="/streams/publish",
            form={"declaration": text},
            diff=describe_change(live, new),
            live=live,
            new=new,
        )

    async def stream_publish(self, request: web.Request) -> web.StreamResponse:
        """Check the declaration again and publish it, signed by the editor."""
        user: User = request["user"]
        try:
            _, live, new = await self._checked_stream(request)
        except DriftlineError as exc:
            return self._failure(request, exc)
        signed = new.model_copy(update={"updated_by": user.name})
        await publish(self.common, STREAMS, signed.name, encode(signed))
        log.info("stream declared", stream=signed.name, by=user.name, created=live is None)
        self.view.streams[signed.name] = signed
        raise web.HTTPSeeOther(f"/streams/{quote(signed.name)}")

    async def trace_page(self, request: web.Request) -> web.Response:
        """One event's journey, as `driftline trace` shows it."""
        event_id = request.query.get("event_id", "").strip()
        steps: list[Any] = []
        if event_id:
            try:
                steps = await trace(self.common, event_id)
            except (KafkaError, DriftlineError) as exc:
                return self._problem(request, 503, f"cannot read the topics: {exc}")
        rows = [
            {
                "topic": topic.name,
                "where": step.where,
                "at": time.strftime("%H:%M:%S", time.gmtime(step.timestamp_ms / 1000)),
                "what": what(topic, step),
            }
            for topic, step in steps
        ]
        return self.render(request, "trace.html", event_id=event_id, rows=rows)

    async def health(self, _: web.Request) -> web.Response:
        """200 once the live view has caught up with the topics, 503 before or after a failure."""
        if self.ready.is_set():
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "failed" if self.failed else "starting"}, status=503)

    async def live(self, _: web.Request) -> web.Response:
        """Liveness: the event loop answers."""
        return web.json_response({"status": "alive"})

    async def serve_metrics(self, _: web.Request) -> web.Response:
        """The process's Prometheus metrics."""
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


async def serve(common: DriftlineSettings, own: ConsoleSettings) -> None:
    """Run the console until SIGTERM (as a container is stopped) or Ctrl-C, then stop it."""
    console = Console(common, own)
    await console.start()
    try:
        await run_until_stopped(console.stop)
    finally:
        log.info("console stopped")
