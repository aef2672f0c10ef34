"""The drift agents under Faust's test context: values in, alerts out at River's indices with their
fresh-data windows, concept drift per model version with error-rate windows, micro-batches that
write each detector once, bad input dead-lettered."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from faust.tables.base import Collection
from prometheus_client import REGISTRY
from river.drift import ADWIN
from river.drift.binary import DDM, HDDMA

import services.drift.app
from services.drift.app import build
from services.drift.bocpd import BOCPD
from shared.events import LabeledPrediction, VariantOutput, alert_id_for, encode
from shared.settings import DriftlineSettings, DriftSettings
from shared.topics import Topic
from tests.support.faust_doubles import agent_context, capture_sends, isolate_prometheus
from tests.support.records import stored_state

T0 = 1_780_000_000.0
DDM_SETTING = {"classification": {"kind": "ddm"}}
"""Tests that compare alerts with River's DDM index by index name it (the default is HDDM_A)."""
LOOKED_UP = {0: 42, 1: 42}
"""What the stand-in for the broker's offsets-for-times answers for every topic."""


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_prometheus(monkeypatch)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[tuple[datetime, list[str]]]:
    """Stand in for the broker's offsets-for-times (LOOKED_UP for every topic); every look-up's
    time and topics, in order."""
    calls: list[tuple[datetime, list[str]]] = []

    async def offsets_at_time(
        settings: DriftlineSettings, time: datetime, *topics: Topic
    ) -> dict[str, dict[int, int]]:
        names = [topic.full_name(settings) for topic in topics]
        calls.append((time, names))
        return {name: dict(LOOKED_UP) for name in names}

    monkeypatch.setattr(services.drift.app, "offsets_at_time", offsets_at_time)
    return calls


def read_at(partition: int, offset: int) -> dict[str, object]:
    """Where a fanned-out value was read from ``features``, for a record without provenance."""
    lineage = f"a.features[{partition}]"
    return {"partition": partition, "offset": offset, "lineage": lineage, "lineage_offset": offset}


def _start_time(window: dict[str, Any]) -> float:
    return datetime.fromisoformat(window["start_time"]).timestamp()


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a batch handled after the last `put` returned (puts only fill the buffer)."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not done after {timeout}s")


def _app(tmp_path: Path, **own: object) -> faust.App:
    return build(DriftlineSettings(data_dir=tmp_path, topic_prefix="a."), DriftSettings(**own))


def _shifted_values(n: int = 600, at: int = 300, seed: int = 3) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.0 if i < at else 1.5, 1.0) for i in range(n)]


def _river_indices(detector: ADWIN | DDM | HDDMA, values: list[float]) -> list[int]:
    fired = []
    for i, value in enumerate(values, start=1):
        detector.update(value)
        if detector.drift_detected:
            fired.append(i)
    return fired


async def test_data_drift_alerts_at_the_indices_river_gives_with_their_windows(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    lookups: list,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="services.drift.app")
    sent = capture_sends(monkeypatch)
    values = _shifted_values()
    app = _app(tmp_path, cooldown_s=0)

    async with agent_context(app, "detect_data_drift") as agent:
        for i, value in enumerate(values):
            item = {"stream": "pay", "feature": "amount", "value": value, "time": T0 + i}
            await agent.put(orjson.dumps({**item, **read_at(0, i)}), key=b"pay:amount")
        replayed = {"stream": "pay", "feature": "amount", "value": 99.0, "time": T0}
        await agent.put(orjson.dumps({**replayed, **read_at(0, 5)}), key=b"pay:amount")

    alerts = sent.values("a.alerts")
    expected = _river_indices(ADWIN(delta=0.002), values)
    assert expected, "the shift must be detectable for this test to mean anything"
    assert [a["position"] for a in alerts] == expected
    assert {(a["kind"], a["level"], a["key"], a["detector"]) for a in alerts} == {
        ("data", "drift", "data:pay:amount", "ADWIN")
    }
    assert sent.keys("a.alerts") == [b"data:pay:amount"] * len(expected)
    assert alerts[0]["stats_after"]["mean"] > alerts[0]["stats_before"]["mean"]
    for alert in alerts:
        window = alert["window"]
        first = window["start_position"] - 1
        assert window["estimated_by"] == "detector_window"
        assert first < alert["position"] and _start_time(window) == T0 + first
        assert window["offsets"] == {
            "a.features": {**{str(p): o for p, o in LOOKED_UP.items()}, "0": first},
            "a.predictions.labeled": {str(p): o for p, o in LOOKED_UP.items()},
        }
    logged = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert [
        (line["alert_id"], line["stream"], line["detector"], line["window_start_position"])
        for line in logged
        if line["event"] == "alert sent"
    ] == [(a["alert_id"], "pay", "ADWIN", a["window"]["start_position"]) for a in alerts]
    assert [names for _, names in lookups] == [["a.features", "a.predictions.labeled"]] * len(
        alerts
    )


