"""Creating Driftline's topics on a cluster, as `shared.topics` declares them."""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.settings import DriftlineSettings
from shared.topics import ALL_TOPICS


async def create_topics(settings: DriftlineSettings) -> list[str]:
    """Create every public topic that does not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=topic.full_name(settings),
                num_partitions=topic.partitions(settings),
                replication_factor=settings.topic_replication_factor,
                topic_configs=topic.config(),
            )
            for topic in ALL_TOPICS
            if topic.full_name(settings) not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
        return [t.name for t in wanted]
    finally:
        await admin.close()
