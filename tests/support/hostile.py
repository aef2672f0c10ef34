"""What an attacker with write access to a topic would send: bytes that run code when unpickled."""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
from pathlib import Path

from pydantic import SecretStr


class _Touch:
    """Unpickles as ``os.system("touch <marker>")``: the marker exists iff the bytes were loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def marker_pickle(marker: Path) -> bytes:
    """A pickle whose loading creates the file `marker` (and returns the command's exit code)."""
    return pickle.dumps(_Touch(marker))


def payload_only_signature(payload: bytes, key: SecretStr) -> str:
    """A snapshot signature made the old way, hex HMAC over the payload alone (no identity)."""
    return hmac.new(key.get_secret_value().encode(), payload, hashlib.sha256).hexdigest()