async def test_bocpd_named_in_settings_alerts_with_a_window_at_its_most_probable_change(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lookups: list
) -> None:
    sent = capture_sends(monkeypatch)
    values = _shifted_values(at=300)
    plain, expected = BOCPD(), []
    for i, value in enumerate(values, start=1):
        plain.update(value)
        if plain.drift_detected:
            expected.append((i, i - plain.run_length + 1))
    app = _app(tmp_path, detectors={"pay:amount": {"kind": "bocpd"}}, cooldown_s=0)

    async with agent_context(app, "detect_data_drift") as agent:
        for i, value in enumerate(values):
            item = {"stream": "pay", "feature": "amount", "value": value, "time": T0 + i}
            await agent.put(orjson.dumps({**item, **read_at(0, i)}), key=b"pay:amount")
        await _until(
            lambda: (
                len([a for a in sent.values("a.alerts") if a["level"] == "drift"]) == len(expected)
            )
        )

    drifts = [a for a in sent.values("a.alerts") if a["level"] == "drift"]
    assert [(a["position"], a["window"]["start_position"]) for a in drifts] == expected
    assert expected and 300 < expected[0][0] <= 320 and abs(expected[0][1] - 301) <= 5
    assert {a["detector"] for a in drifts} == {"BOCPD"}
    assert drifts[0]["window"]["estimated_by"] == "detector_window"
    assert drifts[0]["stats_after"]["change_probability"] > 0.99


