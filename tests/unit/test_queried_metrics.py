"""Every metric a Grafana dashboard or a Prometheus alert rule queries is one a worker exports.

A panel or rule on a name nothing exports is silently empty (the dashboard's "Accuracy per
model" was, for as long as it existed); these tests make it a failure instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import REGISTRY, CollectorRegistry, Metric

import shared.metrics  # noqa: F401  (registers Driftline's metrics)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted(
    [*ROOT.glob("deploy/grafana/*.json"), *ROOT.glob("helm/driftline/files/*dashboard*.json")]
)
RULE_FILES = sorted(
    [*ROOT.glob("deploy/prometheus/rules/*.yml"), *ROOT.glob("helm/driftline/files/*alerts*.yml")]
)
_NAME = re.compile(r"\b((?:driftline|faust)_[a-z0-9_]+)\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def series_names(families: Iterator[Metric]) -> set[str]:
    """The names of the series each metric family exposes (a counter ``x`` is ``x_total``)."""
    return {family.name + suffix for family in families for suffix in _SUFFIXES[family.type]}


def exported() -> set[str]:
    """Driftline's series, and Faust's from the sensor `shared.app` sets up (prefix ``faust``)."""
    faust_registry = CollectorRegistry()
    FaustMetrics.create(faust_registry, app_name="faust")
    return series_names(REGISTRY.collect()) | series_names(faust_registry.collect())


def _strings(node: Any, keys: set[str]) -> Iterator[str]:
    """Every string under one of `keys`, anywhere in a parsed JSON or YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                yield value
            else:
                yield from _strings(value, keys)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item, keys)


def queries(path: Path) -> list[str]:
    """The PromQL of a dashboard (panel targets, variable queries) or of a rules file."""
    if path.suffix == ".json":
        return list(_strings(json.loads(path.read_text()), {"expr", "query", "definition"}))
    return list(_strings(yaml.safe_load(path.read_text()), {"expr"}))


def unexported(expressions: list[str], known: set[str]) -> set[str]:
    """The Driftline or Faust names `expressions` use that are not in `known`."""
    return {name for expr in expressions for name in _NAME.findall(expr)} - known


def test_the_checked_files_exist() -> None:
    assert ROOT / "deploy" / "grafana" / "driftline-dashboard.json" in DASHBOARDS
    assert ROOT / "deploy" / "prometheus" / "rules" / "driftline-alerts.yml" in RULE_FILES


@pytest.mark.parametrize("path", DASHBOARDS + RULE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_queried_metric_is_exported(path: Path) -> None:
    expressions = queries(path)
    assert expressions, f"{path} holds no query"
    missing = unexported(expressions, exported())
    assert not missing, f"{path.relative_to(ROOT)} queries metrics nothing exports: {missing}"


def test_a_query_on_a_name_nothing_exports_is_caught() -> None:
    known = exported()
    assert unexported(['avg(driftline_model_accuracy{model=~"$model"})'], known) == {
        "driftline_model_accuracy"
    }
    assert unexported(["rate(driftline_dead_letters[5m])"], known) == {"driftline_dead_letters"}
    assert not unexported(
        [
            "histogram_quantile(0.99, rate(driftline_processing_seconds_bucket[5m]))",
            "rate(driftline_dead_letters_total[5m]) and faust_total_rebalances_recovering",
        ],
        known,
    )
