"""Signed JSON webhooks, delivered beside the stream so a webhook that is down never blocks it.

`WebhookSender.submit` only puts the body on a bounded queue per URL and returns; one asyncio
task per URL posts it with an HMAC header (``X-Driftline-Signature``, hex SHA-256 of the body
under `DriftlineSettings.webhook_hmac_key`), retries with exponential backoff, and hands it to
`on_give_up` after the last attempt (the caller dead-letters it). A receiver verifies with
`shared.signing.verify(body, header, key)`.

Each post also names what it delivers in ``webhook-id`` (as the Standard Webhooks spec calls
it): the same id on every retry, and on a re-send after a crash (a drift alert's id derives from
what fired it), so a receiver acts once per id.

Deliveries waiting in memory are lost if the process dies: alerts stay on their topic, the
webhook is a notification on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from shared import metrics
from shared.logging import get_logger
from shared.signing import sign

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Driftline-Signature"
ID_HEADER = "webhook-id"
"""What a post delivers, stable across retries and replays (Standard Webhooks' name)."""
MAX_BACKOFF_S = 60.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One body for one URL; `key` names what it is about (for logs and dead letters), `id`
    the body itself (the ``webhook-id`` a receiver dedupes by)."""

    url: str
    key: str
    body: bytes
    id: str


GiveUp = Callable[[Delivery, str], Awaitable[None]]
"""Called with a delivery that failed for good (or found its queue full) and why."""


class WebhookSender:
    """Posts signed bodies to webhook URLs from background tasks, with retries.

    Parameters
    ----------
    urls
        Where every submitted body goes.
    key
        HMAC key that signs each body.
    on_give_up
        Awaited with a delivery after its last failed attempt, or when its queue is full.
    attempts
        Posts tried per delivery.
    backoff_s
        Wait before the first retry; doubled after each failure, capped at a minute.
    timeout_s
        Timeout of one post.
    queue_size
        Deliveries waiting per URL.

    """

    def __init__(
        self,
        urls: list[str],
        key: SecretStr,
        on_give_up: GiveUp,
        attempts: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
        queue_size: int = 1000,
    ) -> None:
        self.urls = list(urls)
        self.key = key
        self.on_give_up = on_give_up
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._queues = {url: asyncio.Queue[Delivery](maxsize=queue_size) for url in self.urls}
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._give_ups: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start one delivery task per URL."""
        self._client = httpx.AsyncClient(timeout=self.timeout_s)
        self._tasks = [asyncio.create_task(self._deliver_from(q)) for q in self._queues.values()]

    async def stop(self) -> None:
        """Cancel the delivery tasks (waiting deliveries are dropped) and close the client."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()

    def submit(self, key: str, body: bytes, delivery_id: str) -> None:
        """Queue `body` (identified by `delivery_id`, e.g. an alert id) for every URL and return
        at once; a full queue gives that delivery up."""
        for url, queue in self._queues.items():
            delivery = Delivery(url, key, body, delivery_id)
            try:
                queue.put_nowait(delivery)
            except asyncio.QueueFull:
                metrics.WEBHOOK_DELIVERIES.labels("dropped").inc()
                task = asyncio.create_task(self.on_give_up(delivery, "webhook queue full"))
                self._give_ups.add(task)
                task.add_done_callback(self._give_ups.discard)

    async def _deliver_from(self, queue: asyncio.Queue[Delivery]) -> None:
        while True:
            delivery = await queue.get()
            problem = await self.post(delivery)
            if problem is not None:
                await self.on_give_up(delivery, problem)

    async def post(self, delivery: Delivery) -> str | None:
        """Post with retries; None once delivered, else the last problem."""
        assert self._client is not None, "start() the sender first"
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(delivery.body, self.key),
            ID_HEADER: delivery.id,
        }
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                metrics.WEBHOOK_DELIVERIES.labels("retried").inc()
                await asyncio.sleep(min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
            try:
                response = await self._client.post(
                    delivery.url, content=delivery.body, headers=headers
                )
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
                    return None
                problem = f"HTTP {response.status_code}"
            log.warning(
                "webhook attempt failed",
                url=delivery.url,
                key=delivery.key,
                webhook_id=delivery.id,
                attempt=attempt + 1,
                problem=problem,
            )
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
        return f"webhook {delivery.url} failed after {self.attempts} attempts: {problem}"