async def test_fan_out_rekeys_each_feature_and_dead_letters_bad_events(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sent = capture_sends(monkeypatch)
    app = _app(tmp_path)
    event = {
        "event_id": "e1",
        "stream": "pay",
        "entity_id": "u1",
        "event_time": T0,
        "features": {"amount": 3, "country": "NL", "new": True},
    }

    async with agent_context(app, "fan_out_feature_values") as agent:
        await agent.put(b"{}", key=b"u1")
        await agent.put(orjson.dumps(event), key=b"u1")

    values_topic = "a.driftline-drift-feature-values"
    assert sent.keys(values_topic) == [b"pay:amount", b"pay:country", b"pay:new"]
    assert [v["value"] for v in sent.values(values_topic)] == [3.0, "NL", "true"]
    assert len(sent.values("a.deadletter")) == 1


def _labeled(i: int, output: object, label: object, version: str = "1") -> LabeledPrediction:
    outcome = VariantOutput(
        variant="champ",
        role="champion",
        served=True,
        model_name="fraud",
        model_version=version,
        output=output,
    )
    silent = outcome.model_copy(update={"variant": "shadow", "role": "shadow", "output": None})
    return LabeledPrediction(
        event_id=f"ev-{i}",
        entity_id="u",
        stream="pay",
        deployment="dep",
        features={},
        outcomes=[outcome, silent],
        label=label,
        event_time=T0 + i,
        label_time=T0 + i,
        feedback_delay_s=0.0,
    )


async def test_by_default_a_classifier_is_watched_by_hddm_a_at_river_s_indices(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lookups: list
) -> None:
    sent = capture_sends(monkeypatch)
    rng = random.Random(11)
    errors = [int(rng.random() < (0.2 if i < 1000 else 0.5)) for i in range(1500)]
    app = _app(tmp_path, cooldown_s=0)

    async with agent_context(app, "detect_concept_drift") as agent:
        for i, error in enumerate(errors):
            await agent.put(encode(_labeled(i, int(not error), 1)), key=b"dep")
        expected = _river_indices(HDDMA(), errors)
        await _until(
            lambda: (
                len([a for a in sent.values("a.alerts") if a["level"] == "drift"]) == len(expected)
            )
        )

    drifts = [a for a in sent.values("a.alerts") if a["level"] == "drift"]
    assert expected and expected[0] > 1000
    assert [a["position"] for a in drifts] == expected
    assert {a["detector"] for a in drifts} == {"HDDMA"}
    assert drifts[0]["window"]["estimated_by"] == "warning_start"


@pytest.mark.parametrize("batch", [1, 801], ids=["event_by_event", "one_batch"])
async def test_concept_drift_per_model_version_with_warning_first_and_error_windows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lookups: list, batch: int
) -> None:
    sent = capture_sends(monkeypatch)
    rng = random.Random(11)
    errors = [int(rng.random() < (0.05 if i < 400 else 0.4)) for i in range(800)]
    app = _app(
        tmp_path,
        concept_detectors=DDM_SETTING,
        cooldown_s=0,
        error_window_s=100,
        error_hop_window_s=200,
        batch_max_events=batch,
        batch_within_s=30.0,
    )

    async with agent_context(app, "detect_concept_drift") as agent:
        await agent.put(b"not json", key=b"dep")
        for i, error in enumerate(errors):
            await agent.put(encode(_labeled(i, int(not error), 1)), key=b"dep")
        await _until(lambda: len(sent.values("a.deadletter")) == 1)  # sent after its batch

    alerts = sent.values("a.alerts")
    assert [a["position"] for a in alerts if a["level"] == "drift"] == _river_indices(DDM(), errors)
    first_drift = next(i for i, a in enumerate(alerts) if a["level"] == "drift")
    warning, drift = alerts[first_drift - 1], alerts[first_drift]
    assert warning["level"] == "warning"
    assert 400 < warning["position"] < drift["position"]
    assert warning["window"] is None
    window = drift["window"]
    slack = (drift["position"] - warning["position"]) / 15  # the position history's precision
    assert window["estimated_by"] == "warning_start"
    assert warning["position"] - slack <= window["start_position"] <= warning["position"]
    assert _start_time(window) == T0 + window["start_position"] - 1
    assert window["offsets"] == {
        "a.predictions.labeled": {"0": window["start_position"]},  # offset 0: the bad message
        "a.features": {str(p): o for p, o in LOOKED_UP.items()},
    }
    assert [names for _, names in lookups] == [["a.features"]] * len(
        [a for a in alerts if a["level"] == "drift"]
    )
    assert {(a["key"], a["deployment"], a["detector"]) for a in alerts} == {
        ("concept:fraud:1", "dep", "DDM")
    }
    assert len(sent.values("a.deadletter")) == 1
    labels = {"deployment": "dep", "model": "fraud", "version": "1"}
    last_window = errors[700:]
    assert REGISTRY.get_sample_value(
        "driftline_model_error_rate", {**labels, "window": "tumbling_100s"}
    ) == pytest.approx(sum(last_window) / len(last_window))
    assert REGISTRY.get_sample_value(
        "driftline_model_error_rate", {**labels, "window": "hopping_200s"}
    ) == pytest.approx(sum(errors[600:]) / 200)


async def test_error_gauges_split_by_unit_and_drop_a_replaced_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lookups: list
) -> None:
    sent = capture_sends(monkeypatch)
    app = _app(tmp_path, error_window_s=10, error_hop_window_s=20, batch_max_events=1)
    version = {"deployment": "dep", "model": "fraud", "window": "tumbling_10s"}

    def rate(gauge: str, of_version: str) -> float | None:
        return REGISTRY.get_sample_value(gauge, {**version, "version": of_version})

    async with agent_context(app, "detect_concept_drift") as agent:
        for i in range(30):  # version 1 answers classes, wrong every other time
            await agent.put(encode(_labeled(i, i % 2, 0)), key=b"dep")
        await agent.put(encode(_labeled(30, 2.5, 2.0, version="2")), key=b"dep")  # regression
        await _until(lambda: rate("driftline_model_mean_absolute_error", "2") is not None)
        assert rate("driftline_model_error_rate", "1") == pytest.approx(0.5)
        assert rate("driftline_model_mean_absolute_error", "2") == pytest.approx(0.5)
        assert rate("driftline_model_error_rate", "2") is None
        assert rate("driftline_model_mean_absolute_error", "1") is None
        # Version 2 goes on answering past both of version 1's windows: 1 was replaced.
        await agent.put(encode(_labeled(90, 3.0, 2.0, version="2")), key=b"dep")
        await _until(lambda: rate("driftline_model_error_rate", "1") is None)

    assert rate("driftline_model_mean_absolute_error", "2") == pytest.approx(1.0)
    assert not sent.values("a.deadletter")


