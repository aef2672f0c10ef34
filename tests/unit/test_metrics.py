"""The shared metrics' helpers: what they observe and the labels they set."""

from __future__ import annotations

import platform
import time

from prometheus_client import REGISTRY

from shared import metrics


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_end_to_end_latency_is_observed_per_event_and_never_negative() -> None:
    labels = {"service": "e2e-test"}
    now = time.time()
    metrics.observe_end_to_end("e2e-test", [now - 30.0, now - 0.5, now + 60.0])

    assert sample("driftline_end_to_end_seconds_count", labels) == 3
    assert sample("driftline_end_to_end_seconds_bucket", {**labels, "le": "0.005"}) == 1
    assert sample("driftline_end_to_end_seconds_bucket", {**labels, "le": "1.0"}) == 2
    assert sample("driftline_end_to_end_seconds_bucket", {**labels, "le": "10.0"}) == 2
    assert sample("driftline_end_to_end_seconds_bucket", {**labels, "le": "60.0"}) == 3
    assert 30.0 <= sample("driftline_end_to_end_seconds_sum", labels) < 40.0


def test_build_info_is_one_with_the_versions_this_worker_runs() -> None:
    metrics.show_build_info("info-test")

    [info] = [
        s
        for family in REGISTRY.collect()
        if family.name == "driftline_build_info"
        for s in family.samples
        if s.labels["service"] == "info-test"
    ]
    assert info.value == 1
    assert info.labels["python"] == platform.python_version()
    assert info.labels["version"] == "0.1.0"
    assert info.labels["faust"].startswith("0.15")
    assert info.labels["river"].startswith("0.26")
