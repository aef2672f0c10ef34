"""Standard Webhooks signatures (sign, verify, refuse with a reason), and the webhook sender
against a real local HTTP server: signed bodies to every URL, retries, and the problem of a URL
that failed every attempt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from pydantic import SecretStr

from shared.errors import WebhookRefusedError
from shared.signing import KeyRing
from shared.webhooks import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSender,
    signed_headers,
    verify_request,
)
from tests.support.webhook_server import WebhookReceiver

KEY = SecretStr("test-key")
KEYS = KeyRing(KEY)
BODY = b'{"alert_id": "a-1"}'
NOW = 1_767_225_600


def _verify(
    headers: dict[str, str], body: bytes = BODY, keys: KeyRing = KEYS, now: int = NOW
) -> str:
    return verify_request(headers, body, keys, 300.0, now)


def test_a_signature_verifies_for_its_id_timestamp_body_and_key_only() -> None:
    headers = signed_headers("a-1", BODY, KEY, NOW)
    assert headers[TIMESTAMP_HEADER] == str(NOW)
    assert headers[SIGNATURE_HEADER].startswith("v1,")
    assert _verify(headers) == "a-1"
    tampered = [
        (headers, BODY + b" ", "no webhook-signature verifies"),
        ({**headers, ID_HEADER: "a-2"}, BODY, "no webhook-signature verifies"),
        ({**headers, TIMESTAMP_HEADER: str(NOW + 1)}, BODY, "no webhook-signature verifies"),
    ]
    for forged, body, reason in tampered:
        with pytest.raises(WebhookRefusedError, match=reason):
            _verify(forged, body)
    with pytest.raises(WebhookRefusedError, match="current or previous webhook key"):
        _verify(headers, keys=KeyRing(SecretStr("other-key")))


def test_the_signature_is_the_standard_webhooks_v1_scheme() -> None:
    """What any Standard Webhooks library computes with the key's bytes as its secret."""
    headers = signed_headers(
        "msg_p5jXN8AQM9LWM0D4loKWxJek", b'{"test": 2432232314}', KEY, 1614265330
    )
    message = b'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}'
    digest = hmac.new(b"test-key", message, hashlib.sha256).digest()
    assert headers[SIGNATURE_HEADER] == "v1," + base64.b64encode(digest).decode()


def test_during_rotation_the_previous_key_and_a_list_of_signatures_are_accepted() -> None:
    old, new = SecretStr("old-key"), SecretStr("new-key")
    by_old = signed_headers("a-1", BODY, old, NOW)
    rotated = KeyRing(new, (old,))
    assert _verify(by_old, keys=rotated) == "a-1"
    by_new = signed_headers("a-1", BODY, new, NOW)[SIGNATURE_HEADER]
    both = {**by_old, SIGNATURE_HEADER: f"v1,bm90IGl0 {by_new}"}
    assert _verify(both, keys=KeyRing(new)) == "a-1"
    with pytest.raises(WebhookRefusedError):
        _verify(by_old, keys=KeyRing(new))


@pytest.mark.parametrize(
    ("sent_at", "reason"),
    [
        (NOW - 301, r"webhook-timestamp \d+ is \+301 s from this receiver's clock, outside"),
        (NOW + 301, r"is -301 s from this receiver's clock, outside the tolerance of 300 s"),
    ],
)
def test_stale_and_future_timestamps_are_refused(sent_at: int, reason: str) -> None:
    with pytest.raises(WebhookRefusedError, match=reason):
        _verify(signed_headers("a-1", BODY, KEY, sent_at))
    assert _verify(signed_headers("a-1", BODY, KEY, NOW - 300)) == "a-1", "the edge is inside"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({ID_HEADER: None}, "missing header webhook-id"),
        ({TIMESTAMP_HEADER: None, SIGNATURE_HEADER: ""}, "missing header webhook-timestamp, w"),
        ({TIMESTAMP_HEADER: "1767225600.5"}, "'1767225600.5' is not unix seconds"),
        ({TIMESTAMP_HEADER: "-1"}, "is not unix seconds"),
        ({TIMESTAMP_HEADER: "9" * 400}, "is not unix seconds"),
        ({TIMESTAMP_HEADER: "١٧٦٧٢٢٥٦٠٠"}, "is not unix seconds"),  # Arabic-Indic digits
        ({SIGNATURE_HEADER: "v1,ü" + "A" * 43}, "no webhook-signature verifies"),
        ({SIGNATURE_HEADER: "v1,\ud800"}, "no webhook-signature verifies"),
        ({SIGNATURE_HEADER: "nonsense"}, "no webhook-signature verifies"),
        ({ID_HEADER: "\ud800"}, "no webhook-signature verifies"),
    ],
)
def test_malformed_headers_are_refused_with_a_reason(
    change: dict[str, str | None], reason: str
) -> None:
    headers = signed_headers("a-1", BODY, KEY, NOW)
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    with pytest.raises(WebhookRefusedError, match=reason):
        _verify(headers)


async def test_bodies_arrive_signed_and_a_failing_url_is_retried_then_given_up() -> None:
    async with WebhookReceiver(status={"/down": 503}, keys=KEYS) as receiver:
        sender = WebhookSender(
            [receiver.url("/down"), receiver.url("/ok")], KEY, attempts=3, backoff_s=0.01
        )
        await sender.start()
        failed = [
            await sender.deliver("k1", b'{"n": 1}', "id-1"),
            await sender.deliver("k2", b'{"n": 2}', "id-2"),
        ]
        ok, down = receiver.on("/ok"), receiver.on("/down")
        await sender.stop()

    assert [r.body for r in ok] == [b'{"n": 1}', b'{"n": 2}']
    assert not receiver.refused, "every attempt verifies, retries too"
    assert [r.headers[ID_HEADER] for r in ok] == ["id-1", "id-2"]
    assert [r.headers[ID_HEADER] for r in down] == ["id-1"] * 3 + ["id-2"] * 3, "same id on retry"
    with pytest.raises(WebhookRefusedError):
        verify_request(ok[0].headers, ok[0].body, KeyRing(SecretStr("other")), 300, time.time())
    assert [r.body for r in down] == [b'{"n": 1}'] * 3 + [b'{"n": 2}'] * 3
    assert failed == [[f"webhook {receiver.url('/down')} failed after 3 attempts: HTTP 503"]] * 2


async def test_a_delivery_to_working_urls_reports_no_problem() -> None:
    async with WebhookReceiver(keys=KEYS) as receiver:
        sender = WebhookSender([receiver.url("/a"), receiver.url("/b")], KEY)
        await sender.start()
        failed = await sender.deliver("k1", b"{}", "id-1")
        await sender.stop()

    assert failed == []
    assert [r.headers[ID_HEADER] for r in receiver.on("/a") + receiver.on("/b")] == ["id-1"] * 2
