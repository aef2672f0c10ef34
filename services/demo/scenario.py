"""The demo's data: a seeded Agrawal loan stream whose labelling rule switches mid-stream.

Agrawal's classification function 0 labels by age and salary; function 2 by age, salary and
commission. A batch model trained on the first part is right about 100 % of the time before the
switch and about half of the time after it: a clear, known concept drift.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from river.datasets import synth

from shared.events import Feedback, RawEvent

STREAM = "loans"
FEATURES = (
    "salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan",
)  # fmt: skip


@dataclass(frozen=True)
class Scenario:
    """What the demo replays, and how fast."""

    n_events: int = 6000
    """Events in the stream."""
    drift_at: int = 3000
    """Index of the first event labelled by the new rule."""
    n_train: int = 1000
    """Events before the replay that train the first champion."""
    rate: float = 60.0
    """Events per second during the replay."""
    label_delay: float = 2.0
    """Seconds between an event and its label."""
    n_entities: int = 500
    """Distinct applicants (entity ids)."""
    seed: int = 42
    """Seed of the stream."""
    tail_after_switch: int = 600
    """Events replayed after the champion switch, past `n_events` if need be, so the retrained
    champion's recovery shows; the replay never runs past twice `n_events`."""
    malformed_every: int = 1000
    """After every so many events one malformed record goes to the raw topic too (see
    `malformed_record`): ingestion dead-letters it with its reason and the stream goes on."""

    def index_at(self, start: datetime, event_time: datetime) -> int:
        """Which event of a replay begun at `start` carries `event_time`."""
        return round((event_time - start).total_seconds() * self.rate)


@dataclass(frozen=True)
class Labeled:
    """One replayed event with its ground truth."""

    index: int
    event: RawEvent
    label: bool
    label_time: datetime

    def feedback(self) -> Feedback:
        """The label as a feedback record."""
        return Feedback(event_id=self.event.event_id, label=self.label, label_time=self.label_time)


def training_rows(scenario: Scenario) -> tuple[list[dict[str, float]], list[bool]]:
    """Pre-drift rows for the first champion (drawn from a stream seeded apart from the replay)."""
    rows = list(
        synth.Agrawal(classification_function=0, seed=scenario.seed + 1).take(scenario.n_train)
    )
    return [{name: float(x[name]) for name in FEATURES} for x, _ in rows], [
        bool(y) for _, y in rows
    ]


def malformed_record(index: int) -> bytes:
    """The `index`-th malformed raw record, taking turns: not JSON, a declared feature missing,
    a feature that is text; none is an event, each a dead letter with its reason."""
    kind = index % 3
    if kind == 0:
        return b'{"event_id": "truncated-' + str(index).encode() + b'", "data": {"salar'
    data: dict[str, object] = dict.fromkeys(FEATURES, 1.0)
    if kind == 1:
        del data["salary"]
    else:
        data["age"] = "forty"
    return orjson.dumps(
        {
            "event_id": f"malformed-{index}",
            "stream": STREAM,
            "entity_id": "applicant-malformed",
            "event_time": datetime.now(UTC).isoformat(),
            "data": data,
        }
    )


def replay(scenario: Scenario, start: datetime) -> Iterator[Labeled]:
    """The replayed stream from `start`, without end: rule 0 up to `drift_at`, rule 2 after, at
    the scenario's rate in event time, each label `label_delay` seconds after its event."""
    before = synth.Agrawal(classification_function=0, seed=scenario.seed)
    after = synth.Agrawal(classification_function=2, seed=scenario.seed + 2)
    source = iter(before)
    for index in itertools.count():
        if index == scenario.drift_at:
            source = iter(after)
        x, y = next(source)
        event = RawEvent(
            event_id=f"loan-{scenario.seed}-{index}",
            stream=STREAM,
            entity_id=f"applicant-{index % scenario.n_entities}",
            event_time=start + timedelta(seconds=index / scenario.rate),
            data={name: float(x[name]) for name in FEATURES},
        )
        label_time = event.event_time + timedelta(seconds=scenario.label_delay)
        yield Labeled(index, event, bool(y), label_time)
