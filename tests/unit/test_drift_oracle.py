"""The chaos oracle's reference for the drift detectors (`loadtest.drift_oracle`): each
provenance fed once in its partition's order, and a stored detector that counted a value twice,
or out of order, told apart from one that went through its table's pickles."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime

import orjson

from loadtest.drift_oracle import differing, expected_detectors
from loadtest.measure import OutputRecord
from services.drift.logic import Monitor, data_monitor
from shared.settings import DriftSettings

OWN = DriftSettings()
TOPIC = "features"
KEY = b"s:x"
T0 = 1_780_000_000.0


def _values(n: int = 600, shift_at: int = 300) -> list[float]:
    rng = random.Random(3)
    return [rng.gauss(0.0 if i < shift_at else 3.0, 1.0) for i in range(n)]


def _record(i: int, value: float, offset: int) -> OutputRecord:
    item = {
        "stream": "s",
        "feature": "x",
        "value": value,
        "time": T0 + i,
        "partition": 0,
        "offset": i,
        "lineage": "raw[0]",
        "lineage_offset": i,
    }
    return OutputRecord(0, orjson.dumps(item), KEY, partition=0, offset=offset)


def _fed(values: list[float]) -> tuple[Monitor, list[str]]:
    """A monitor built as the service builds it, fed `values` directly; its sent alert ids."""
    monitor = data_monitor(OWN, "s", "x", False, TOPIC)
    sent = []
    for i, value in enumerate(values):
        finding = monitor.update(value, datetime.fromtimestamp(T0 + i, UTC), 0, i)
        if finding is not None and finding.sent:
            sent.append(finding.alert.alert_id)
    return monitor, sent


def test_a_replayed_suffix_is_fed_once_and_the_alerts_are_those_of_the_input() -> None:
    values = _values()
    records = [_record(i, v, offset=i) for i, v in enumerate(values)]
    replay = [_record(i, v, offset=len(values) + k) for k, (i, v) in enumerate(
        list(enumerate(values))[400:450])]  # fmt: skip
    shuffled = random.Random(1).sample(records + replay, len(records) + len(replay))

    expected = expected_detectors(OWN, shuffled, [], TOPIC, "labeled")

    monitor, sent = _fed(values)
    assert sent, "the shift fires the detector"
    assert list(expected.sent) == sent
    assert expected.data[KEY].n_seen == len(values)
    stored = pickle.loads(pickle.dumps(monitor))  # as the service's table gives it back
    assert differing(expected.data, {KEY: stored}) == []


def test_a_value_counted_twice_or_out_of_order_is_a_difference() -> None:
    values = _values()
    expected = expected_detectors(
        OWN, [_record(i, v, offset=i) for i, v in enumerate(values)], [], TOPIC, "labeled"
    )
    twice, _ = _fed(values[:350] + values[349:])
    swapped = list(values)
    swapped[100], swapped[500] = swapped[500], swapped[100]
    reordered, _ = _fed(swapped)

    assert differing(expected.data, {KEY: twice}) == ["s:x: 601 values, not 600"]
    assert differing(expected.data, {KEY: reordered}) == ["s:x: detector state differs"]
    assert differing(expected.data, {}) == ["s:x: missing"]
