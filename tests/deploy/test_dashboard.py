"""The Grafana dashboard: well-formed, and built on metrics the services export."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401  (registers Driftline's metrics)
from tests.deploy.conftest import ROOT

LATER_METRICS = {"driftline_model_accuracy", "driftline_alerts_total"}
"""Metrics the dashboard shows before a service exports them (per-model accuracy, alerts)."""
FAUST_METRICS = {
    "faust_topic_partition_end_offset",
    "faust_topic_partition_offset_commited",
    "faust_total_rebalances",
    "faust_total_rebalances_recovering",
}
"""Faust's own, from its Prometheus sensor with the ``faust`` prefix shared/app.py gives it."""


def dashboard() -> dict[str, Any]:
    return json.loads((ROOT / "deploy" / "grafana" / "driftline-dashboard.json").read_text())


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def exported_names() -> set[str]:
    """Driftline's metric families (counters without their ``_total``)."""
    return {family.name for family in REGISTRY.collect() if family.name.startswith("driftline_")}


def test_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for subject in ("events in", "latency", "lag", "accuracy per model", "drift alerts"):
        assert subject in titles


def test_every_metric_is_exported_or_announced() -> None:
    exported = exported_names()
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for expr in expressions()
        for name in re.findall(r"\b((?:driftline|faust)_[a-z_]+)\b", expr)
    }
    assert {"driftline_events_in_total", "driftline_processing_seconds"} <= used
    unknown = {
        name
        for name in used
        if name.removesuffix("_total") not in exported and name not in LATER_METRICS | FAUST_METRICS
    }
    assert not unknown, f"the dashboard uses metrics no service exports: {unknown}"
