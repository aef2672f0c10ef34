"""Drift logic without Kafka: River parity, warning onsets, fresh-data windows and the position
history behind them, cooldown, escalation, which detector settings pick, and how errors are
computed."""

from __future__ import annotations

import math
import pickle
import random
from datetime import UTC, datetime

import pytest
from river.drift import ADWIN, PageHinkley
from river.drift.binary import DDM

from services.drift.detectors import Detector, DetectorConfigError
from services.drift.logic import (
    AlertGate,
    Finding,
    Monitor,
    PositionHistory,
    ShownVersions,
    TaskMismatchError,
    check_settings,
    concept_detector,
    data_detector,
    error_of,
    feature_subject,
    feature_values,
    model_subject,
    notifies,
    task_of,
    with_offsets,
)
from shared.events import (
    MAX_MAGNITUDE,
    DriftAlert,
    FeatureEvent,
    VariantOutput,
    alert_id_for,
)

T0 = 1_780_000_000.0
SOURCE = "p.features"
PARTITION, FIRST_OFFSET = 3, 1000
"""Where the test streams' values come from: value i (zero-based) at FIRST_OFFSET + i."""


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def _monitor(detector: Detector, cooldown_s: float = 0.0, escalate_after: int = 100) -> Monitor:
    gate = AlertGate(cooldown_s, escalate_after, escalate_within_s=3600)
    return Monitor(detector, gate, feature_subject("pay", "amount"), SOURCE)


def _feed(monitor: Monitor, values: list) -> list[Finding]:
    """Feed value i at event time T0 + i from offset FIRST_OFFSET + i; the findings."""
    return [
        finding
        for i, value in enumerate(values)
        if (finding := monitor.update(value, _at(i), PARTITION, FIRST_OFFSET + i))
    ]


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

    findings = _feed(monitor, values)

    assert len(expected) >= 2
    assert [f.alert.position for f in findings] == expected


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

    findings = _feed(monitor, errors)

    assert [f.alert.position for f in findings if f.alert.level == "warning"] == onsets
    assert [f.alert.position for f in findings if f.alert.level == "drift"] == drifts
    first_drift = next(f for f in findings if f.alert.level == "drift")
    assert first_drift.alert.stats_before["mean"] < first_drift.alert.stats_after["mean"]


def test_alert_carries_what_drifted_and_the_detector() -> None:
    monitor = _monitor(Detector("adwin", {"delta": 0.01}))
    alert = _feed(monitor, _values(1, (300,), 800))[0].alert

    assert (alert.kind, alert.level, alert.key) == ("data", "drift", "data:pay:amount")
    assert (alert.stream, alert.feature, alert.detector) == ("pay", "amount", "ADWIN")
    assert alert.params == {"delta": 0.01}
    assert alert.event_time == _at(alert.position - 1)
    assert set(alert.stats_before) == {"n", "mean", "std", "estimation"}


def test_a_detector_replayed_from_its_saved_state_fires_with_the_same_alert_ids() -> None:
    values = _values(1, (300, 700), 1000)
    saved = _monitor(Detector("adwin", {"delta": 0.01}))
    first = _feed(saved, values[:250])
    replica = pickle.loads(pickle.dumps(saved))  # the state a crashed worker recovers
    findings, replayed = _feed(saved, values[250:]), _feed(replica, values[250:])
    alerts = [f.alert for f in first + findings]

    assert [a.alert_id for a in alerts[len(first) :]] == [f.alert.alert_id for f in replayed]
    assert len(alerts) > 1 and len({a.alert_id for a in alerts}) == len(alerts)
    assert all(
        a.alert_id == alert_id_for(a.key, None, a.detector, a.level, a.position) for a in alerts
    )


def _fires(detector: ADWIN, value: float) -> bool:
    detector.update(value)
    return detector.drift_detected