async def test_a_micro_batch_feeds_each_detector_in_order_and_writes_it_once_in_its_partition(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sent = capture_sends(monkeypatch)
    written: list[tuple[int | None, bytes]] = []
    send_changelog = Collection.send_changelog

    def spy(self: Collection, partition: int | None, key: Any, value: Any, *a: Any, **k: Any):
        if self.name == "feature_to_monitor":
            written.append((partition, key))
        return send_changelog(self, partition, key, value, *a, **k)

    monkeypatch.setattr(Collection, "send_changelog", spy)
    app = _app(tmp_path, batch_max_events=8, batch_within_s=30.0)
    wrong_type = dead_letters_counted("wrong_value_type")
    batch = [  # (feature, partition of its key, value, source offset)
        ("amount", 0, 1.0, 10),
        ("amount", 0, 2.0, 11),
        ("fee", 1, 3.0, 20),
        ("amount", 0, "NL", 12),  # a category where ADWIN takes numbers: dead-lettered alone
        ("fee", 1, 4.0, 21),
        ("amount", 0, 9.0, 10),  # redelivered: counted already
        ("amount", 0, 5.0, 13),
        ("fee", 1, 6.0, 22),
    ]

    async with agent_context(app, "detect_data_drift") as agent:
        for feature, partition, value, offset in batch:
            item = {"stream": "pay", "feature": feature, "value": value, "time": T0 + offset}
            await agent.put(
                orjson.dumps({**item, **read_at(7, offset)}),
                key=f"pay:{feature}".encode(),
                partition=partition,
            )
        await _until(lambda: len(sent.values("a.deadletter")) == 1)  # sent after its batch
        table = app.tables["feature_to_monitor"]
        monitors = {
            key: stored_state("drift", "feature_to_monitor", key, table[key])
            for key in (b"pay:amount", b"pay:fee")
        }

    assert written == [(0, b"pay:amount"), (1, b"pay:fee")]
    assert [m.n_seen for m in monitors.values()] == [3, 3]
    assert [m.applied.offsets for m in monitors.values()] == [
        {"a.features[7]": 13},
        {"a.features[7]": 22},
    ]
    assert [m.detector.detector.estimation for m in monitors.values()] == [8 / 3, 13 / 3]
    letters = sent.values("a.deadletter")
    assert [(x["offset"], x["reason"], x["code"]) for x in letters] == [
        (3, "detector adwin takes numbers, got 'NL'", "wrong_value_type")
    ]
    assert dead_letters_counted("wrong_value_type") == wrong_type + 1
    assert not dead_letters_counted("detector adwin takes numbers, got 'NL'")


def dead_letters_counted(reason: str) -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "driftline_dead_letters"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["reason"] == reason
    )


YEAR_1900 = datetime(1900, 1, 1, tzinfo=UTC).timestamp()
DAY = 86_400.0


