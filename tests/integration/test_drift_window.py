"""Fresh-data windows on the real broker (#9): seeded switches on ``predictions.labeled`` (a
model's error rate jumps from 5 % to 50 %) and on ``features`` (a feature's mean shifts). The
drift alert's window starts where the detector places the new behaviour, at the exact offset of
that value in the topic the detector reads, with the other topics' offsets at the first record
stamped at or after the window's start time.

Some labeled records carry no answer and other streams' events share the features partitions,
so a value's position in its detector's stream and its offset differ."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from river.drift import ADWIN
from river.drift.binary import HDDMA

from shared.admin import offsets_at_time
from shared.events import FeatureEvent, LabeledPrediction
from shared.topics import ALERTS, FEATURES, PREDICTIONS_LABELED
from tests.support.kafka import Record, consume_until, produce
from tests.support.pipeline import Pipeline
from tests.support.records import champion_labeled

pytestmark = pytest.mark.integration

T0 = float(int(time.time()) - 6 * 3600)
"""Event times (and so record timestamps) start a few hours ago: within the topics' retention."""
N_LABELED, CONCEPT_SWITCH = 1500, 600
"""Labeled events, and the first one whose answer is wrong half the time instead of 5 %."""
N_FEATURES, DATA_SWITCH = 900, 400
"""Feature events of stream ``pay``, and the first one whose ``amount`` has mean 2 instead of 0."""
PRECISION = 15
"""A window starts at most (alert position - estimated start) / 15 values early: the position
history's bound with its default 16 checkpoints per level."""


def _labeled(seed: int = 3) -> list[LabeledPrediction]:
    """Every 7th record has no answer (a variant that did not answer): no value for the detector."""
    rng = random.Random(seed)
    records = []
    for i in range(N_LABELED):
        label = rng.random() < 0.5
        silent = i % 7 == 6
        wrong = not silent and rng.random() < (0.05 if i < CONCEPT_SWITCH else 0.5)
        records.append(
            champion_labeled(
                i,
                output=None if silent else label != wrong,
                label=label,
                at=T0 + i,
                model=("fraud", "1"),
                deployment="fraud-dep",
                stream="pay",
                entities=5,
            )
        )
    return records


def _features(seed: int = 4) -> list[FeatureEvent]:
    """Stream ``pay`` from one entity (one partition, one order), with an event of stream
    ``other`` of the same entity after every third one."""
    rng = random.Random(seed)
    events = []
    for i in range(N_FEATURES):
        mean = 2.0 if i >= DATA_SWITCH else 0.0
        events.append(
            FeatureEvent(
                event_id=f"f-{i}",
                stream="pay",
                entity_id="u1",
                event_time=T0 + i,
                features={"amount": rng.gauss(mean, 1.0)},
            )
        )
        if i % 3 == 0:
            events.append(
                FeatureEvent(
                    event_id=f"o-{i}",
                    stream="other",
                    entity_id="u1",
                    event_time=T0 + i,
                    features={"amount": rng.gauss(0.0, 1.0)},
                )
            )
    return events


def _errors(records: list[LabeledPrediction]) -> list[tuple[int, int]]:
    """(record index, error) of the records the concept detector sees, in order."""
    return [
        (i, int(r.outcomes[0].output != r.label))
        for i, r in enumerate(records)
        if r.outcomes[0].output is not None
    ]


def _hddm_a_drift_and_warning_onset(errors: list[int], after: int) -> tuple[int, int]:
    """Plain River's HDDM_A, the service's default for classifiers: the first drift after
    position `after`, and where the warning zone it came from was entered."""
    hddm, onset, inside = HDDMA(), None, False
    for position, error in enumerate(errors, start=1):
        hddm.update(error)
        if hddm.drift_detected and position > after:
            assert onset is not None, "this seed's drift must come out of a warning zone"
            return position, onset
        if hddm.drift_detected or not hddm.warning_detected:
            onset = None
        elif not inside:
            onset = position
        inside = hddm.warning_detected and not hddm.drift_detected
    raise AssertionError("HDDM_A never fires after the switch on this seed")


def _adwin_drift_and_window_start(values: list[float], after: int) -> tuple[int, int]:
    """Plain River: the first drift after position `after`, and the first position of the window
    ADWIN keeps after its cut."""
    adwin = ADWIN()
    for position, value in enumerate(values, start=1):
        adwin.update(value)
        if adwin.drift_detected and position > after:
            return position, position - int(adwin.width) + 1
    raise AssertionError("ADWIN never fires after the switch on this seed")


