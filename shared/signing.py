"""HMAC signatures for model snapshots and webhook bodies: nothing unsigned is trusted."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr


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
