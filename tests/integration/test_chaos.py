"""Kill -9 while events flow, on the real broker: the quick fault scenarios of `loadtest.chaos`
(router, feedback and learner each SIGKILLed once and restarted at once while 1,500 events and
their labels arrive; then all five services, each killed once, over 2,000 events that drift at
their middle), checked by event id: one prediction and one labeled record per event, every
labeled event learned exactly once, every group caught up; with drift, the detectors and the
alerts those of a drift worker without faults on the same input, and every alert's webhook
posted. `make chaos` runs the full set three times and writes docs/reliability.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.chaos import Scenario, plan, run_scenario

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scenario", plan(quick=True), ids=lambda s: s.name.split()[0])
def test_nothing_is_lost_or_done_twice_when_workers_are_killed(
    kafka_bootstrap: str, tmp_path: Path, scenario: Scenario
) -> None:
    effects = run_scenario(kafka_bootstrap, tmp_path, scenario, timeout_s=240.0)

    assert [f.split()[1:] for f in effects.faults] == [["kill", f.service] for f in scenario.faults]
    assert effects.behind == {}, f"groups never caught up: {effects.behind}"
    assert effects.predicted == effects.events
    assert effects.labeled == effects.events
    assert effects.duplicate_labeled == 0
    assert effects.learned == effects.events
    if "drift" in scenario.services:
        assert effects.alerts, "the workload's drift makes alerts"
        assert effects.alerts_missing == effects.alerts_unexpected == []
        assert effects.detectors_differing == []
        assert effects.webhooks_missing == []
    assert effects.passed
