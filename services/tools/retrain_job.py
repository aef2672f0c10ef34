"""The webhook-triggered retraining job behind ``driftline retrain serve``.

The drift service posts each alert, signed, to ``DRIFTLINE_DRIFT_WEBHOOK_URLS``; pointed at this
job's ``POST /retrain``, a retrainable alert is answered 202 at once and retrained in the
background, one retrain at a time. While its window holds too few labels the alert is tried again
every `RetrainSettings.retry_every_s` until `retry_for_s` after it arrived (each attempt is
logged). A request without a valid signature under the current or previous webhook key, or
signed further than `DriftlineSettings.webhook_tolerance_s` from now (a replay), is answered
401 with the reason, a body that is no alert 400, and an alert a retrain
cannot act on (data drift, a warning, no window or deployment) 200 "ignored" with the reason:
it was delivered and there is nothing to do, so the drift service must not retry it or
dead-letter it. Alerts waiting in
memory are lost if the job stops: they stay on ``alerts`` for ``driftline retrain --alert``.

The job acts once per alert id (drift derives it from what fired, so a drift worker replayed
after a crash re-sends the same id): a post of an alert queued or finished is answered without
queueing it again, 202 "accepted" while it waits, 200 "done" with how it ended afterwards. The
last `REMEMBERED_ALERTS` finished ids are kept in memory; after a restart, a retrain of an alert
retrained before finds that version by its MLflow tag instead of training another.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from shared import metrics
from shared.errors import DriftlineError, EventDecodeError, WebhookRefusedError
from shared.events import DriftAlert, decode
from shared.logging import get_logger
from shared.retraining import NotEnoughLabelsError, NotRetrainableError, check_retrainable, retrain
from shared.settings import DriftlineSettings, RetrainSettings
from shared.sidecar import run_until_stopped
from shared.webhooks import verify_request

log = get_logger(__name__)

REMEMBERED_ALERTS = 10_000
"""Finished alert ids the job keeps, to answer a repeated post without acting again."""


@dataclass
class Pending:
    """An accepted alert, its deadline (event-loop time) and the attempts made so far."""

    alert: DriftAlert
    give_up_at: float
    attempts: int = 0


class RetrainJob:
    """The job's HTTP endpoint and its one retraining task.

    Parameters
    ----------
    common
        Kafka, topics and MLflow to retrain with; its webhook keys and tolerance verify the
        posts.
    own
        Where to listen and how to retry.

    """

    def __init__(self, common: DriftlineSettings, own: RetrainSettings) -> None:
        self.common = common
        self.own = own
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._accepted: set[str] = set()
        """Alert ids queued, waiting for a retry or retraining: a repeated post is not queued."""
        self._finished: OrderedDict[str, str] = OrderedDict()
        """How each recently finished alert ended, by id: a repeated post is not acted on."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        metrics.show_build_info("retrain")
        metrics.RETRAIN_PENDING.set_function(lambda: self.pending)

    @property
    def pending(self) -> int:
        """Alerts accepted and not finished (queued, waiting to retry or retraining)."""
        return len(self._accepted)

    def web_app(self) -> web.Application:
        """``POST /retrain`` for the drift webhook, ``GET /health``, ``GET /live`` and
        ``GET /metrics`` (Prometheus, as the workers serve it)."""
        app = web.Application()
        app.router.add_post("/retrain", self.receive)
        app.router.add_get("/health", self.health)
        app.router.add_get("/live", self.live)
        app.router.add_get("/metrics", self.serve_metrics)
        return app

    async def start(self) -> None:
        """Listen on ``web_host:web_port`` and start the retraining task."""
        self._runner = web.AppRunner(self.web_app())
        await self._runner.setup()
        await web.TCPSite(self._runner, self.common.web_host, self.own.web_port).start()
        self._spawn(self._work())
        log.info("retrain job listening", host=self.common.web_host, port=self.own.web_port)

    async def stop(self) -> None:
        """Stop listening and cancel the retraining task and pending retries."""
        if self._runner is not None:
            await self._runner.cleanup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def receive(self, request: web.Request) -> web.Response:
        """Verify, check and queue one posted alert."""
        body = await request.read()
        common = self.common
        try:
            verify_request(
                request.headers, body, common.webhook_keys, common.webhook_tolerance_s, time.time()
            )
        except WebhookRefusedError as exc:
            log.warning("webhook refused", reason=exc.reason, remote=request.remote)
            return web.json_response({"error": str(exc)}, status=401)
        try:
            alert = decode(DriftAlert, body, "webhook body")
            check_retrainable(alert)
        except EventDecodeError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except NotRetrainableError as exc:
            return web.json_response(
                {"alert_id": exc.alert_id, "status": "ignored", "reason": exc.reason}
            )
        ended = self._finished.get(alert.alert_id)
        if ended is not None:
            log.info("alert already handled", alert_id=alert.alert_id, outcome=ended)
            return web.json_response(
                {"alert_id": alert.alert_id, "status": "done", "outcome": ended}
            )
        if alert.alert_id not in self._accepted:
            self._accepted.add(alert.alert_id)
            loop = asyncio.get_running_loop()
            self._queue.put_nowait(Pending(alert, loop.time() + self.own.retry_for_s))
            log.info("retrain queued", alert_id=alert.alert_id, deployment=alert.deployment)
        return web.json_response({"alert_id": alert.alert_id, "status": "accepted"}, status=202)

    async def health(self, _: web.Request) -> web.Response:
        """Up, with how many alerts are accepted and not finished."""
        return web.json_response({"status": "ok", "pending": self.pending})

    async def live(self, _: web.Request) -> web.Response:
        """Liveness, as the workers' ``/live``: 200 whenever the event loop answers (training runs
        in a thread, so it does during a retrain too)."""
        return web.json_response({"status": "alive"})

    async def serve_metrics(self, _: web.Request) -> web.Response:
        """The process's Prometheus metrics (attempts by outcome, their time, what is pending)."""
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _work(self) -> None:
        while True:
            pending = await self._queue.get()
            await self._attempt(pending)

    async def _attempt(self, pending: Pending) -> None:
        """One retrain of a pending alert; too few labels schedules the next try, anything else
        finishes it (a failure is logged, never raised: the job goes on with the next alert)."""
        alert = pending.alert
        pending.attempts += 1
        fields = {"alert_id": alert.alert_id, "attempt": pending.attempts}
        started = time.monotonic()
        try:
            result = await retrain(self.common, alert)
        except NotEnoughLabelsError as exc:
            if asyncio.get_running_loop().time() + self.own.retry_every_s > pending.give_up_at:
                log.warning("retrain given up: not enough labels", **fields, reason=str(exc))
                outcome, ended = "given_up", "given up: not enough labels"
            else:
                log.info("not enough labels yet", **fields, have=exc.have, need=exc.need)
                self._count(started, "retry")
                self._spawn(self._retry_later(pending))
                return
        except DriftlineError as exc:
            log.error("retrain failed", **fields, reason=str(exc))
            outcome, ended = "failed", f"failed: {exc}"
        except Exception as exc:
            log.exception("retrain crashed", **fields)
            outcome, ended = "crashed", f"crashed: {type(exc).__name__}: {exc}"
        else:
            log.info(
                "retrain done", **fields, version=result.version, new=result.new, rows=result.rows
            )
            outcome, ended = "retrained", f"retrained: version {result.version}"
        self._count(started, outcome)
        self._finish(alert.alert_id, ended)

    @staticmethod
    def _count(started: float, outcome: str) -> None:
        metrics.RETRAIN_SECONDS.observe(time.monotonic() - started)
        metrics.RETRAIN_ATTEMPTS.labels(outcome).inc()

    def _finish(self, alert_id: str, ended: str) -> None:
        """Move `alert_id` from the accepted to the finished ones (the oldest forgotten)."""
        self._accepted.discard(alert_id)
        self._finished[alert_id] = ended
        while len(self._finished) > REMEMBERED_ALERTS:
            self._finished.popitem(last=False)

    async def _retry_later(self, pending: Pending) -> None:
        await asyncio.sleep(self.own.retry_every_s)
        self._queue.put_nowait(pending)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def serve(common: DriftlineSettings, own: RetrainSettings) -> None:
    """Run the job until SIGTERM (as a container is stopped) or Ctrl-C, then stop it cleanly."""
    job = RetrainJob(common, own)
    await job.start()
    try:
        await run_until_stopped(job.stop)
    finally:
        log.info("retrain job stopped", unfinished=job.pending)
