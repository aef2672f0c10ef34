"""The webhook sender against a real local HTTP server: signed bodies, retries, give-up, and a
down endpoint that does not hold the others back."""

from __future__ import annotations

import asyncio

from pydantic import SecretStr

from shared.signing import verify
from shared.webhooks import ID_HEADER, SIGNATURE_HEADER, Delivery, WebhookSender
from tests.support.webhook_server import WebhookReceiver

KEY = SecretStr("test-key")


async def test_bodies_arrive_signed_and_a_failing_url_is_retried_then_given_up() -> None:
    given_up: list[tuple[Delivery, str]] = []
    both_given_up = asyncio.Event()

    async def give_up(delivery: Delivery, reason: str) -> None:
        given_up.append((delivery, reason))
        if len(given_up) == 2:
            both_given_up.set()

    async with WebhookReceiver(status={"/down": 503}) as receiver:
        sender = WebhookSender(
            [receiver.url("/down"), receiver.url("/ok")], KEY, give_up, attempts=3, backoff_s=0.01
        )
        await sender.start()
        sender.submit("k1", b'{"n": 1}', "id-1")
        sender.submit("k2", b'{"n": 2}', "id-2")
        ok = await receiver.wait_for("/ok", 2)
        await asyncio.wait_for(both_given_up.wait(), 30)
        down = receiver.on("/down")
        await sender.stop()

    assert [r.body for r in ok] == [b'{"n": 1}', b'{"n": 2}']
    assert all(verify(r.body, r.headers[SIGNATURE_HEADER], KEY) for r in ok)
    assert [r.headers[ID_HEADER] for r in ok] == ["id-1", "id-2"]
    assert [r.headers[ID_HEADER] for r in down] == ["id-1"] * 3 + ["id-2"] * 3, "same id on retry"
    assert not verify(ok[0].body, ok[0].headers[SIGNATURE_HEADER], SecretStr("other"))
    assert [r.body for r in down] == [b'{"n": 1}'] * 3 + [b'{"n": 2}'] * 3
    assert [(d.key, d.url) for d, _ in given_up] == [
        ("k1", receiver.url("/down")),
        ("k2", receiver.url("/down")),
    ]
    assert given_up[0][1] == f"webhook {receiver.url('/down')} failed after 3 attempts: HTTP 503"


async def test_a_full_queue_gives_up_at_once_instead_of_waiting() -> None:
    given_up: list[str] = []

    async def give_up(delivery: Delivery, reason: str) -> None:
        given_up.append(reason)

    sender = WebhookSender(["http://127.0.0.1:9/never"], KEY, give_up, queue_size=1)
    sender.submit("k1", b"{}", "id-1")
    sender.submit("k2", b"{}", "id-2")
    await asyncio.sleep(0)

    assert given_up == ["webhook queue full"]
