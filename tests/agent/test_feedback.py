"""The feedback agent under Faust's test context: predictions and feedback of one partition
joined in order, expiry on the advancing watermark, dead letters, no broker."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

import shared.delivery
from services.feedback.app import build
from services.feedback.logic import JoinState
from shared.delivery import OutputsLostError
from shared.events import Feedback, encode
from shared.settings import DriftlineSettings, FeedbackSettings
from tests.support.faust_doubles import (
    SentRecords,
    agent_context,
    capture_sends,
    isolate_prometheus,
    put_from,
)
from tests.support.records import fraud_prediction

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
PREDICTIONS, FEEDBACK = "a.predictions", "a.feedback"


def prediction(event_id: str, at: float, variant: str = "champion") -> bytes:
    return encode(fraud_prediction(event_id, at, variant))


def feedback(event_id: str, label: Any = True) -> bytes:
    return encode(Feedback(event_id=event_id, label=label))


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> SentRecords:
    isolate_prometheus(monkeypatch)
    return capture_sends(monkeypatch)


def feedback_app(tmp_path: Path) -> Any:
    return build(
        DriftlineSettings(data_dir=tmp_path, topic_prefix="a."),
        FeedbackSettings(
            prediction_ttl_s=100,
            early_feedback_ttl_s=20,
            remember_s=500,
            sweep_every_s=1,
            batch_max_events=1,  # each message its own batch: the table is read between them
        ),
    )


async def test_late_early_duplicate_expired_and_unknown_feedback(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = feedback_app(tmp_path)
    expired_before = expired_count()
    async with agent_context(app, "join_feedback_to_predictions") as agent:

        async def put(topic: str, key: str, value: bytes) -> None:
            await put_from(agent, topic, value, key=key.encode())

        await put(PREDICTIONS, "late", prediction("late", T0))
        await put(PREDICTIONS, "late", prediction("late", T0, variant="shadow"))
        await put(FEEDBACK, "early", feedback("early"))
        await put(PREDICTIONS, "early", prediction("early", T0 + 1))
        await put(FEEDBACK, "late", feedback("late"))
        await put(FEEDBACK, "late", feedback("late", label=False))
        await put(PREDICTIONS, "gone", prediction("gone", T0 + 2))
        await put(FEEDBACK, "nobody", feedback("nobody"))
        await put(PREDICTIONS, "tick", prediction("tick", T0 + 200))
        await put(FEEDBACK, "gone", feedback("gone"))
        await put(FEEDBACK, "bad", b"{not json")
        remembered = table_keys(app)
        await put(PREDICTIONS, "much-later", prediction("much-later", T0 + 1000))

    labeled = sent.values("a.predictions.labeled")
    assert [(r["event_id"], [o["variant"] for o in r["outcomes"]]) for r in labeled] == [
        ("early", ["champion"]),
        ("late", ["champion", "shadow"]),
    ]
    assert sent.keys("a.predictions.labeled") == [b"fraud", b"fraud"]
    reasons = sorted(letter["reason"].split(":")[0] for letter in sent.values("a.deadletter"))
    assert reasons == ["bad event on a.feedback", "feedback past expiry", "unknown event"]
    assert remembered == [b"early", b"gone", b"late", b"tick"]
    assert table_keys(app) == [b"much-later"]
    assert expired_count() - expired_before == 2
    assert (
        REGISTRY.get_sample_value(
            "driftline_table_entries", {"service": "feedback", "table": "event_to_join"}
        )
        == 1
    )


def table_keys(app: Any) -> list[bytes]:
    """The join table's event ids (not the watermarks)."""
    return sorted(k for k in app.tables["event_to_join"] if not k.startswith(b"\x00"))


def expired_count() -> float:
    labels = {"deployment": "fraud", "model": "fraud-model"}
    return REGISTRY.get_sample_value("driftline_expired_predictions_total", labels) or 0.0


