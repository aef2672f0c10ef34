"""Drift logic without Kafka: River parity, warning onsets, cooldown, escalation, which detector
settings pick, and how errors are computed."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from river.drift import ADWIN, PageHinkley
from river.drift.binary import DDM

from services.drift.detectors import Detector, DetectorConfigError
from services.drift.logic import (
    AlertGate,
    Monitor,
    TaskMismatchError,
    check_settings,
    concept_detector,
    data_detector,
    error_of,
    feature_subject,
    feature_values,
    notifies,
    task_of,
)
from shared.events import DriftAlert, FeatureEvent, VariantOutput

T0 = 1_780_000_000.0


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def _monitor(detector: Detector, cooldown_s: float = 0.0, escalate_after: int = 100) -> Monitor:
    gate = AlertGate(cooldown_s, escalate_after, escalate_within_s=3600)
    return Monitor(detector, gate, feature_subject("pay", "amount"))


def _values(seed: int, shifts: tuple[int, ...], n: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(sum(i >= s for s in shifts) * 2.0, 1.0) for i in range(n)]


@pytest.mark.parametrize(
    ("kind", "river"),
    [("adwin", lambda: ADWIN(delta=0.002)), ("page_hinkley", lambda: PageHinkley())],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_monitor_reports_drift_at_exactly_the_indices_river_gives(kind, river, seed) -> None:
    values = _values(seed, shifts=(400, 900), n=1500)
    plain = river()
    expected = []
    for i, value in enumerate(values, start=1):
        plain.update(value)
        if plain.drift_detected:
            expected.append(i)
    monitor = _monitor(Detector(kind, {"delta": 0.002} if kind == "adwin" else {}))

    findings = [monitor.update(value, _at(i)) for i, value in enumerate(values)]

    assert len(expected) >= 2
    assert [f.alert.position for f in findings if f is not None] == expected


def test_a_warning_is_reported_once_when_the_zone_is_entered_then_the_drift() -> None:
    rng = random.Random(11)
    errors = [float(rng.random() < (0.05 if i < 400 else 0.4)) for i in range(800)]
    plain = DDM()
    onsets, drifts, inside = [], [], False
    for i, error in enumerate(errors, start=1):
        plain.update(error)
        if plain.drift_detected:
            drifts.append(i)
        elif plain.warning_detected and not inside:
            onsets.append(i)
        inside = plain.warning_detected
    monitor = _monitor(Detector("ddm"))

    findings = [f for i, e in enumerate(errors) if (f := monitor.update(e, _at(i)))]

    assert [f.alert.position for f in findings if f.alert.level == "warning"] == onsets
    assert [f.alert.position for f in findings if f.alert.level == "drift"] == drifts
    first_drift = next(f for f in findings if f.alert.level == "drift")
    assert first_drift.alert.stats_before["mean"] < first_drift.alert.stats_after["mean"]


def test_alert_carries_what_drifted_and_the_detector() -> None:
    monitor = _monitor(Detector("adwin", {"delta": 0.01}))
    finding = next(
        f for i, v in enumerate(_values(1, (300,), 800)) if (f := monitor.update(v, _at(i)))
    )
    alert = finding.alert

    assert (alert.kind, alert.level, alert.key) == ("data", "drift", "data:pay:amount")
    assert (alert.stream, alert.feature, alert.detector) == ("pay", "amount", "ADWIN")
    assert alert.params == {"delta": 0.01}
    assert alert.event_time == _at(alert.position - 1)
    assert set(alert.stats_before) == {"n", "mean", "std", "estimation"}


def test_a_redelivered_source_offset_is_not_counted_twice() -> None:
    monitor = _monitor(Detector("adwin"))

    seen = [monitor.already_seen(p, o) for p, o in [(0, 0), (0, 1), (1, 0), (0, 1), (1, 0), (0, 2)]]

    assert seen == [False, False, False, True, True, False]


def test_cooldown_drops_repeats_of_the_same_or_lower_level_in_event_time() -> None:
    gate = AlertGate(cooldown_s=100, escalate_after=100, escalate_within_s=3600)

    assert gate.admit("warning", 0).send
    assert not gate.admit("warning", 50).send
    assert gate.admit("drift", 60).send
    assert not gate.admit("warning", 120).send
    assert not gate.admit("drift", 159).send
    assert gate.admit("drift", 160).send
    assert gate.admit("warning", 261).send


def test_n_drifts_within_t_escalate_even_in_cooldown_and_the_count_restarts() -> None:
    gate = AlertGate(cooldown_s=1000, escalate_after=3, escalate_within_s=100)

    verdicts = [gate.admit("drift", t) for t in (0, 10, 20, 30, 40, 200)]

    assert [(v.send, v.escalated, v.recent_drifts) for v in verdicts] == [
        (True, False, 1),
        (False, False, 2),
        (True, True, 3),
        (False, False, 1),
        (False, False, 2),
        (False, False, 1),
    ]


def test_escalation_only_counts_drifts_inside_the_span() -> None:
    gate = AlertGate(cooldown_s=0, escalate_after=2, escalate_within_s=100)

    assert not gate.admit("drift", 0).escalated
    assert not gate.admit("drift", 100).escalated
    assert gate.admit("drift", 150).escalated


def test_feature_values_split_numbers_from_categories_and_flags() -> None:
    event = FeatureEvent(
        event_id="e",
        stream="s",
        entity_id="u",
        event_time=T0,
        features={"amount": 3, "rate": 0.5, "country": "NL", "new": True},
    )

    assert feature_values(event) == {"amount": 3.0, "rate": 0.5, "country": "NL", "new": "true"}


def test_settings_pick_the_most_specific_detector() -> None:
    mapping = {
        "default": {"kind": "page_hinkley"},
        "pay": {"kind": "kswin", "seed": 1},
        "pay:amount": {"kind": "adwin", "delta": 0.01},
        "categorical": {"kind": "psi", "window": 50},
    }

    assert data_detector(mapping, "pay", "amount", categorical=False).params == {"delta": 0.01}
    assert data_detector(mapping, "pay", "fee", categorical=False).kind == "kswin"
    assert data_detector(mapping, "other", "fee", categorical=False).kind == "page_hinkley"
    assert data_detector(mapping, "pay", "country", categorical=True).params == {"window": 50}
    assert data_detector({}, "pay", "amount", categorical=False).kind == "adwin"
    assert data_detector({}, "pay", "country", categorical=True).kind == "psi"


def test_concept_settings_by_model_version_model_then_task() -> None:
    mapping = {
        "fraud:2": {"kind": "hddm_w"},
        "fraud": {"kind": "eddm"},
        "classification": {"kind": "fhddm"},
    }

    assert concept_detector(mapping, "fraud", "2", "classification").kind == "hddm_w"
    assert concept_detector(mapping, "fraud", "1", "classification").kind == "eddm"
    assert concept_detector(mapping, "churn", "1", "classification").kind == "fhddm"
    assert concept_detector({}, "churn", "1", "classification").kind == "ddm"
    assert concept_detector({}, "price", "1", "regression").kind == "adwin"
    with pytest.raises(DetectorConfigError, match="eddm takes errors, not values"):
        concept_detector(mapping, "fraud", "1", "regression")


def test_check_settings_refuses_an_unknown_kind_at_start() -> None:
    with pytest.raises(DetectorConfigError, match="unknown kind 'adwn'"):
        check_settings({"default": {"kind": "adwn"}}, {})


def _outcome(output: object) -> VariantOutput:
    return VariantOutput(
        variant="v", role="champion", served=True, model_name="m", model_version="1", output=output
    )


def test_errors_for_classes_and_for_regression() -> None:
    assert task_of(True) == task_of(3) == task_of("spam") == "classification"
    assert task_of(2.5) == "regression"
    assert error_of(_outcome(True), True, "classification") == 0.0
    assert error_of(_outcome("ham"), "spam", "classification") == 1.0
    assert error_of(_outcome(3.0), 2.5, "regression") == 0.5
    with pytest.raises(TaskMismatchError, match="model 'm' answered 'x'"):
        error_of(_outcome("x"), 2.5, "regression")


def test_webhook_levels_pick_alerts_and_escalated_means_escalated_only() -> None:
    subject = feature_subject("pay", "amount")
    base = {**subject, "detector": "ADWIN", "position": 1, "event_time": T0}
    warning = DriftAlert(**base, level="warning")
    drift = DriftAlert(**base, level="drift")
    escalated = DriftAlert(**base, level="drift", escalated=True)

    assert [notifies(a, ["drift"]) for a in (warning, drift, escalated)] == [False, True, True]
    assert [notifies(a, ["escalated"]) for a in (warning, drift, escalated)] == [False, False, True]
    assert notifies(warning, ["warning", "drift"])