def _stamped_at_or_after(
    records: list[Record], topic: str, partitions: int, start: datetime
) -> dict[int, int]:
    """Per partition of `topic`, the offset of the first record whose event time (its timestamp
    here) is at or after `start`, or the partition's end: what offsets for times must answer."""
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        if record.topic == topic:
            by_partition[record.partition].append(record)
    offsets = {}
    for partition in range(partitions):
        stored = sorted(by_partition[partition], key=lambda r: r.offset)
        late = [r.offset for r in stored if _event_time(r) >= start]
        offsets[partition] = late[0] if late else len(stored)
    return offsets


def _event_time(record: Record) -> datetime:
    return datetime.fromisoformat(record.json()["event_time"])


def _window(alert: dict) -> tuple[int, datetime, str, dict[str, dict[int, int]]]:
    window = alert["window"]
    offsets = {
        topic: {int(p): o for p, o in partitions.items()}
        for topic, partitions in window["offsets"].items()
    }
    start_time = datetime.fromisoformat(window["start_time"])
    return window["start_position"], start_time, window["estimated_by"], offsets


def _assert_close_before(start: int, estimate: int, end: int) -> None:
    """Never after the detector's estimate, and at most the history's precision before it."""
    assert estimate - (end - estimate) / PRECISION <= start <= estimate


async def test_drift_alerts_carry_the_window_of_a_seeded_switch(pipeline: Pipeline) -> None:
    labeled, features = _labeled(), _features()
    errors = _errors(labeled)
    switch = next(p for p, (i, _) in enumerate(errors, start=1) if i >= CONCEPT_SWITCH)
    concept_at, warned_at = _hddm_a_drift_and_warning_onset([e for _, e in errors], after=switch)
    pay = [e for e in features if e.stream == "pay"]
    data_at, adwin_start = _adwin_drift_and_window_start(
        [e.features["amount"] for e in pay], after=DATA_SWITCH
    )
    labeled_topic, features_topic = pipeline.topic(PREDICTIONS_LABELED), pipeline.topic(FEATURES)
    alerts_topic = pipeline.topic(ALERTS)
    partitions = pipeline.settings.topic_partitions

    # Both topics are written before the worker starts: an alert's window looks up offsets for
    # times in every topic, and a topic still being written has no answer yet for later times.
    await produce(
        pipeline.bootstrap,
        labeled_topic,
        [(r.deployment, r) for r in labeled],
        timestamps=[r.event_time.timestamp() for r in labeled],
    )
    await produce(
        pipeline.bootstrap,
        features_topic,
        [(e.entity_id, e) for e in features],
        timestamps=[e.event_time.timestamp() for e in features],
    )
    pipeline.start("drift", DRIFTLINE_DRIFT_COOLDOWN_S="0")

    def drift_at(records: list[Record], key: str, position: int) -> dict | None:
        return next(
            (
                a
                for r in records
                if r.topic == alerts_topic
                and (a := r.json())["key"] == key
                and a["level"] == "drift"
                and a["position"] == position
            ),
            None,
        )

    records = await consume_until(
        pipeline.bootstrap,
        [alerts_topic, labeled_topic, features_topic],
        lambda rs: (
            drift_at(rs, "concept:fraud:1", concept_at) is not None
            and drift_at(rs, "data:pay:amount", data_at) is not None
            and sum(r.topic != alerts_topic for r in rs) == len(labeled) + len(features)
        ),
        timeout=180,
    )
    stored = [r for r in records if r.topic != alerts_topic]

    concept = drift_at(records, "concept:fraud:1", concept_at)
    assert concept is not None and concept["detector"] == "HDDMA", "the default for classifiers"
    start, start_time, estimated_by, offsets = _window(concept)
    assert estimated_by == "warning_start"
    _assert_close_before(start, warned_at, concept_at)
    assert switch - (concept_at - switch) <= start <= concept_at, "within the detector's delay"
    first = labeled[errors[start - 1][0]]
    first_record = next(
        r for r in stored if r.topic == labeled_topic and r.json()["event_id"] == first.event_id
    )
    assert start_time == first.event_time
    assert offsets == {
        labeled_topic: {first_record.partition: first_record.offset},
        features_topic: _stamped_at_or_after(stored, features_topic, partitions, start_time),
    }
    assert first_record.offset > start - 1, "silent records make offsets differ from positions"

    data = drift_at(records, "data:pay:amount", data_at)
    assert data is not None
    start, start_time, estimated_by, offsets = _window(data)
    assert estimated_by == "detector_window"
    # River's ADWIN cuts at bucket edges and only while the cut stays significant, so its window
    # may reach back well before the switch: the window is its estimate, whatever its delay.
    _assert_close_before(start, adwin_start, data_at)
    first_record = next(
        r for r in stored if r.topic == features_topic and r.json()["event_id"] == f"f-{start - 1}"
    )
    assert start_time == pay[start - 1].event_time
    assert offsets == {
        features_topic: {
            **_stamped_at_or_after(stored, features_topic, partitions, start_time),
            first_record.partition: first_record.offset,
        },
        labeled_topic: _stamped_at_or_after(stored, labeled_topic, partitions, start_time),
    }
    assert first_record.offset > start - 1, "other events make offsets differ from positions"


