"""Creating Driftline's topics on a cluster, as `shared.topics` declares them, and reading and
writing its topics of record (compacted) from command-line tools."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.protocol.admin import CreateAclsRequest
from aiokafka.structs import ConsumerRecord, TopicPartition

from shared.access import Acl
from shared.delivery import DURABLE_PRODUCER_SETTINGS
from shared.errors import DriftlineError
from shared.events import Deployment, StreamSchema
from shared.kafka_clients import Target, admin_client, consumer, kafka_failure, producer
from shared.logging import get_logger
from shared.records import Check, R, check_declaration, check_deployment
from shared.settings import DriftlineSettings
from shared.topics import ALL_TOPICS, DEPLOYMENTS, STREAMS, Topic

log = get_logger(__name__)


async def create_topics(settings: DriftlineSettings) -> list[str]:
    """Create every public topic that does not exist yet; return the names created."""
    wanted = [
        NewTopic(
            name=topic.full_name(settings),
            num_partitions=topic.partitions(settings),
            replication_factor=settings.topic_replication_factor,
            topic_configs=topic.config(),
        )
        for topic in ALL_TOPICS
    ]
    return await ensure_topics(settings, wanted)


async def ensure_topics(
    target: Target, wanted: Sequence[NewTopic], *, timeout: float = 30.0
) -> list[str]:
    """Create the topics of `wanted` that do not exist yet, then wait until the broker's
    metadata lists every one of them; return the names created."""
    admin = admin_client(target)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            # Another worker of the same service may create them at the same moment.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        if wanted:
            await _until_described(admin, [topic.name for topic in wanted], timeout)
        return [topic.name for topic in missing]
    finally:
        await admin.close()


async def delete_prefixed_topics(target: Target, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix` (a throw-away Driftline's: the load
    test's runs, a test's pipeline), internal ones included; return their names."""
    if not prefix:
        raise ValueError("refusing to delete every topic of the cluster: give a prefix")
    admin = admin_client(target)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
        return mine
    finally:
        await admin.close()


async def _until_described(
    admin: AIOKafkaAdminClient, names: list[str], timeout: float = 30.0
) -> None:
    """Wait until the broker's metadata lists `names`: a topic is created by the controller and
    reaches the metadata other clients read a moment later, and a reader in that moment would
    see no partitions."""
    deadline = asyncio.get_running_loop().time() + timeout
    while any(item["error_code"] for item in await admin.describe_topics(names)):
        if asyncio.get_running_loop().time() > deadline:
            raise DriftlineError(f"topics {names} were created but not listed after {timeout:g}s")
        await asyncio.sleep(0.1)


async def start_reader(
    settings: DriftlineSettings, topic: str, *, subscribe: bool = True, **options: Any
) -> AIOKafkaConsumer:
    """A started consumer of `topic` outside any consumer group (no service's offsets move),
    subscribed or left for the caller to assign; a broker out of reach is one clear error."""
    reader = consumer(
        settings,
        *([topic] if subscribe else []),
        enable_auto_commit=False,
        group_id=None,
        **options,
    )
    try:
        await reader.start()
    except KafkaError as exc:
        await reader.stop()
        raise kafka_failure(exc, settings) from None
    return reader


