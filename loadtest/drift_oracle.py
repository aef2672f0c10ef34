"""What the drift detectors should hold after a run, for the chaos oracle (issue 15).

The detectors' input is on the broker: the drift worker's ``feature-values`` topic (one record
per value, keyed by ``stream:feature``) and ``predictions.labeled``. A run with faults may hold
records there twice (a replay upstream re-sends them at new offsets, with the provenance of the
first). `expected_detectors` feeds each key's values, in the order its partition holds them and
each provenance once, to a fresh monitor built as the service builds it (`data_monitor`,
`concept_monitor`): what a drift worker that never failed would hold after the same input, and
the alerts it would have sent. The chaos run compares that with the detectors the service
stored and the alerts it sent, by id.

What this does not cover: the order of the values itself. With one partition per topic it is
the events' order in any run; with several, Kafka orders only within a partition, so even two
runs without faults feed a detector in different orders. And concept detectors watch the online
model's errors, which depend on when its snapshots reached the router.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from loadtest.measure import OutputRecord
from services.drift.logic import (
    Monitor,
    concept_key,
    concept_monitor,
    data_monitor,
    error_of,
    task_of,
)
from shared.events import DriftAlert, LabeledPrediction, decode
from shared.replays import lineage_of
from shared.settings import DriftSettings


@dataclass
class Expected:
    """The detectors a drift worker without faults would hold, by table key, and the ids of the
    alerts it would have sent."""

    data: dict[bytes, Monitor] = field(default_factory=dict)
    concept: dict[bytes, Monitor] = field(default_factory=dict)
    sent: dict[str, DriftAlert] = field(default_factory=dict)
    """The alerts the gates let out, by id."""


def in_topic_order(records: Iterable[OutputRecord]) -> list[OutputRecord]:
    """`records` by partition, then offset: the order a consumer of one partition sees."""
    return sorted(records, key=lambda r: (r.partition, r.offset))


def expected_detectors(
    own: DriftSettings,
    feature_values: Iterable[OutputRecord],
    labeled: Iterable[OutputRecord],
    features_topic: str,
    labeled_topic: str,
) -> Expected:
    """Feed every value of the drift worker's input once, in its partition's order, to fresh
    monitors; what they hold and the alerts they let out."""
    expected = Expected()
    applied: set[tuple[bytes, str, int]] = set()

    def feed(monitor: Monitor, key: bytes, value: float | str, time: datetime,
             read_at: tuple[int, int], lineage: tuple[str, int]) -> None:  # fmt: skip
        if (key, *lineage) in applied:
            return
        applied.add((key, *lineage))
        finding = monitor.update(value, time, *read_at)
        if finding is not None and finding.sent:
            expected.sent[finding.alert.alert_id] = finding.alert

    for record in in_topic_order(feature_values):
        item = orjson.loads(record.value)
        key, value = record.key or b"", item["value"]
        if key not in expected.data:
            expected.data[key] = data_monitor(
                own, item["stream"], item["feature"], isinstance(value, str), features_topic
            )
        time = datetime.fromtimestamp(item["time"], UTC)
        read_at = (item["partition"], item["offset"])
        feed(
            expected.data[key], key, value, time, read_at, (item["lineage"], item["lineage_offset"])
        )
    for record in in_topic_order(labeled):
        prediction = decode(LabeledPrediction, record.value, labeled_topic)
        lineage = lineage_of(prediction.provenance, labeled_topic, record.partition, record.offset)
        task = task_of(prediction.label)
        for outcome in prediction.outcomes:
            if outcome.output is None:
                continue
            key = concept_key(prediction.deployment, outcome)
            if key not in expected.concept:
                expected.concept[key] = concept_monitor(
                    own, prediction.deployment, prediction.stream, outcome, task, labeled_topic
                )
            error = error_of(outcome, prediction.label, task)
            read_at = (record.partition, record.offset)
            feed(expected.concept[key], key, error, prediction.event_time, read_at, lineage)
    return expected


def differing(expected: dict[bytes, Monitor], stored: dict[bytes, Monitor]) -> list[str]:
    """The keys whose stored monitor does not hold what the expected one does: the values it
    counted and its detector's whole state (pickled), each key with how it differs."""
    wrong = []
    for key in expected.keys() | stored.keys():
        want, have = expected.get(key), stored.get(key)
        if want is None or have is None:
            wrong.append(f"{key.decode()}: {'missing' if have is None else 'unexpected'}")
        elif want.n_seen != have.n_seen:
            wrong.append(f"{key.decode()}: {have.n_seen:,} values, not {want.n_seen:,}")
        elif _pickled(want.detector) != pickle.dumps(have.detector):
            wrong.append(f"{key.decode()}: detector state differs")
    return sorted(wrong)


def _pickled(detector: object) -> bytes:
    """`detector` pickled as a restored one pickles: a detector stored and loaded again shares
    fewer objects than one never stored (River's ADWIN pickles a few more bytes after a
    round trip), so the comparison is between round-tripped states."""
    return pickle.dumps(pickle.loads(pickle.dumps(detector)))