YEAR_1900 = datetime(1900, 1, 1, tzinfo=UTC)


async def test_offsets_at_a_time_before_1970_are_every_partitions_first_record(
    pipeline: Pipeline,
) -> None:
    """The broker takes no negative times (aiokafka raises before asking): any time before the
    epoch looks up timestamp 0, where every record is at or after it."""
    features_topic, labeled_topic = pipeline.topic(FEATURES), pipeline.topic(PREDICTIONS_LABELED)
    events = [
        FeatureEvent(
            event_id=f"y-{i}",
            stream="coal",
            entity_id=f"u{i}",
            event_time=YEAR_1900 + timedelta(days=365 * i),
            features={"tonnes": float(i)},
        )
        for i in range(20)
    ]
    await produce(pipeline.bootstrap, features_topic, [(e.entity_id, e) for e in events])
    records = await consume_until(pipeline.bootstrap, [features_topic], lambda rs: len(rs) == 20)
    assert {r.partition for r in records} == set(range(pipeline.settings.topic_partitions))

    found = await offsets_at_time(pipeline.settings, YEAR_1900, FEATURES, PREDICTIONS_LABELED)
    later = await offsets_at_time(
        pipeline.settings, datetime.now(UTC) + timedelta(hours=1), FEATURES
    )

    partitions = range(pipeline.settings.topic_partitions)
    assert found == {
        features_topic: dict.fromkeys(partitions, 0),
        labeled_topic: dict.fromkeys(partitions, 0),
    }
    ends = {p: sum(r.partition == p for r in records) for p in partitions}
    assert later == {features_topic: ends}, "a time after every record: each partition's end"


async def test_a_data_drift_of_yearly_data_stamped_from_1900_reaches_the_alerts_topic(
    pipeline: Pipeline,
) -> None:
    """A series of one value a day from 1900 (records stamped by the producer's clock, as
    ingestion writes them): the drift alert's window starts in 1900, and still comes out with
    the exact offset of its first value and the other partitions' offsets looked up."""
    rng = random.Random(4)
    days = [YEAR_1900 + timedelta(days=i) for i in range(N_FEATURES)]
    events = [
        FeatureEvent(
            event_id=f"d-{i}",
            stream="coal",
            entity_id="mine",
            event_time=day,
            features={"tonnes": rng.gauss(2.0 if i >= DATA_SWITCH else 0.0, 1.0)},
        )
        for i, day in enumerate(days)
    ]
    data_at, adwin_start = _adwin_drift_and_window_start(
        [e.features["tonnes"] for e in events], after=DATA_SWITCH
    )
    features_topic, labeled_topic = pipeline.topic(FEATURES), pipeline.topic(PREDICTIONS_LABELED)
    alerts_topic = pipeline.topic(ALERTS)

    pipeline.start("drift", DRIFTLINE_DRIFT_COOLDOWN_S="0")
    await produce(pipeline.bootstrap, features_topic, [(e.entity_id, e) for e in events])

    def drift(records: list[Record]) -> dict | None:
        return next(
            (
                a
                for r in records
                if r.topic == alerts_topic
                and (a := r.json())["key"] == "data:coal:tonnes"
                and a["level"] == "drift"
                and a["position"] == data_at
            ),
            None,
        )

    records = await consume_until(
        pipeline.bootstrap,
        [alerts_topic, features_topic],
        lambda rs: (
            drift(rs) is not None and sum(r.topic == features_topic for r in rs) == N_FEATURES
        ),
        timeout=180,
    )
    alert = drift(records)
    assert alert is not None
    start, start_time, estimated_by, offsets = _window(alert)
    assert estimated_by == "detector_window" and start_time.year == 1900
    _assert_close_before(start, adwin_start, data_at)
    assert start_time == days[start - 1]
    first_record = next(
        r for r in records if r.topic == features_topic and r.json()["event_id"] == f"d-{start - 1}"
    )
    partitions = range(pipeline.settings.topic_partitions)
    assert offsets == {
        features_topic: {
            **dict.fromkeys(partitions, 0),
            first_record.partition: first_record.offset,
        },
        labeled_topic: dict.fromkeys(partitions, 0),
    }