def _assert_window_starts_at(alert: DriftAlert, estimate: int, history: PositionHistory) -> None:
    """The window starts at the history's checkpoint for `estimate`: never later, at most the
    history's precision earlier, and with that value's own event time and source offset."""
    window = alert.window
    assert window is not None
    slack = (alert.position - estimate) / (history.per_level - 1)
    assert estimate - slack <= window.start_position <= estimate
    assert window.start_time == _at(window.start_position - 1)
    assert window.offsets == {SOURCE: {PARTITION: FIRST_OFFSET + window.start_position - 1}}


def test_an_adwin_drift_window_starts_where_adwin_keeps_its_window_after_the_cut() -> None:
    values = _values(1, (300,), 800)
    plain = ADWIN(delta=0.01)
    position = next(i for i, v in enumerate(values, start=1) if _fires(plain, v))
    monitor = _monitor(Detector("adwin", {"delta": 0.01}))

    alert = _feed(monitor, values)[0].alert

    assert (alert.level, alert.position) == ("drift", position)
    assert alert.window is not None and alert.window.estimated_by == "detector_window"
    _assert_window_starts_at(alert, position - int(plain.width) + 1, monitor.history)


def test_a_ddm_drift_window_starts_where_ddm_entered_its_warning_zone() -> None:
    rng = random.Random(11)
    errors = [float(rng.random() < (0.05 if i < 400 else 0.4)) for i in range(800)]
    plain, onset, inside = DDM(), None, False
    for position, error in enumerate(errors, start=1):
        plain.update(error)
        if plain.drift_detected:
            break
        if plain.warning_detected and not inside:
            onset = position
        elif not plain.warning_detected:
            onset = None
        inside = plain.warning_detected
    assert onset is not None, "DDM must warn before this drift for the test to mean anything"
    monitor = _monitor(Detector("ddm"))

    findings = _feed(monitor, errors)

    drift = next(f.alert for f in findings if f.alert.level == "drift")
    assert drift.position == position
    assert drift.window is not None and drift.window.estimated_by == "warning_start"
    _assert_window_starts_at(drift, onset, monitor.history)
    assert all(f.alert.window is None for f in findings if f.alert.level == "warning")


def test_a_detector_without_window_or_warning_zone_starts_the_window_at_the_alert() -> None:
    monitor = _monitor(Detector("page_hinkley"))

    alert = _feed(monitor, _values(2, (500,), 1000))[0].alert

    assert alert.window is not None and alert.window.estimated_by == "alert_position"
    assert alert.window.start_position == alert.position
    _assert_window_starts_at(alert, alert.position, monitor.history)


@pytest.mark.parametrize("per_level", [2, 4, 16])
@pytest.mark.parametrize("n", [1, 37, 3000])
def test_history_lookups_are_never_late_and_early_by_at_most_age_over_per_level(
    per_level: int, n: int
) -> None:
    history = PositionHistory(per_level)
    for position in range(1, n + 1):
        history.record(position, T0 + position, position % 3, 10 * position)

    for position in range(1, n + 1):
        found = history.at_or_before(position)
        assert position - (n - position) / (per_level - 1) <= found.position <= position
        assert found.time == T0 + found.position
        assert (found.partition, found.offset) == (found.position % 3, 10 * found.position)
    assert len(history) <= per_level * (math.log2(max(n / per_level, 1)) + 2)


def test_window_offsets_looked_up_by_time_fill_in_and_exact_ones_win() -> None:
    monitor = _monitor(Detector("page_hinkley"))
    alert = _feed(monitor, _values(2, (500,), 1000))[0].alert
    exact = FIRST_OFFSET + alert.position - 1
    labeled = "p.predictions.labeled"

    completed = with_offsets(alert, {SOURCE: {0: 7, PARTITION: 5}, labeled: {0: 1, 1: 2}})

    assert completed.window is not None
    assert completed.window.offsets == {SOURCE: {0: 7, PARTITION: exact}, labeled: {0: 1, 1: 2}}
    assert completed.window.start_time == alert.window.start_time


