"""Compacted topics of record (deployments, stream declarations) copied into a global table.

The worker that owns the topic's partition checks each record and stores it in a global table
(a Faust table cannot use the public topic as its changelog: registration hangs). Every replica
reads the table's changelog at start (before it reports healthy) and live afterwards, so a new
record applies without a restart. A bad record is dead-lettered and not stored; a tombstone
removes its key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import faust
from faust.types import EventT

from shared import metrics
from shared.app import DeadLetters, consume, declare_topic
from shared.errors import DriftlineError
from shared.events import Deployment
from shared.logging import get_logger
from shared.records import Check, R, check_deployment
from shared.settings import DriftlineSettings
from shared.topics import DEPLOYMENTS, Topic

log = get_logger(__name__)


class WatchedGlobalTable(faust.GlobalTable):
    """A global table that tells `on_change` about every key set or deleted, whether by this
    worker's agent or read from the changelog (recovery and other workers' writes)."""

    def __init__(
        self, *args: Any, on_change: Callable[[bytes, bytes | None], None], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.on_change = on_change

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Store records read from the changelog, then report them."""
        events = list(batch)
        super().apply_changelog_batch(events)
        for event in events:
            self.on_change(event.key, event.message.value)

    def on_key_set(self, key: bytes, value: bytes) -> None:
        """Report a key this worker set."""
        super().on_key_set(key, value)
        self.on_change(key, value)

    def on_key_del(self, key: bytes) -> None:
        """Report a key this worker deleted."""
        super().on_key_del(key)
        self.on_change(key, None)


def watched_global_table(
    app: faust.App, name: str, partitions: int, on_change: Callable[[bytes, bytes | None], None]
) -> WatchedGlobalTable:
    """A raw-bytes global table `name` added to `app`, reporting every change to `on_change`;
    buffers of one apply each changelog record as it arrives, not in batches."""
    return app.tables.add(
        WatchedGlobalTable(
            app,
            name=name,
            on_change=on_change,
            beacon=app.tables.beacon,
            key_type=bytes,
            value_type=bytes,
            partitions=partitions,
            is_global=True,
            standby_buffer_size=1,
            recovery_buffer_size=1,
        )
    )


def checked_global_table(
    app: faust.App,
    topic: Topic,
    common: DriftlineSettings,
    dead_letters: DeadLetters,
    check: Check[R],
    *,
    name: str,
    agent: str,
    on_change: Callable[[str, R | None], None] | None = None,
) -> Mapping[str, R]:
    """Copy `topic` into the global table `name` with the agent `agent`; returns the current
    records by key, decoded once per change (`on_change` hears of each change too). A stored
    record that no longer decodes is logged and leaves the one before it in place."""
    current: dict[str, R] = {}
    topic_name = topic.full_name(common)

    def changed(key: bytes, value: bytes | None) -> None:
        try:
            record = check(key, value, topic_name)
        except DriftlineError as exc:
            # Checked before it was stored: only a worker with another schema gets here, and
            # keeping what it had beats dropping a live deployment.
            log.warning("record not applied", topic=topic_name, key=key, reason=str(exc))
            return
        if record is None:
            current.pop(key.decode(), None)
        else:
            current[key.decode()] = record
        if on_change is not None:
            on_change(key.decode(), record)
        metrics.TABLE_ENTRIES.labels(dead_letters.service, name).set(len(current))

    table = watched_global_table(app, name, topic.partitions(common), changed)

    async def store(event: EventT) -> None:
        message = event.message
        if check(message.key, message.value, message.topic) is None:
            table.pop(message.key, None)
        else:
            table[message.key] = message.value

    async def store_records(stream: faust.Stream) -> None:
        await consume(stream, dead_letters.service, dead_letters, store)

    app.agent(declare_topic(app, topic, common), name=agent)(store_records)
    return current


def deployment_table(
    app: faust.App,
    common: DriftlineSettings,
    dead_letters: DeadLetters,
    on_change: Callable[[str, Deployment | None], None] | None = None,
) -> Mapping[str, Deployment]:
    """The live deployments by name, read from ``deployments`` (see the module's docstring)."""
    return checked_global_table(
        app,
        DEPLOYMENTS,
        common,
        dead_letters,
        check_deployment,
        name="deployments",
        agent="store_deployment_record",
        on_change=on_change,
    )
