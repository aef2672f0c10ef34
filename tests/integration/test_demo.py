"""A shortened `driftline demo` on the real broker and MLflow: the loop closes end to end."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from services.demo.observer import DemoObserver
from services.demo.report import first_concept_drift, plot, summary
from services.demo.runner import Demo, DemoConfig
from services.demo.scenario import Scenario
from services.tools.status import deployments
from shared.health import consumer_lag
from shared.topics import EVENTS_RAW, FEATURES, FEEDBACK, PREDICTIONS, PREDICTIONS_LABELED
from shared.tracing import trace
from tests.support.promql import DASHBOARDS, queries, samples, selectors

pytestmark = pytest.mark.integration


@pytest.mark.timeout(1200)  # idle, three minutes; a busy machine closes the loop later
async def test_demo_detects_the_drift_retrains_and_switches_the_champion(
    kafka_bootstrap: str, mlflow_uri: str, tmp_path: Path
) -> None:
    scenario = Scenario(
        n_events=2000, drift_at=800, rate=30.0, label_delay=1.0, n_train=600, tail_after_switch=300
    )
    config = DemoConfig(
        scenario=scenario,
        results_dir=tmp_path,
        kafka_port=int(kafka_bootstrap.rsplit(":", 1)[1]),
        mlflow_port=int(mlflow_uri.rsplit(":", 1)[1]),
        retrain_min_rows=200,
        promotion_min_samples=150,
        drain_timeout=120.0,
        switch_timeout=600.0,
    )
    scraped: dict[str, str] = {}
    last_scrape = 0.0

    def scrape(observer: DemoObserver) -> None:
        """Every few seconds once the champion switched, each process's /metrics."""
        nonlocal last_scrape
        if not observer.switches or time.monotonic() - last_scrape < 3:
            return
        last_scrape = time.monotonic()
        for process in demo.processes:
            try:
                scraped[process.service] = process.metrics()
            except httpx.HTTPError:
                continue  # stopping already: the previous scrape stands

    demo = Demo(config, on_tick=scrape)

    observer = await demo.run()

    detected = first_concept_drift(observer)
    assert detected is not None, (summary(observer, scenario), [a.key for a in observer.alerts])
    assert detected >= scenario.drift_at
    assert observer.webhook_calls >= 1
    challenger = observer.challenger
    assert challenger is not None and challenger.new, observer.retrain_status
    assert challenger.rows >= config.retrain_min_rows
    assert len(observer.switches) == 1
    switch = observer.switches[0]
    assert switch.version == challenger.version
    assert (switch.decision.action, switch.decision.decided_by) == ("promote", "policy")
    assert switch.decision.challenger_samples >= config.promotion_min_samples
    assert switch.decision.challenger_error < switch.decision.champion_error
    assert switch.served_from is not None, "the router never served the retrained version"
    versions = observer.champion_versions
    old = [v for v in versions if v != switch.version]
    assert len(old) == 1
    old_after_drift = [acc for index, acc in versions[old[0]].points if index >= scenario.drift_at]
    assert versions[switch.version].rolling > old_after_drift[-1] + 0.1
    assert observer.labeled >= observer.sent >= scenario.n_events
    assert observer.dead_letters == observer.malformed >= 2, "each malformed record, one letter"

    live = samples(scraped.values())
    for dashboard in DASHBOARDS:
        empty = {
            str(selector)
            for expression in queries(dashboard)
            for selector in selectors(expression)
            if not any(selector.matches(sample) for sample in live)
        }
        assert not empty, f"{dashboard.name}: no data in the demo for {sorted(empty)}"
    png = plot(observer, scenario, tmp_path / "accuracy.png")
    assert png.stat().st_size > 10_000
    assert all(p.process is not None and p.process.poll() is not None for p in demo.processes)

    journey = await trace(demo.settings, f"loan-{scenario.seed}-500")
    topics = [topic for topic, _ in journey]
    assert topics[:2] == [EVENTS_RAW, FEATURES]
    assert topics.count(PREDICTIONS) == 3  # champion and two online shadows, before the drift
    assert {FEEDBACK, PREDICTIONS_LABELED} <= set(topics)
    assert [d.name for d in await deployments(demo.settings)] == ["loans"]
    lag = await consumer_lag(demo.settings)
    assert lag[(f"{demo.settings.topic_prefix}driftline-router", demo.topic(FEATURES))] == 0
