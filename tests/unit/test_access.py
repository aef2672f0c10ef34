"""The one declaration of who reads and writes what (`shared.access`), checked against the
services' own apps and rendered for the chart."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from faust.types import TopicT

from shared import access
from shared.access import CHART_FILE, PRINCIPALS, Acl, acls, principal
from shared.settings import SERVICE_SETTINGS, DriftlineSettings
from shared.topics import ALL_TOPICS, MODEL_SNAPSHOTS
from shared.worker import internal_topics
from tests.support.faust_doubles import isolate_prometheus

PREFIX = "p."


@pytest.mark.parametrize("service", sorted(SERVICE_SETTINGS))
def test_a_service_reads_exactly_the_public_topics_declared_and_keeps_state_under_its_prefix(
    service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_prometheus(monkeypatch)
    common = DriftlineSettings(data_dir=tmp_path, topic_prefix=PREFIX)
    app = importlib.import_module(f"services.{service}.app").build(
        common, SERVICE_SETTINGS[service]()
    )
    public = {topic.full_name(common): topic for topic in ALL_TOPICS}
    consumed = {
        name
        for agent in app.agents.values()
        if isinstance(agent.channel, TopicT)
        for name in agent.channel.topics
    }
    declared = principal(service)

    assert {public[name] for name in consumed if name in public} == set(declared.reads)
    app_id = f"{PREFIX}driftline-{service}"
    assert app.conf.id == app_id  # the consumer group the group ACL names
    assert all(name.startswith(app_id) for name in consumed if name not in public)
    assert all(topic.name.startswith(app_id) for topic in internal_topics(app))


def test_only_the_learner_writes_model_snapshots_and_the_router_only_reads_them() -> None:
    assert [p.name for p in PRINCIPALS if MODEL_SNAPSHOTS in p.writes] == ["learner"]
    router = {acl.name: acl.operations for acl in acls(principal("router"), PREFIX)}
    assert router[f"{PREFIX}model-snapshots"] == ("Read", "Describe")


def test_a_service_gets_its_topics_by_name_and_its_own_state_by_prefix() -> None:
    assert acls(principal("feedback"), PREFIX) == [
        Acl("topic", "p.predictions", "literal", ("Read", "Describe")),
        Acl("topic", "p.feedback", "literal", ("Read", "Describe")),
        Acl("topic", "p.predictions.labeled", "literal", ("Write", "Describe")),
        Acl("topic", "p.deadletter", "literal", ("Write", "Describe")),
        Acl(
            "topic",
            "p.driftline-feedback",
            "prefix",
            ("Read", "Write", "Create", "Describe", "DescribeConfigs"),
        ),
        Acl("group", "p.driftline-feedback", "prefix", ("Read", "Describe")),
        Acl("transactionalId", "p.driftline-feedback", "prefix", ("Write", "Describe")),
    ]


def test_no_app_prefix_covers_another_principals_state() -> None:
    apps = [f"driftline-{p.name}" for p in PRINCIPALS]
    assert not [(a, b) for a in apps for b in apps if a != b and b.startswith(a)]


def test_the_charts_access_file_is_the_declaration() -> None:
    assert CHART_FILE.read_text() == access.chart_file_text(), (
        "helm/driftline/files/access.json is stale: run `python -m shared.access`"
    )
