"""Topic declarations and HMAC signing."""

from __future__ import annotations

from pydantic import SecretStr

from shared.settings import DriftlineSettings
from shared.signing import sign, verify
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


def test_signature_verifies_only_the_same_bytes_and_key() -> None:
    key = SecretStr("k1")
    signature = sign(b"model bytes", key)
    assert verify(b"model bytes", signature, key)
    assert not verify(b"model bytez", signature, key)
    assert not verify(b"model bytes", signature, SecretStr("k2"))
    assert not verify(b"model bytes", None, key)
    assert not verify(b"model bytes", "", key)


def test_a_signature_with_non_ascii_characters_is_refused_not_an_error() -> None:
    key = SecretStr("k1")
    signature = sign(b"model bytes", key)
    assert not verify(b"model bytes", signature[:-1] + "é", key)
    assert not verify(b"model bytes", "ü" * 64, key)
    assert not verify(b"model bytes", "\ud800" + signature[1:], key)  # a lone surrogate
