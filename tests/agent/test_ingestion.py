"""The ingestion agent under Faust's test context: declared streams, dead letters with reasons,
dropped duplicates and event-time windowed aggregates, with no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from faust.types import TP

from services.ingestion.app import build
from shared.events import FeatureSpec, StreamSchema, WindowedAggregate, encode
from shared.settings import DriftlineSettings, IngestionSettings
from tests.support.faust_doubles import (
    SentRecords,
    agent_context,
    capture_sends,
    fill_table,
    isolate_prometheus,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PAYMENTS = StreamSchema(
    name="payments",
    features=[
        FeatureSpec(name="amount", min=0, max=10_000),
        FeatureSpec(name="tier", type="categorical", categories=["basic", "premium"]),
        FeatureSpec(name="online", type="boolean", required=False),
    ],
    aggregates=[WindowedAggregate(field="amount", minutes=10)],
)


def raw(event_id: str, entity: str = "u1", minutes: float = 0, **data: Any) -> bytes:
    body = {"amount": 10.0, "tier": "basic"} | data
    return orjson.dumps(
        {
            "event_id": event_id,
            "stream": "payments",
            "entity_id": entity,
            "event_time": (T0 + timedelta(minutes=minutes)).isoformat(),
            "data": body,
        }
    )


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> SentRecords:
    isolate_prometheus(monkeypatch)
    return capture_sends(monkeypatch)


def ingestion_app(tmp_path: Path, **own: Any) -> Any:
    app = build(
        DriftlineSettings(data_dir=tmp_path, topic_prefix="a."),
        IngestionSettings(max_event_bytes=2_000, **own),
    )
    fill_table(app, "stream_to_schema", {b"payments": encode(PAYMENTS)})
    return app


async def test_each_bad_event_is_dead_lettered_with_its_reason_and_good_ones_flow(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = ingestion_app(tmp_path)
    bad = {
        b"\xff{": "not valid JSON",
        raw("e2", amount="ten"): "wrong type: event 'e2'",
        raw("e3", tier=None): "missing field: event 'e3'",
        raw("e4", amount=-1): "out of range: event 'e4'",
        raw("e5", tier="gold"): "unknown category: event 'e5'",
        raw("e6").replace(b"10.0", b"NaN"): "not finite: event 'e6'",
        raw("e7").replace(b"payments", b"refunds"): "unknown stream: 'refunds'",
        raw("e8", note="x" * 3_000): "oversized payload",
        raw("e9", online=1): "wrong type: event 'e9'",
        raw("e10", minutes=60 * 24 * 365 * 100): "future event time: event 'e10'",
    }
    async with agent_context(app, "validate_raw_event") as agent:
        await agent.put(raw("g1"), key=b"u1")
        for value in bad:
            await agent.put(value, key=b"u1")
        await agent.put(raw("g2", online=True, extra="dropped"), key=b"u1")

    reasons = [letter["reason"] for letter in sent.values("a.deadletter")]
    assert len(reasons) == len(bad)
    for reason, expected in zip(reasons, bad.values(), strict=True):
        assert expected in reason
    features = sent.values("a.features")
    assert [f["event_id"] for f in features] == ["g1", "g2"]
    assert features[1]["features"] == {
        "amount": 10.0,
        "tier": "basic",
        "online": True,
        "amount_count_10m": 2.0,
        "amount_mean_10m": 10.0,
    }
    assert sent.keys("a.features") == [b"u1", b"u1"]


async def test_a_duplicate_event_id_is_dropped_once_seen(sent: SentRecords, tmp_path: Path) -> None:
    app = ingestion_app(tmp_path)
    async with agent_context(app, "validate_raw_event") as agent:
        await agent.put(raw("d1"), key=b"u1")
        await agent.put(raw("d1", amount=99.0), key=b"u1")
        await agent.put(raw("d2"), key=b"u1")

    assert [f["event_id"] for f in sent.values("a.features")] == ["d1", "d2"]
    assert sent.values("a.deadletter") == []


async def test_a_revoked_partitions_state_is_rebuilt_from_its_saved_segments(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = ingestion_app(tmp_path, batch_max_events=1)  # each put is ingested before the next
    async with agent_context(app, "validate_raw_event") as agent:
        await agent.put(raw("r1", amount=10.0), key=b"u1")
        await agent.put(raw("r2", amount=20.0), key=b"u1")
        await app.on_partitions_revoked.send({TP("a.events.raw", 0)})
        await agent.put(raw("r1", amount=99.0), key=b"u1")
        await agent.put(raw("r3", amount=30.0), key=b"u1")

    by_id = {f["event_id"]: f["features"] for f in sent.values("a.features")}
    assert list(by_id) == ["r1", "r2", "r3"]
    assert by_id["r3"]["amount_count_10m"] == 3.0
    assert by_id["r3"]["amount_mean_10m"] == 20.0


async def test_aggregates_cover_the_last_minutes_of_event_time_per_entity(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = ingestion_app(tmp_path)
    async with agent_context(app, "validate_raw_event") as agent:
        await agent.put(raw("a1", minutes=0, amount=10.0), key=b"u1")
        await agent.put(raw("a2", minutes=3, amount=20.0), key=b"u1")
        await agent.put(raw("b1", entity="u2", minutes=4, amount=500.0), key=b"u2")
        await agent.put(raw("a3", minutes=12, amount=60.0), key=b"u1")

    by_id = {f["event_id"]: f["features"] for f in sent.values("a.features")}
    assert by_id["a2"]["amount_count_10m"] == 2.0
    assert by_id["a2"]["amount_mean_10m"] == 15.0
    assert by_id["b1"]["amount_count_10m"] == 1.0
    assert by_id["a3"]["amount_count_10m"] == 2.0
    assert by_id["a3"]["amount_mean_10m"] == 40.0


async def test_declarations_apply_live_a_misnamed_one_is_dead_lettered_a_tombstone_removes(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = build(DriftlineSettings(data_dir=tmp_path, topic_prefix="a."), IngestionSettings())
    async with agent_context(app, "store_stream_declaration") as agent:
        await agent.put(encode(PAYMENTS), key=b"refunds")
        await agent.put(encode(PAYMENTS), key=b"payments")
    async with agent_context(app, "validate_raw_event") as agent:
        await agent.put(raw("g1"), key=b"u1")
    async with agent_context(app, "store_stream_declaration") as agent:
        await agent.put(None, key=b"payments")
    async with agent_context(app, "validate_raw_event") as agent:
        await agent.put(raw("g2"), key=b"u1")

    reasons = [letter["reason"] for letter in sent.values("a.deadletter")]
    assert reasons[0].endswith("key b'refunds' is not the stream name 'payments'")
    assert reasons[1].startswith("unknown stream: 'payments'")
    assert [f["event_id"] for f in sent.values("a.features")] == ["g1"]
