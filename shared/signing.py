"""HMAC signatures: nothing unsigned is trusted, and nothing is unpickled unverified.

Two kinds of tag:

- `sign` / `verify`: hex HMAC-SHA256 of a webhook body.
- `mac` / `verify_mac`: HMAC-SHA256 of a value bound to its identity (what it claims to be, e.g.
  a table and key, or a snapshot's model id and sequence), so bytes that verify as one thing are
  refused as another. Model snapshots and sealed table values (`shared.sealing`) use these.

A `KeyRing` signs with its current key and verifies with the current or a previous one, so a key
is rotated without refusing what was signed just before.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from shared.events import ModelSnapshot

Identity = Sequence[str | bytes]
"""What a value claims to be, part by part (e.g. ``("state", "learner", "model_state", key)``)."""
_MAC_DOMAIN = b"driftline-mac-v1"
"""Starts every `mac` message: such a tag is never a valid `sign` tag, even under one key."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """A signing key and the keys it replaced: signs with `current`, verifies with any of them."""

    current: SecretStr
    previous: tuple[SecretStr, ...] = ()

    @property
    def all(self) -> tuple[SecretStr, ...]:
        """Every key a signature may verify under, the current one first."""
        return (self.current, *self.previous)


def sign(payload: bytes, key: SecretStr) -> str:
    """Hex HMAC-SHA256 of `payload`."""
    return hmac.new(key.get_secret_value().encode(), payload, hashlib.sha256).hexdigest()


def verify(payload: bytes, signature: str | None, key: SecretStr) -> bool:
    """Whether `signature` is `payload`'s HMAC under `key` (constant-time comparison).

    Compared as bytes: `hmac.compare_digest` raises TypeError for a text holding any non-ASCII
    character, which a forged header or snapshot may carry (lone surrogates from JSON too).
    """
    if not signature:
        return False
    expected = sign(payload, key).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))


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