@pytest.mark.parametrize("kind", ["data", "concept"])
async def test_an_alert_whose_window_starts_before_1970_still_goes_out_when_its_lookup_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Daily data stamped 1900: the window's start is before the epoch, where aiokafka's
    offsets-for-times refuses the time. Whatever the look-up raises, the alert is sent with its
    start time and the exact offsets its detector knows, and the failure is logged with its id."""
    sent = capture_sends(monkeypatch)

    async def offsets_at_time(
        settings: DriftlineSettings, time: datetime, *topics: Topic
    ) -> dict[str, dict[int, int]]:
        raise ValueError("The target time for partition ... cannot be negative")

    monkeypatch.setattr(services.drift.app, "offsets_at_time", offsets_at_time)
    app = _app(tmp_path, concept_detectors=DDM_SETTING, cooldown_s=0)
    if kind == "data":
        values = _shifted_values()
        async with agent_context(app, "detect_data_drift") as agent:
            for i, value in enumerate(values):
                item = {"stream": "pay", "feature": "amount", "value": value}
                item |= {"time": YEAR_1900 + i * DAY, **read_at(0, i)}
                await agent.put(orjson.dumps(item), key=b"pay:amount")
        expected = _river_indices(ADWIN(delta=0.002), values)
    else:
        rng = random.Random(11)
        errors = [int(rng.random() < (0.05 if i < 400 else 0.4)) for i in range(800)]
        async with agent_context(app, "detect_concept_drift") as agent:
            for i, error in enumerate(errors):
                record = _labeled(i, int(not error), 1)
                at = datetime.fromtimestamp(YEAR_1900 + i * DAY, UTC)
                record = record.model_copy(update={"event_time": at, "label_time": at})
                await agent.put(encode(record), key=b"dep")
        expected = _river_indices(DDM(), errors)

    drifts = [a for a in sent.values("a.alerts") if a["level"] == "drift"]
    assert expected and [a["position"] for a in drifts] == expected
    own_topic = "a.features" if kind == "data" else "a.predictions.labeled"
    for alert in drifts:
        window = alert["window"]
        assert _start_time(window) < 0, "the window starts before 1970"
        assert list(window["offsets"]) == [own_topic], "exact offsets only, none looked up"
    errors = [r for r in caplog.records if r.levelname == "ERROR"]  # structlog: msg is a dict
    assert [r.msg["alert_id"] for r in errors] == [a["alert_id"] for a in drifts]
    assert all(r.exc_info is not None for r in errors)


async def test_a_failing_report_loses_none_of_its_batchs_alerts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lookups: list, caplog: pytest.LogCaptureFixture
) -> None:
    """The first alert of a micro-batch fails to send: no detector is saved, the events are
    handled again one by one and fire every alert of the batch, with the ids they would have
    had (detectors were written before the report, and the replay found them all seen)."""
    sent = capture_sends(monkeypatch)
    send_event = services.drift.app.send_event
    failed: list[str] = []

    async def send_failing_once(topic: Any, service: str, key: str, event: Any) -> None:
        if topic.get_topic_name() == "a.alerts" and not failed:
            failed.append(event.alert_id)
            raise RuntimeError("broker said no")
        await send_event(topic, service, key, event)

    monkeypatch.setattr(services.drift.app, "send_event", send_failing_once)
    caplog.set_level("INFO")
    values = _shifted_values()
    app = _app(tmp_path, cooldown_s=0, batch_max_events=len(values), batch_within_s=30.0)
    expected = _river_indices(ADWIN(delta=0.002), values)

    async with agent_context(app, "detect_data_drift") as agent:
        for i, value in enumerate(values):
            item = {"stream": "pay", "feature": "amount", "value": value, "time": T0 + i}
            await agent.put(orjson.dumps({**item, **read_at(0, i)}), key=b"pay:amount")
        await _until(lambda: len(sent.values("a.alerts")) >= len(expected))
        stored = app.tables["feature_to_monitor"][b"pay:amount"]
        monitor = stored_state("drift", "feature_to_monitor", b"pay:amount", stored)

    alerts = sent.values("a.alerts")
    assert [a["position"] for a in alerts] == expected
    assert [a["alert_id"] for a in alerts] == [
        alert_id_for("data:pay:amount", None, "ADWIN", "drift", p) for p in expected
    ]
    assert failed == [alerts[0]["alert_id"]], "the failed alert is the one re-sent first"
    logged = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert [
        (m["alert_id"], m["key"], m["alert_level"], m["position"])
        for m in logged
        if m["event"] == "alert sent"
    ] == [(a["alert_id"], a["key"], a["level"], a["position"]) for a in alerts]
    assert monitor.n_seen == len(values)
    assert sent.values("a.deadletter") == []
