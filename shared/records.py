"""Checks of the records on topics of record (compacted, keyed by name): one check per topic,
used alike by the services' global tables (`shared.global_tables`) and the command-line readers
(`shared.admin.read_checked`), so a record one of them refuses the other refuses too."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from shared.errors import EventDecodeError
from shared.events import Deployment, StreamSchema, decode

R = TypeVar("R")
Check = Callable[[bytes | None, bytes | None, str], R | None]
"""Checks one record (key, value, topic): the decoded record, None to remove the key, or raises
a `DriftlineError` with the reason it is refused."""


def check_deployment(key: bytes | None, value: bytes | None, topic: str) -> Deployment | None:
    """A record of ``deployments``: a deployment keyed by its name, or None for a tombstone or a
    deleted deployment (the key's deployment is removed)."""
    if key is None:
        raise EventDecodeError(topic, "no key: a deployment record is keyed by its name")
    if value is None:
        return None
    deployment = decode(Deployment, value, topic)
    if key != deployment.name.encode():
        raise EventDecodeError(topic, f"key {key!r} is not the deployment name {deployment.name!r}")
    return None if deployment.deleted else deployment


def check_declaration(key: bytes | None, value: bytes | None, topic: str) -> StreamSchema | None:
    """A record of the ``streams`` topic as a declaration keyed by its stream, or None for a
    tombstone (the stream's declaration is removed)."""
    if value is None:
        return None
    schema = decode(StreamSchema, value, topic)
    if key != schema.name.encode():
        raise EventDecodeError(topic, f"key {key!r} is not the stream name {schema.name!r}")
    return schema