async def test_events_stamped_before_1970_are_joined_not_expired_on_arrival(
    sent: SentRecords, tmp_path: Path
) -> None:
    """Yearly data stamped 1900 has negative epoch times: the watermark starts at the first
    prediction's time, not at 0, which would expire every such prediction as it arrives."""
    app = feedback_app(tmp_path)
    year_1900 = datetime(1900, 1, 1, tzinfo=UTC).timestamp()
    async with agent_context(app, "join_feedback_to_predictions") as agent:
        for year in range(3):
            event_id = f"y{year}"
            at = year_1900 + year * 365 * 86400
            await put_from(agent, PREDICTIONS, prediction(event_id, at), key=event_id.encode())
            await put_from(agent, FEEDBACK, feedback(event_id), key=event_id.encode())

    labeled = sent.values("a.predictions.labeled")
    assert [r["event_id"] for r in labeled] == ["y0", "y1", "y2"]
    assert sent.values("a.deadletter") == []


async def test_labeled_records_are_delivered_before_the_join_state_that_records_them(
    sent: SentRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the two must not leave the event labeled with its record lost: the
    state is written only after the barrier, so a batch whose records are lost is replayed
    against the state before it and sends the same record (same provenance) again."""
    app = feedback_app(tmp_path)
    table = app.tables["event_to_join"]
    written: list[tuple[bytes, str]] = []
    on_key_set = table.on_key_set

    def record_write(key: bytes, value: bytes) -> None:
        if not key.startswith(b"\x00"):
            written.append((key, JoinState.model_validate_json(value).status))
        on_key_set(key, value)

    lose_outputs = False
    at_barrier: list[tuple[int, list[tuple[bytes, str]]]] = []

    async def delivered(app: Any) -> None:
        at_barrier.append((len(sent.values("a.predictions.labeled")), list(written)))
        if lose_outputs:
            raise OutputsLostError("lost")

    monkeypatch.setattr(table, "on_key_set", record_write)
    monkeypatch.setattr(shared.delivery, "outputs_delivered", delivered)
    async with agent_context(app, "join_feedback_to_predictions") as agent:
        await put_from(agent, PREDICTIONS, prediction("e1", T0), key=b"e1")
        async with asyncio.timeout(10):
            while not written:  # the batch is handled after `put_from` returns
                await asyncio.sleep(0.01)
        lose_outputs = True
        await put_from(agent, FEEDBACK, feedback("e1"), key=b"e1")
        async with asyncio.timeout(10):
            while agent._crash_reason is None:  # the batch's outputs were lost
                await asyncio.sleep(0.01)

    assert at_barrier == [(0, []), (1, [(b"e1", "pending")])]
    assert written == [(b"e1", "pending")]  # a replayed feedback labels it and sends it again
    [record] = sent.values("a.predictions.labeled")
    assert record["provenance"] == {"topic": FEEDBACK, "partition": 0, "offset": 1}


async def test_a_prediction_with_nan_probabilities_is_refused_and_the_join_goes_on(
    sent: SentRecords, tmp_path: Path
) -> None:
    """Stored, a NaN probability became null in the join table and failed every later sweep of
    the partition: nothing joined or expired again. It is refused at decode now."""
    app = feedback_app(tmp_path)
    poisoned = json.loads(prediction("nan", T0))
    poisoned["outcome"]["probabilities"] = {"true": math.nan, "false": 0.5}
    async with agent_context(app, "join_feedback_to_predictions") as agent:
        await put_from(agent, PREDICTIONS, json.dumps(poisoned).encode(), key=b"nan")
        for i in range(3):
            event_id = f"ok{i}"
            await put_from(agent, PREDICTIONS, prediction(event_id, T0 + i), key=event_id.encode())
            await put_from(agent, FEEDBACK, feedback(event_id), key=event_id.encode())
        await put_from(agent, PREDICTIONS, prediction("gone", T0 + 3), key=b"gone")
        await put_from(agent, PREDICTIONS, prediction("tick", T0 + 200), key=b"tick")

    labeled = sent.values("a.predictions.labeled")
    assert [r["event_id"] for r in labeled] == ["ok0", "ok1", "ok2"]
    [letter] = sent.values("a.deadletter")
    assert letter["reason"].startswith("bad event on a.predictions: outcome.probabilities.true:")
    assert "not a finite number" in letter["reason"]
    gone = JoinState.model_validate_json(app.tables["event_to_join"][b"gone"])
    assert gone.status == "expired", "the sweep still expires what is due"
