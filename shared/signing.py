"""HMAC signatures: nothing unsigned is trusted, and nothing is unpickled unverified.

Two kinds of tag:

- `webhook_signature`: a Standard Webhooks ``v1`` signature, base64 HMAC-SHA256 of
  ``{webhook id}.{unix timestamp}.{body}`` (the headers around it live in `shared.webhooks`).
- `mac` / `verify_mac`: HMAC-SHA256 of a value bound to its identity (what it claims to be, e.g.
  a table and key, or a snapshot's model id and sequence), so bytes that verify as one thing are
  refused as another. Model snapshots and sealed table values (`shared.sealing`) use these.

A `KeyRing` signs with its current key and verifies with the current or a previous one, so a key
is rotated without refusing what was signed just before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from shared.events import ModelSnapshot

Identity = Sequence[str | bytes]
"""What a value claims to be, part by part (e.g. ``("state", "learner", "model_state", key)``)."""
_MAC_DOMAIN = b"driftline-mac-v1"
"""Starts every `mac` message, so that no other HMAC made with the same key (a webhook
signature's message starts with its id) is a valid `mac` tag."""
WEBHOOK_SIGNATURE_VERSION = "v1"
"""The Standard Webhooks signature scheme: HMAC-SHA256, base64."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """A signing key and the keys it replaced: signs with `current`, verifies with any of them."""

    current: SecretStr
    previous: tuple[SecretStr, ...] = ()

    @property
    def all(self) -> tuple[SecretStr, ...]:
        """Every key a signature may verify under, the current one first."""
        return (self.current, *self.previous)


def webhook_signature(webhook_id: str, timestamp: int, body: bytes, key: SecretStr) -> str:
    """``v1,<base64 HMAC-SHA256 of "{webhook_id}.{timestamp}.{body}">`` (Standard Webhooks).

    The key's UTF-8 bytes are the HMAC secret (the spec's ``whsec_`` base64 form is not used).
    """
    message = f"{webhook_id}.{timestamp}.".encode("utf-8", "surrogatepass") + body
    digest = hmac.new(key.get_secret_value().encode(), message, hashlib.sha256).digest()
    return f"{WEBHOOK_SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def webhook_signature_matches(
    webhook_id: str, timestamp: int, body: bytes, signatures: str, keys: KeyRing
) -> bool:
    """Whether any of the space-separated `signatures` is the body's signature under any key.

    Compared as bytes: `hmac.compare_digest` raises TypeError for a text holding any non-ASCII
    character, which a forged header may carry.
    """
    expected = [webhook_signature(webhook_id, timestamp, body, key).encode() for key in keys.all]
    given = [s.encode("utf-8", "surrogatepass") for s in signatures.split()]
    return any(hmac.compare_digest(e, g) for e in expected for g in given)


def mac(value: bytes, identity: Identity, key: SecretStr) -> bytes:
    """HMAC-SHA256 (32 bytes) of `value` bound to `identity`.

    The message is unambiguous: the number of identity parts, then each part with its length,
    then the value, so no other identity and value give the same message.
    """
    digest = hmac.new(key.get_secret_value().encode(), _MAC_DOMAIN, hashlib.sha256)
    digest.update(len(identity).to_bytes(4, "big"))
    for part in identity:
        raw = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        digest.update(len(raw).to_bytes(8, "big"))
        digest.update(raw)
    digest.update(value)
    return digest.digest()


def verify_mac(value: bytes, identity: Identity, tag: bytes, keys: KeyRing) -> bool:
    """Whether `tag` is the `mac` of `value` as `identity` under any key of `keys`."""
    return any(hmac.compare_digest(mac(value, identity, key), tag) for key in keys.all)


def sign_snapshot(snapshot: ModelSnapshot, keys: KeyRing) -> ModelSnapshot:
    """`snapshot` signed over its payload and its identity (`ModelSnapshot.identity`)."""
    signature = mac(snapshot.payload, snapshot.identity, keys.current).hex()
    return snapshot.model_copy(update={"signature": signature})


def verify_snapshot(snapshot: ModelSnapshot, keys: KeyRing) -> bool:
    """Whether the snapshot's signature covers its payload, model id, type, sequence and schema
    version: a payload republished under another id or sequence is refused."""
    try:
        tag = bytes.fromhex(snapshot.signature)
    except ValueError:
        return False
    return verify_mac(snapshot.payload, snapshot.identity, tag, keys)
