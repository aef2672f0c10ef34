"""The Grafana dashboard is well-formed and shows what an operator looks for first; that every
metric it queries is exported is checked in tests/unit/test_queried_metrics.py."""

from __future__ import annotations

import json
from typing import Any

from tests.deploy.conftest import ROOT


def dashboard() -> dict[str, Any]:
    return json.loads((ROOT / "deploy" / "grafana" / "driftline-dashboard.json").read_text())


def test_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for subject in (
        "events in",
        "processing latency",
        "end-to-end latency",
        "lag",
        "accuracy per model",
        "drift alerts",
    ):
        assert subject in titles
