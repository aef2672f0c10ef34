"""Sealed table values: a MAC over the value and its identity, checked before anything decodes it.

A Faust table is rebuilt from its changelog, a topic anyone with write access to it can append
to; a pickle from there would run the writer's code when loaded. So every value a service keeps
in a table is sealed: ``SEAL_FORMAT`` + its version + `shared.signing.mac` of the value bound
to ``("state", service, table, key, version)`` + the value. `unseal` refuses a value with no
seal, a wrong MAC, or one sealed for another table or key (copied from elsewhere), before its
bytes are used.

The version is the input offset the value was written under. A worker paused past its session
timeout (a zombie) can still deliver writes it had made after its successor's newer ones;
`SealedTable` keeps, for each key, the value of the highest version when it is rebuilt from
its changelog, so such a stale write (or an old value copied back by hand) never wins.

`SealedState` is what a service's agents use: it encodes (pickle or JSON), seals, and on reading
back turns a refused value into "absent" with an error log naming the table and key, so the
service goes on as for a key it never had, and the bytes are never loaded.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import faust
from faust.types import EventT
from pydantic import TypeAdapter

from shared import metrics
from shared.errors import SealError
from shared.logging import get_logger, message_fields
from shared.signing import Identity, KeyRing, mac, verify_mac

log = get_logger(__name__)
T = TypeVar("T")

SEAL_FORMAT = b"\x02"
"""First byte of a sealed value: the seal's layout (this byte, an 8-byte signed version, a
32-byte MAC, the value)."""
_VERSION_SIZE = 8
_MAC_SIZE = 32
_HEADER_SIZE = 1 + _VERSION_SIZE + _MAC_SIZE


def _versioned(identity: Identity, version: bytes) -> Identity:
    return (*identity, version)


def seal(value: bytes, identity: Identity, keys: KeyRing, version: int) -> bytes:
    """`value` at `version` with a MAC binding both to `identity`, under the current key."""
    stamp = version.to_bytes(_VERSION_SIZE, "big", signed=True)
    return SEAL_FORMAT + stamp + mac(value, _versioned(identity, stamp), keys.current) + value


def version_of(sealed: bytes | None) -> int | None:
    """The version a sealed value says it has, unverified: for values verified before."""
    if sealed is None or len(sealed) < _HEADER_SIZE or sealed[:1] != SEAL_FORMAT:
        return None
    return int.from_bytes(sealed[1 : 1 + _VERSION_SIZE], "big", signed=True)


def unseal(sealed: bytes, identity: Identity, keys: KeyRing) -> tuple[int, bytes]:
    """The version and the value inside `sealed`, if its MAC verifies for `identity` under
    any key of `keys`.

    Raises
    ------
    SealError
        No seal, another seal format, or a MAC that does not verify (forged, tampered with,
        sealed under an unknown key or for another identity).

    """
    named = "/".join(p if isinstance(p, str) else repr(p) for p in identity)
    if len(sealed) < _HEADER_SIZE or sealed[:1] != SEAL_FORMAT:
        raise SealError(named, "not sealed")
    stamp, tag = sealed[1 : 1 + _VERSION_SIZE], sealed[1 + _VERSION_SIZE : _HEADER_SIZE]
    value = sealed[_HEADER_SIZE:]
    if not verify_mac(value, _versioned(identity, stamp), tag, keys):
        raise SealError(named, "bad MAC")
    return int.from_bytes(stamp, "big", signed=True), value


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

    def dumps(self, key: bytes, value: T, version: int) -> bytes:
        """The table bytes of `value` under `key`, written at input offset `version`."""
        return seal(self.codec.dumps(value), self.identity(key), self.keys, version)

    def loads(self, key: bytes, stored: bytes | None) -> T | None:
        """The value `stored` under `key`, or None when nothing is stored or it is refused.

        A refused value (its seal missing or not verifying) is never decoded: it is logged as an
        error naming the table and key, counted, and the caller starts over as for a new key.
        """
        verified = self.verified(key, stored)
        return None if verified is None else self.codec.loads(verified[1])

    def verified(self, key: bytes, stored: bytes | None) -> tuple[int, bytes] | None:
        """The version and encoded value `stored` under `key`; None when nothing is stored or
        it is refused (logged and counted), its bytes never decoded."""
        if stored is None:
            return None
        try:
            return unseal(stored, self.identity(key), self.keys)
        except SealError as exc:
            metrics.child(metrics.REFUSED_STATE, self.service, self.table).inc()
            log.error(
                "table value refused; treated as absent",
                table=self.table,
                key=key.decode(errors="replace"),
                reason=exc.problem,
            )
            return None


class SealedTable(faust.Table):
    """A Faust table of `SealedState` values that, rebuilt from its changelog (at recovery and
    on standbys), keeps for each key the value of the highest version, and never takes a value
    whose seal does not verify: a zombie's stale write or a forged record leaves the value
    before it in place."""

    sealed: SealedState[Any]

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Apply the records of `batch` that are newer than what the table holds."""
        versions: dict[bytes, int] = {}
        kept = []
        for event in batch:
            message = event.message
            key, value = message.key, message.value
            if key is None:
                continue
            if value is None:  # a deletion is the writer's own decision: no version to check
                versions.pop(key, None)
                kept.append(event)
                continue
            verified = self.sealed.verified(key, value)
            if verified is None:
                continue
            held = versions.get(key)
            if held is None:
                held = version_of(self.data.get(key))
            if held is not None and verified[0] < held:
                log.warning(
                    "stale table value skipped",
                    table=self.sealed.table,
                    key=key.decode(errors="replace"),
                    version=verified[0],
                    held=held,
                    **message_fields(message.topic, message.partition, message.offset),
                )
                continue
            versions[key] = verified[0]
            kept.append(event)
        super().apply_changelog_batch(kept)


def sealed_table(app: faust.App, sealed: SealedState[Any]) -> SealedTable:
    """The app's table for `sealed` (named after it), registered like ``app.Table``."""
    table = SealedTable(
        app, name=sealed.table, key_type=bytes, value_type=bytes, beacon=app.tables.beacon
    )
    table.sealed = sealed
    app.tables.add(table)
    return table
