"""Topic declarations."""

from __future__ import annotations

from shared.settings import DriftlineSettings
from shared.topics import ALL_TOPICS, DEPLOYMENTS, FEEDBACK, PREDICTIONS


def test_topic_names_take_the_prefix_and_partitions_from_settings() -> None:
    settings = DriftlineSettings(topic_prefix="acme.", topic_partitions=6)
    assert PREDICTIONS.full_name(settings) == "acme.predictions"
    assert {t.partitions(settings) for t in ALL_TOPICS if not t.single_partition} == {6}


def test_joined_topics_are_co_partitioned() -> None:
    settings = DriftlineSettings(topic_partitions=5)
    assert PREDICTIONS.key == FEEDBACK.key
    assert PREDICTIONS.partitions(settings) == FEEDBACK.partitions(settings)


def test_tables_of_record_are_compacted() -> None:
    assert DEPLOYMENTS.config() == {"cleanup.policy": "compact"}
    assert PREDICTIONS.config()["cleanup.policy"] == "delete"
    assert len({t.name for t in ALL_TOPICS}) == len(ALL_TOPICS)
