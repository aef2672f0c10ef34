"""Every Kafka topic Driftline uses: name, key, partitioning and cleanup policy, declared once.

Services, the CLI, tests and the deployment files all read this table; nothing else names a topic.
Topics that are joined (``predictions`` and ``feedback``) share key and partition count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.settings import DriftlineSettings


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic of the architecture."""

    name: str
    """Name without the deployment's `topic_prefix`."""
    key: str
    """What the message key holds; it decides the partition and so where state lives."""
    cleanup_policy: Literal["delete", "compact"] = "delete"
    """``compact`` keeps the latest value per key (tables of record); ``delete`` ages out."""
    retention_ms: int = 7 * 24 * 3600 * 1000
    """How long a ``delete`` topic keeps messages."""
    single_partition: bool = False
    """True for small topics of record that must keep one global order."""

    def full_name(self, settings: DriftlineSettings) -> str:
        """The topic's name on the cluster, after the deployment's prefix."""
        return settings.topic_prefix + self.name

    def partitions(self, settings: DriftlineSettings) -> int:
        """Partition count on the cluster."""
        return 1 if self.single_partition else settings.topic_partitions

    def config(self) -> dict[str, str]:
        """Topic-level Kafka config to create it with."""
        if self.cleanup_policy == "compact":
            return {"cleanup.policy": "compact"}
        return {"cleanup.policy": "delete", "retention.ms": str(self.retention_ms)}


EVENTS_RAW = Topic("events.raw", key="entity id (duplicates of one event must share a key)")
FEATURES = Topic("features", key="entity id")
PREDICTIONS = Topic("predictions", key="event id (the feedback join key)")
FEEDBACK = Topic("feedback", key="event id (the feedback join key)")
PREDICTIONS_LABELED = Topic("predictions.labeled", key="deployment name")
ALERTS = Topic("alerts", key="what drifted: kind:stream:feature or kind:model:version")
DECISIONS = Topic("decisions", key="deployment name")
DEADLETTER = Topic("deadletter", key="source topic", retention_ms=30 * 24 * 3600 * 1000)
DEPLOYMENTS = Topic(
    "deployments", key="deployment name", cleanup_policy="compact", single_partition=True
)
MODEL_SNAPSHOTS = Topic("model-snapshots", key="online model id", cleanup_policy="compact")
STREAMS = Topic("streams", key="stream name", cleanup_policy="compact", single_partition=True)

ALL_TOPICS: tuple[Topic, ...] = (
    EVENTS_RAW,
    FEATURES,
    PREDICTIONS,
    FEEDBACK,
    PREDICTIONS_LABELED,
    ALERTS,
    DECISIONS,
    DEADLETTER,
    DEPLOYMENTS,
    MODEL_SNAPSHOTS,
    STREAMS,
)
"""The public topics, in pipeline order. Services' internal topics (table changelogs,
repartitions) are made by Faust and named after the service's app id."""
