"""A stand-in for Faust's outbound sends, so agents run under `test_context` with no broker.

`Topic.send` and the producer sends behind `shared.app.send_records` are replaced for the test:
every record an agent would produce is captured by topic name instead, and each barrier that
waits for their delivery (`shared.app.outputs_delivered`) is noted. Pair with `agent_context`
to run one agent of an app built with a memory store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
import pytest
from faust.topics import Topic
from prometheus_client import CollectorRegistry

import shared.app
import shared.delivery


@dataclass
class SentRecords:
    """Everything agents sent, by topic name, in order."""

    by_topic: dict[str, list[tuple[bytes | None, bytes]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def values(self, topic: str) -> list[dict[str, Any]]:
        """The JSON values sent to `topic`."""
        return [orjson.loads(value) for _, value in self.by_topic.get(topic, [])]

    def keys(self, topic: str) -> list[bytes | None]:
        """The keys sent to `topic`."""
        return [key for key, _ in self.by_topic.get(topic, [])]

    delivered_at: list[int] = field(default_factory=list)
    """At each `shared.delivery.outputs_delivered` barrier, how many records had been sent."""

    @property
    def count(self) -> int:
        """Records sent so far, to every topic."""
        return sum(len(records) for records in self.by_topic.values())


def capture_sends(monkeypatch: pytest.MonkeyPatch) -> SentRecords:
    """Replace `Topic.send` and the producer sends of `shared.app.send_records` for this test;
    returns the record of what was sent."""
    sent = SentRecords()

    async def send(self: Topic, *, key: Any = None, value: Any = None, **_: Any) -> None:
        sent.by_topic[self.get_topic_name()].append((key, value))

    async def produce(app: faust.App, topic: str, key: bytes, value: bytes) -> None:
        sent.by_topic[topic].append((key, value))

    async def delivered(app: faust.App) -> None:
        sent.delivered_at.append(sent.count)

    monkeypatch.setattr(Topic, "send", send)
    monkeypatch.setattr(shared.app, "_produce", produce)
    monkeypatch.setattr(shared.delivery, "outputs_delivered", delivered)
    return sent


@asynccontextmanager
async def agent_context(app: faust.App, agent_name: str) -> AsyncIterator[Any]:
    """Run one agent of `app` in Faust's test context (memory store, no broker)."""
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    agent = next(a for a in app.agents.values() if a.name.endswith(agent_name))
    async with agent.test_context() as context:
        yield context


async def put_from(
    agent: Any, topic: str, value: bytes, key: bytes | None = None, partition: int = 0
) -> None:
    """Like `agent.put`, but as if the message came from `topic` and `partition`: for agents
    that read several topics and tell them apart by the message's topic (Faust's `put` names
    only the first)."""
    message = agent.to_message(key, value, partition=partition, offset=agent.sent_offset)
    message.topic = topic
    channel = agent.stream().channel
    await channel.put(await channel.decode(message))
    agent.sent_offset += 1
    async with agent.new_value_processed:
        await agent.new_value_processed.wait()
    if agent._crash_reason:
        raise agent._crash_reason


def fill_table(app: faust.App, table_name: str, items: dict[bytes, bytes]) -> None:
    """Put records into a table's store as if read from its changelog (e.g. a global table fed
    by a compacted topic), without going through an agent."""
    apply_changelog(app, table_name, list(items.items()))


def apply_changelog(
    app: faust.App, table_name: str, records: list[tuple[bytes, bytes | None]]
) -> None:
    """Apply `records` (key, value; None deletes) to a table as one batch of its changelog, in
    order, as recovery or a standby does."""
    table = app.tables[table_name]
    table.apply_changelog_batch([_ChangelogEvent(key, value) for key, value in records])


@dataclass(frozen=True)
class _ChangelogMessage:
    key: bytes
    value: bytes | None
    topic: str = "changelog"
    partition: int = 0
    offset: int = 0


@dataclass(frozen=True)
class _ChangelogEvent:
    key: bytes
    value: bytes | None

    @property
    def message(self) -> _ChangelogMessage:
        return _ChangelogMessage(self.key, self.value)


def isolate_prometheus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give each app built in this test its own Prometheus registry, so a test module can build
    several apps (Faust's sensors refuse to register twice in the default one)."""
    setup = shared.app.setup_prometheus_sensors

    def setup_isolated(app: faust.App, **kwargs: Any) -> Any:
        return setup(app, **kwargs, registry=CollectorRegistry())

    monkeypatch.setattr(shared.app, "setup_prometheus_sensors", setup_isolated)
