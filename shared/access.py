"""Who may read and write which topic, declared once beside `shared.topics`: least privilege.

Each principal (a service, the retrain job, the operator's CLI, outside producers) is one SASL
user. Its ACLs are rendered from `PRINCIPALS` for the local secure broker (``driftline kafka
start --secure``) and, through ``helm/driftline/files/access.json`` (written by ``python -m
shared.access``), for the Strimzi KafkaUsers of the Helm chart; tests hold both to it.

A service runs a Faust app named ``<prefix>driftline-<service>``: its consumer group, its table
changelogs and internal topics and its transactional ids all start with that name, so they are
granted by one prefix each, and no service can touch another's state.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shared.topics import (
    ALERTS,
    ALL_TOPICS,
    DEADLETTER,
    DECISIONS,
    DEPLOYMENTS,
    EVENTS_RAW,
    FEATURES,
    FEEDBACK,
    MODEL_SNAPSHOTS,
    PREDICTIONS,
    PREDICTIONS_LABELED,
    STREAMS,
    Topic,
)

ResourceType = Literal["topic", "group", "transactionalId"]
PatternType = Literal["literal", "prefix"]

CHART_FILE = Path(__file__).resolve().parents[1] / "helm" / "driftline" / "files" / "access.json"
"""The declaration rendered for the Helm chart (names without the topic prefix)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """One SASL user and what it may do."""

    name: str
    """User name on the local broker; the chart's KafkaUser is ``<release>-<name>``."""
    description: str
    """Who runs as this principal."""
    reads: tuple[Topic, ...] = ()
    """Public topics it consumes."""
    writes: tuple[Topic, ...] = ()
    """Public topics it produces to."""
    faust_app: bool = False
    """Runs a Faust app ``driftline-<name>``: its own group, internal topics, transactional ids."""
    creates_topics: bool = False
    """Creates the public topics (``driftline topics create``)."""
    watches_groups: bool = False
    """Reads every Driftline consumer group's offsets (``driftline status`` shows lag)."""


@dataclass(frozen=True, slots=True)
class Acl:
    """Operations allowed on the resources one name (or name prefix) matches."""

    resource_type: ResourceType
    name: str
    pattern: PatternType
    operations: tuple[str, ...]

    def strimzi(self) -> dict[str, Any]:
        """This ACL as an entry of a Strimzi KafkaUser's ``spec.authorization.acls``."""
        return {
            "resource": {
                "type": self.resource_type,
                "name": self.name,
                "patternType": self.pattern,
            },
            "operations": list(self.operations),
        }


_SERVICE_STATE_OPERATIONS = ("Read", "Write", "Create", "Describe", "DescribeConfigs")

PRINCIPALS: tuple[Principal, ...] = (
    Principal(
        "ingestion",
        "the ingestion workers",
        reads=(EVENTS_RAW, STREAMS),
        writes=(FEATURES, DEADLETTER),
        faust_app=True,
    ),
    Principal(
        "router",
        "the router workers",
        reads=(FEATURES, DEPLOYMENTS, MODEL_SNAPSHOTS),
        writes=(PREDICTIONS, DEADLETTER),
        faust_app=True,
    ),
    Principal(
        "feedback",
        "the feedback workers",
        reads=(PREDICTIONS, FEEDBACK),
        writes=(PREDICTIONS_LABELED, DEADLETTER),
        faust_app=True,
    ),
    Principal(
        "drift",
        "the drift workers (detectors, promotion)",
        reads=(FEATURES, PREDICTIONS_LABELED, DEPLOYMENTS),
        writes=(ALERTS, DECISIONS, DEPLOYMENTS, DEADLETTER),
        faust_app=True,
    ),
    Principal(
        "learner",
        "the learner workers",
        reads=(PREDICTIONS_LABELED, DEPLOYMENTS),
        writes=(MODEL_SNAPSHOTS, DEADLETTER),
        faust_app=True,
    ),
    Principal(
        "retrain",
        "the retrain job (driftline retrain serve)",
        reads=(ALERTS, PREDICTIONS_LABELED, DEPLOYMENTS),
        writes=(DEPLOYMENTS,),
    ),
    Principal(
        "console",
        "the operator console (driftline console): views every topic, edits deployments and "
        "streams, records operators' decisions, retrains on alerts",
        reads=ALL_TOPICS,
        writes=(DEPLOYMENTS, STREAMS, DECISIONS),
        watches_groups=True,
    ),
    Principal(
        "gateway",
        "the V2 inference gateway (driftline gateway)",
        reads=(DEPLOYMENTS, MODEL_SNAPSHOTS, STREAMS),
        writes=(FEATURES, PREDICTIONS),
    ),
    Principal(
        "operator",
        "people and CI at the CLI: topics, deployments, streams, promotions, status, traces",
        reads=ALL_TOPICS,
        writes=(DEPLOYMENTS, STREAMS, DECISIONS),
        creates_topics=True,
        watches_groups=True,
    ),
    Principal(
        "producer",
        "the teams that send events and labels",
        writes=(EVENTS_RAW, FEEDBACK),
    ),
)
"""Every principal. Only the learner writes ``model-snapshots``; the router and the gateway only
read it."""


def principal(name: str) -> Principal:
    """The principal called `name`."""
    for declared in PRINCIPALS:
        if declared.name == name:
            return declared
    raise KeyError(name)


def acls(who: Principal, prefix: str = "") -> list[Acl]:
    """`who`'s ACLs on a cluster whose Driftline topics and groups start with `prefix`."""
    found: list[Acl] = []
    for topic in ALL_TOPICS:
        operations = [
            *(["Read"] if topic in who.reads else []),
            *(["Write"] if topic in who.writes else []),
            *(["Create"] if who.creates_topics else []),
        ]
        if operations:
            found.append(Acl("topic", prefix + topic.name, "literal", (*operations, "Describe")))
    if who.faust_app:
        app_id = f"{prefix}driftline-{who.name}"
        found += [
            Acl("topic", app_id, "prefix", _SERVICE_STATE_OPERATIONS),
            Acl("group", app_id, "prefix", ("Read", "Describe")),
            Acl("transactionalId", app_id, "prefix", ("Write", "Describe")),
        ]
    if who.watches_groups:
        found += [
            Acl("topic", f"{prefix}driftline-", "prefix", ("Describe",)),
            Acl("group", f"{prefix}driftline-", "prefix", ("Describe",)),
        ]
    return found


def chart_access(principals: Sequence[Principal] = PRINCIPALS) -> dict[str, Any]:
    """What the chart's KafkaUsers are made from: each principal's Strimzi ACLs with names
    before the topic prefix (the chart prepends ``topics.prefix``)."""
    return {
        "principals": {
            who.name: {
                "description": who.description,
                "acls": [acl.strimzi() for acl in acls(who)],
            }
            for who in principals
        }
    }


def chart_file_text() -> str:
    """The chart's ``files/access.json`` as it must read."""
    return json.dumps(chart_access(), indent=2) + "\n"


if __name__ == "__main__":
    CHART_FILE.parent.mkdir(parents=True, exist_ok=True)
    CHART_FILE.write_text(chart_file_text())
    sys.stdout.write(f"wrote {CHART_FILE}\n")
