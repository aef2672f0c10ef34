"""Signed JSON webhooks, delivered at least once from the topic that holds what they announce.

`WebhookSender.deliver` posts one body to every URL at once, retries each with exponential
backoff and returns the deliveries that failed every attempt (the caller dead-letters them). The
drift service calls it from a consumer of ``alerts``, so that topic is the outbox: an alert's
offset commits only after every URL took it or it was dead-lettered, and a worker that dies
before then delivers it again after its restart (same ``webhook-id``).

Every post is signed as the Standard Webhooks spec says (`signed_headers`): ``webhook-id`` names
what it delivers, the same on every retry and on a re-send after a crash (a drift alert's id
derives from what fired it), so a receiver acts once per id; ``webhook-timestamp`` is when it
was sent (unix seconds, fresh on each attempt); ``webhook-signature`` is ``v1,<base64 HMAC>``
over id, timestamp and body under `DriftlineSettings.webhook_hmac_key`. A receiver calls
`verify_request`, which accepts the current or the previous key and refuses a timestamp further
than `DriftlineSettings.webhook_tolerance_s` from its clock, so a captured request cannot be
replayed later (within the tolerance, the id tells a replay apart).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from shared import metrics
from shared.errors import WebhookRefusedError
from shared.logging import get_logger
from shared.signing import KeyRing, webhook_signature, webhook_signature_matches

log = get_logger(__name__)

ID_HEADER = "webhook-id"
"""What a post delivers, stable across retries and replays."""
TIMESTAMP_HEADER = "webhook-timestamp"
"""When the post was signed, in unix seconds."""
SIGNATURE_HEADER = "webhook-signature"
"""Space-separated ``v1,<base64>`` signatures of id, timestamp and body."""
MAX_BACKOFF_S = 60.0


def signed_headers(webhook_id: str, body: bytes, key: SecretStr, now: float) -> dict[str, str]:
    """The Standard Webhooks headers of `body` sent at `now` (unix seconds)."""
    timestamp = int(now)
    return {
        ID_HEADER: webhook_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: webhook_signature(webhook_id, timestamp, body, key),
    }


def verify_request(
    headers: Mapping[str, str], body: bytes, keys: KeyRing, tolerance_s: float, now: float
) -> str:
    """The webhook id of a request signed by one of `keys` within `tolerance_s` of `now`;
    otherwise `WebhookRefusedError` saying why. `headers` must look names up case-insensitively
    (as aiohttp's and httpx's do)."""
    missing = [h for h in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER) if not headers.get(h)]
    if missing:
        raise WebhookRefusedError(f"missing header {', '.join(missing)}")
    webhook_id, stamp = headers[ID_HEADER], headers[TIMESTAMP_HEADER]
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise WebhookRefusedError(f"{TIMESTAMP_HEADER} {stamp[:40]!r} is not unix seconds")
    timestamp = int(stamp)
    if abs(int(now) - timestamp) > tolerance_s:
        raise WebhookRefusedError(
            f"{TIMESTAMP_HEADER} {timestamp} is {int(now) - timestamp:+d} s from this receiver's "
            f"clock, outside the tolerance of {tolerance_s:g} s (a replay, or a clock is wrong)"
        )
    if not webhook_signature_matches(webhook_id, timestamp, body, headers[SIGNATURE_HEADER], keys):
        raise WebhookRefusedError(
            f"no {SIGNATURE_HEADER} verifies under the current or previous webhook key"
        )
    return webhook_id


@dataclass(frozen=True, slots=True)
class Delivery:
    """One body for one URL; `key` names what it is about (for logs and dead letters), `id`
    the body itself (the ``webhook-id`` a receiver dedupes by)."""

    url: str
    key: str
    body: bytes
    id: str


class WebhookSender:
    """Posts signed bodies to webhook URLs, with retries.

    Parameters
    ----------
    urls
        Where every body goes.
    key
        HMAC key that signs each body.
    attempts
        Posts tried per delivery.
    backoff_s
        Wait before the first retry; doubled after each failure, capped at a minute.
    timeout_s
        Timeout of one post.

    """

    def __init__(
        self,
        urls: list[str],
        key: SecretStr,
        attempts: int = 5,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
    ) -> None:
        self.urls = list(urls)
        self.key = key
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        """Open the HTTP client."""
        self._client = httpx.AsyncClient(timeout=self.timeout_s)

    async def stop(self) -> None:
        """Close the HTTP client."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def deliver(self, key: str, body: bytes, delivery_id: str) -> list[str]:
        """Post `body` (identified by `delivery_id`, e.g. an alert id) to every URL at once;
        for each URL that failed every attempt, its last problem (naming the URL)."""
        problems = await asyncio.gather(
            *(self.post(Delivery(url, key, body, delivery_id)) for url in self.urls)
        )
        return [problem for problem in problems if problem is not None]

    async def post(self, delivery: Delivery) -> str | None:
        """Post with retries; None once delivered, else the last problem."""
        assert self._client is not None, "start() the sender first"
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                metrics.WEBHOOK_DELIVERIES.labels("retried").inc()
                await asyncio.sleep(min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
            headers = {
                "Content-Type": "application/json",
                **signed_headers(delivery.id, delivery.body, self.key, time.time()),
            }
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