async def read_topic(
    settings: DriftlineSettings, topic: str, *, from_beginning: bool = True, until_end: bool = True
) -> AsyncIterator[ConsumerRecord]:
    """Every record of `topic` in arrival order, outside any consumer group (no service's offsets
    move). With `until_end` it stops at the end the topic had when reading began; else it waits.
    """
    consumer = await start_reader(
        settings, topic, auto_offset_reset="earliest" if from_beginning else "latest"
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            raise DriftlineError(f"topic {topic} does not exist: run `driftline topics create`")
        ends = await consumer.end_offsets(partitions)
        while not until_end or not await caught_up(consumer, ends):
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    yield message
    finally:
        await consumer.stop()


async def caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """Whether the consumer has read every partition up to `ends` (e.g. the ends when it began:
    a reader of the topics of record is then ready)."""
    for partition, end in ends.items():
        if await consumer.position(partition) < end:
            return False
    return True


async def read_compacted(settings: DriftlineSettings, topic: Topic) -> dict[bytes, bytes]:
    """The latest value per key of a compacted topic, read to its current end; a tombstone
    (no value) removes its key. For CLI listings: services keep such topics in tables."""
    latest: dict[bytes, bytes] = {}
    async for message in read_topic(settings, topic.full_name(settings)):
        if message.value is None:
            latest.pop(message.key, None)
        else:
            latest[message.key] = message.value
    return latest


async def read_checked(settings: DriftlineSettings, topic: Topic, check: Check[R]) -> dict[str, R]:
    """The latest good record per key of a compacted topic, read to its current end and checked
    as the services' global tables check it (`check` returns None to remove the key). A record
    that fails its check is skipped with a warning naming where it lies, and its key keeps its
    last good record, as in those tables: one bad record must not break every reader."""
    name = topic.full_name(settings)
    latest: dict[bytes, R] = {}
    async for message in read_topic(settings, name):
        try:
            record = check(message.key, message.value, name)
        except DriftlineError as exc:
            log.warning(
                "record skipped",
                topic=name,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                reason=str(exc),
            )
            continue
        if record is None:
            latest.pop(message.key, None)
        else:
            latest[message.key] = record
    # a stored record's key is its name's UTF-8 bytes: the check compared them
    return {key.decode(): record for key, record in latest.items()}


async def live_deployments(settings: DriftlineSettings) -> dict[str, Deployment]:
    """The deployments routers serve now, by name (deleted ones left out)."""
    return await read_checked(settings, DEPLOYMENTS, check_deployment)


async def live_streams(settings: DriftlineSettings) -> dict[str, StreamSchema]:
    """The streams declared now, by name, as ingestion workers see them."""
    return await read_checked(settings, STREAMS, check_declaration)


def durable_producer(settings: DriftlineSettings, **options: Any) -> AIOKafkaProducer:
    """An (unstarted) producer whose records count as sent once every in-sync replica has them,
    written once however often a batch is retried: what every Driftline producer uses."""
    return producer(settings, **DURABLE_PRODUCER_SETTINGS, **options)


async def publish(settings: DriftlineSettings, topic: Topic, key: str, value: bytes | None) -> None:
    """Write one record (e.g. a deployment or stream declaration; None: a tombstone, which
    removes the key) and wait until it is stored."""
    await publish_all(settings, [(topic, key, value)])


async def publish_all(
    settings: DriftlineSettings, records: Sequence[tuple[Topic, str, bytes | None]]
) -> None:
    """Write `records` (topic, key, value or None for a tombstone) one after the other through
    one producer, each stored before the next is sent: a reader of several topics never sees
    a record before one it depends on (a deployment before its stream's declaration)."""
    writer = durable_producer(settings)
    try:
        await writer.start()
        for topic, key, value in records:
            await writer.send_and_wait(topic.full_name(settings), key=key.encode(), value=value)
    finally:
        await writer.stop()


async def partition_counts(settings: DriftlineSettings, *topics: Topic) -> dict[str, int]:
    """How many partitions each topic has on the cluster (0 if it does not exist), e.g. to check
    that joined topics are co-partitioned. Asks the cluster for these topics' metadata: a plain
    consumer's cached metadata lists no partitions for topics it has not subscribed to."""
    names = [topic.full_name(settings) for topic in topics]
    admin = admin_client(settings)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    found = {
        item["topic"]: len(item["partitions"]) for item in described if item["error_code"] == 0
    }
    return {name: found.get(name, 0) for name in names}


async def offsets_at_time(
    settings: DriftlineSettings, time: datetime, *topics: Topic
) -> dict[str, dict[int, int]]:
    """Where a reader of the events from `time` on starts, per topic (full name) and partition:
    the earliest offset whose record timestamp is at or after `time`, or the partition's end
    where no record is that late yet. Records are written after their event happens, so no
    event at or after `time` lies before that offset. A time before 1970 (yearly series) looks
    up timestamp 0, which every record is at or after: the broker takes no negative times."""
    counts = await partition_counts(settings, *topics)
    partitions = [TopicPartition(name, p) for name, n in counts.items() for p in range(n)]
    reader = consumer(settings, enable_auto_commit=False, group_id=None)
    await reader.start()
    try:
        # Ends first: a record written after this look-up lies at or after the end it saw.
        ends = await reader.end_offsets(partitions)
        millis = max(0, int(time.timestamp() * 1000))
        found = await reader.offsets_for_times({partition: millis for partition in partitions})
    finally:
        await reader.stop()
    offsets: dict[str, dict[int, int]] = {name: {} for name in counts}
    for partition, at in found.items():
        offsets[partition.topic][partition.partition] = ends[partition] if at is None else at.offset
    return offsets


_RESOURCE_TYPES = {"topic": 2, "group": 3, "transactionalId": 5}
_PATTERN_TYPES = {"literal": 3, "prefix": 4}
_OPERATIONS = {
    "All": 2,
    "Read": 3,
    "Write": 4,
    "Create": 5,
    "Delete": 6,
    "Alter": 7,
    "Describe": 8,
    "DescribeConfigs": 10,
    "AlterConfigs": 11,
}
_ALLOW = 3


async def create_acls(target: Target, bindings: Sequence[tuple[str, Acl]]) -> None:
    """Allow each (user, ACL) of `bindings` from any host; an ACL that exists already is left
    as it is. aiokafka's admin client has no call for it, so the CreateAcls request (v1, with
    pattern types) is sent as aiokafka's own protocol classes define it."""
    admin = admin_client(target)
    await admin.start()
    try:
        for user, acl in bindings:
            for operation in acl.operations:
                request = CreateAclsRequest(
                    _RESOURCE_TYPES[acl.resource_type],
                    acl.name,
                    _PATTERN_TYPES[acl.pattern],
                    f"User:{user}",
                    "*",
                    _OPERATIONS[operation],
                    _ALLOW,
                )
                response = await admin._send_request(request)
                ((error_code, message),) = response.creation_responses
                if error_code:
                    raise DriftlineError(
                        f"cannot allow {operation} on {acl.resource_type} {acl.name!r} "
                        f"({acl.pattern}) to {user}: {for_code(error_code).__name__} {message}"
                    )
    finally:
        await admin.close()