def test_a_value_redelivered_or_resent_by_a_replay_is_not_counted_twice() -> None:
    monitor = _monitor(Detector("adwin"))
    raw0, raw1 = "raw[0]>features[0]", "raw[1]>features[0]"
    delivered = [(raw0, 0), (raw0, 1), (raw1, 0), (raw0, 1), (raw1, 0), (raw0, 2)]

    seen = [monitor.already_seen(lineage, offset) for lineage, offset in delivered]

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
    assert concept_detector({}, "churn", "1", "classification").kind == "hddm_a"
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


def test_an_online_model_is_watched_across_its_snapshots_a_registry_model_per_version() -> None:
    """Every learner snapshot is a new version of an online model: a detector per snapshot would
    restart (and fire on its noisy start) every few hundred events."""
    snapshot_7 = _outcome(True).model_copy(update={"model_version": "7", "online": True})
    snapshot_8 = snapshot_7.model_copy(update={"model_version": "8"})
    registry_1, registry_2 = (
        _outcome(True),
        _outcome(True).model_copy(update={"model_version": "2"}),
    )
    keys = [
        model_subject("d", "s", o)["key"] for o in (snapshot_7, snapshot_8, registry_1, registry_2)
    ]
    assert keys == ["concept:m:online", "concept:m:online", "concept:m:1", "concept:m:2"]


def test_errors_for_classes_and_for_regression() -> None:
    assert task_of(True) == task_of(3) == task_of("spam") == "classification"
    assert task_of(2.5) == "regression"
    assert error_of(_outcome(True), True, "classification") == 0.0
    assert error_of(_outcome("ham"), "spam", "classification") == 1.0
    assert error_of(_outcome(3.0), 2.5, "regression") == 0.5
    with pytest.raises(TaskMismatchError, match="model 'm' answered 'x'"):
        error_of(_outcome("x"), 2.5, "regression")


def test_the_largest_regression_error_allowed_keeps_a_detector_finite() -> None:
    """A label of 1.7e308 made an error of infinity, after which ADWIN never fired again; such a
    label is refused at decode (`MAX_MAGNITUDE`), and the largest error left, output and label
    at opposite bounds, keeps every statistic finite."""
    error = error_of(_outcome(MAX_MAGNITUDE), -MAX_MAGNITUDE, "regression")
    assert error == 2 * MAX_MAGNITUDE
    monitor = _monitor(Detector.from_setting("t", {"kind": "adwin"}, accepts=("value",)))
    _feed(monitor, [error, *_values(seed=1, shifts=(), n=200), error])
    stats = pickle.loads(pickle.dumps(monitor))._stats()
    assert stats and all(math.isfinite(v) for v in stats.values())


def test_webhook_levels_pick_alerts_and_escalated_means_escalated_only() -> None:
    subject = feature_subject("pay", "amount")
    base = {**subject, "detector": "ADWIN", "position": 1, "event_time": T0, "alert_id": "a"}
    warning = DriftAlert(**base, level="warning")
    drift = DriftAlert(**base, level="drift")
    escalated = DriftAlert(**base, level="drift", escalated=True)

    assert [notifies(a, ["drift"]) for a in (warning, drift, escalated)] == [False, True, True]
    assert [notifies(a, ["escalated"]) for a in (warning, drift, escalated)] == [False, False, True]
    assert notifies(warning, ["warning", "drift"])


def test_a_version_is_shown_until_it_stops_answering_for_the_stale_span() -> None:
    shown = ShownVersions(stale_after_s=100)
    champion, challenger, other = ("d", "m", "3"), ("d", "m", "4"), ("e", "n", "1")
    assert shown.saw(champion, 0.0) == []
    assert shown.saw(challenger, 50.0) == []
    assert shown.saw(champion, 60.0) == [], "both versions of a canary answer: both shown"
    assert shown.saw(other, 150.0) == [], "50 is 100 behind 150 only just: not yet stale"
    assert shown.saw(challenger, 161.0) == [champion], "the champion stopped answering at 60"
    assert shown.saw(champion, 170.0) == [], "a version that answers again is shown again"
    assert shown.saw(other, 400.0) == [challenger, champion]
