"""What the demo's observer counts from the topics it watches, and the replay waiting on its
backlog (a stand-in producer: the pacing, not Kafka, is under test)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.demo.observer import DemoObserver
from services.demo.runner import Demo, DemoConfig
from services.demo.scenario import Scenario
from shared.events import Prediction, VariantOutput
from shared.topics import EVENTS_RAW, FEEDBACK


def _prediction(event_id: str, variant: str, role: str) -> Prediction:
    return Prediction(
        prediction_id=f"{event_id}-{variant}",
        event_id=event_id,
        entity_id="applicant-1",
        stream="loans",
        deployment="loans",
        outcome=VariantOutput(
            variant=variant,
            role=role,
            model_name="m",
            model_version="1",
            output=1,
            served=role == "champion",
        ),
        features={"amount": 1.0},
        latency_ms=1.0,
        event_time=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_the_backlog_is_the_events_sent_that_the_champion_has_not_answered() -> None:
    observer = DemoObserver(sent=5)
    for event_id in ("e0", "e1"):
        observer.on_prediction(_prediction(event_id, "champion", "champion"))
        observer.on_prediction(_prediction(event_id, "river-hat", "shadow"))

    assert (observer.predictions, observer.answered, observer.backlog) == (4, 2, 3)


class _Producer:
    """Stands in for the demo's producer: records the time and topic of each send."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, str]] = []

    async def start(self) -> None:
        return None

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((time.monotonic(), topic))

    async def stop(self) -> None:
        return None


async def test_the_replay_waits_while_the_champion_is_behind_and_keeps_sending_labels(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scenario = Scenario(n_events=30, drift_at=10, rate=200.0, label_delay=0.01)
    demo = Demo(DemoConfig(scenario=scenario, results_dir=tmp_path, max_backlog=5), print)
    producer = _Producer()
    monkeypatch.setattr("services.demo.runner.durable_producer", lambda *_, **__: producer)
    monkeypatch.setattr(demo, "_keep_replaying", lambda index, seconds: index < 30)
    events, labels = demo.topic(EVENTS_RAW), demo.topic(FEEDBACK)

    async def catch_up_later() -> float:
        while demo.observer.sent < 6:  # six unanswered: one more than max_backlog
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        demo.observer.answered = 30
        return time.monotonic()

    released_at, _ = await asyncio.gather(catch_up_later(), demo._replay())

    sends = [(at, topic) for at, topic in producer.sent]
    event_times = [at for at, topic in sends if topic == events]
    assert len(event_times) == 30 and sum(topic == labels for _, topic in sends) == 30
    assert event_times[5] < released_at <= event_times[6], "the seventh waited for the champion"
    assert any(topic == labels and event_times[5] < at < released_at for at, topic in sends)
    assert event_times[7] - event_times[6] < 0.2, "then on at the rate, not in a burst"
