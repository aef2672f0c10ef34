"""Sealed table values: a MAC over the value and its identity, checked before anything decodes it.

A Faust table is rebuilt from its changelog, a topic anyone with write access to it can append
to; a pickle from there would run the writer's code when loaded. So every value a service keeps
in a table is sealed: ``SEAL_FORMAT`` + `shared.signing.mac` of the value bound to
``("state", service, table, key)`` + the value. `unseal` refuses a value with no seal, a wrong
MAC, or one sealed for another table or key (copied from elsewhere), before its bytes are used.

`SealedState` is what a service's agents use: it encodes (pickle or JSON), seals, and on reading
back turns a refused value into "absent" with an error log naming the table and key, so the
service goes on as for a key it never had, and the bytes are never loaded.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter

from shared import metrics
from shared.errors import SealError
from shared.logging import get_logger
from shared.signing import Identity, KeyRing, mac, verify_mac

log = get_logger(__name__)
T = TypeVar("T")

SEAL_FORMAT = b"\x01"
"""First byte of a sealed value: the seal's layout (this byte, a 32-byte MAC, the value)."""
_MAC_SIZE = 32


def seal(value: bytes, identity: Identity, keys: KeyRing) -> bytes:
    """`value` with a MAC binding it to `identity`, under the current key."""
    return SEAL_FORMAT + mac(value, identity, keys.current) + value


def unseal(sealed: bytes, identity: Identity, keys: KeyRing) -> bytes:
    """The value inside `sealed`, if its MAC verifies for `identity` under any key of `keys`.

    Raises
    ------
    SealError
        No seal, another seal format, or a MAC that does not verify (forged, tampered with,
        sealed under an unknown key or for another identity).

    """
    named = "/".join(p if isinstance(p, str) else repr(p) for p in identity)
    if len(sealed) < 1 + _MAC_SIZE or sealed[:1] != SEAL_FORMAT:
        raise SealError(named, "not sealed")
    tag, value = sealed[1 : 1 + _MAC_SIZE], sealed[1 + _MAC_SIZE :]
    if not verify_mac(value, identity, tag, keys):
        raise SealError(named, "bad MAC")
    return value


@dataclass(frozen=True, slots=True)
class Codec(Generic[T]):
    """How a table's values become bytes and back."""

    dumps: Callable[[T], bytes]
    loads: Callable[[bytes], T]


PICKLE: Codec[Any] = Codec(pickle.dumps, pickle.loads)
"""For River models and detectors, whose state is only reachable by pickling."""


def json_codec(kind: type[T]) -> Codec[T]:
    """JSON through pydantic, for plain state (dataclasses, models): nothing to execute."""
    adapter = TypeAdapter(kind)
    return Codec(adapter.dump_json, adapter.validate_json)


class SealedState(Generic[T]):
    """The values of one service's table, encoded by `codec` and sealed under (table, key).

    The caller keeps reading and writing its Faust table (writes belong to the current event's
    partition); this turns each value into the table's bytes and back.
    """

    def __init__(self, service: str, table: str, keys: KeyRing, codec: Codec[T]) -> None:
        self.service = service
        self.table = table
        self.keys = keys
        self.codec = codec

    def identity(self, key: bytes) -> Identity:
        """What a value of `key` is sealed as."""
        return ("state", self.service, self.table, key)

    def dumps(self, key: bytes, value: T) -> bytes:
        """The table bytes of `value` under `key`."""
        return seal(self.codec.dumps(value), self.identity(key), self.keys)

    def loads(self, key: bytes, stored: bytes | None) -> T | None:
        """The value `stored` under `key`, or None when nothing is stored or it is refused.

        A refused value (its seal missing or not verifying) is never decoded: it is logged as an
        error naming the table and key, counted, and the caller starts over as for a new key.
        """
        if stored is None:
            return None
        try:
            value = unseal(stored, self.identity(key), self.keys)
        except SealError as exc:
            metrics.child(metrics.REFUSED_STATE, self.service, self.table).inc()
            log.error(
                "table value refused; treated as absent",
                table=self.table,
                key=key.decode(errors="replace"),
                reason=exc.problem,
            )
            return None
        return self.codec.loads(value)
