"""Every metric a Grafana dashboard or a Prometheus alert rule queries is one a worker exports.

A panel or rule on a name nothing exports is silently empty (the dashboard's "Accuracy per
model" was, for as long as it existed); these tests make it a failure instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import REGISTRY, CollectorRegistry, Metric

import shared.metrics  # noqa: F401  (registers Driftline's metrics)
from tests.support.promql import DASHBOARDS, NAME, ROOT, RULE_FILES, Selector, queries, selectors

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


def unexported(expressions: list[str], known: set[str]) -> set[str]:
    """The Driftline or Faust names `expressions` use that are not in `known`."""
    return {name for expr in expressions for name in NAME.findall(expr)} - known


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


def test_a_selector_has_data_only_where_a_sample_matches_its_literal_matchers() -> None:
    [rate] = selectors('1 - max(driftline_model_error_rate{model=~"$model", window=~"hopping_.*"})')
    assert rate == Selector("driftline_model_error_rate", (("window", "=~", "hopping_.*"),))
    assert rate.matches(("driftline_model_error_rate", {"model": "m", "window": "hopping_5m"}))
    assert not rate.matches(("driftline_model_error_rate", {"window": "tumbling_5m"}))
    assert not rate.matches(("driftline_model_mae", {"window": "hopping_5m"}))
    [lag, committed] = selectors('faust_topic_partition_end_offset - faust_x{job!="a"}')
    assert (lag.name, lag.matchers, str(committed)) == (
        "faust_topic_partition_end_offset",
        (),
        'faust_x{job!="a"}',
    )
