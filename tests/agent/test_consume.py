"""`shared.app.consume` and `consume_batches` under Faust's test context: bad messages become dead
letters, good ones flow, and the agent keeps going after either."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import faust
import orjson
import pytest
from faust.types import EventT
from prometheus_client import REGISTRY

from services.ingestion.app import build
from shared.app import DeadLetters, consume_batches, create_app, send_records
from shared.errors import DriftlineError
from shared.events import FeatureSpec, StreamSchema, encode
from shared.settings import DriftlineSettings, IngestionSettings
from tests.support.faust_doubles import (
    agent_context,
    capture_sends,
    fill_table,
    isolate_prometheus,
)


async def test_agent_dead_letters_bad_messages_and_keeps_going(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sent = capture_sends(monkeypatch)
    app = build(DriftlineSettings(data_dir=tmp_path, topic_prefix="a."), IngestionSettings())
    schema = StreamSchema(name="s", features=[FeatureSpec(name="x")])
    fill_table(app, "stream_to_schema", {b"s": encode(schema)})
    good = {
        "event_id": "ev-1",
        "stream": "s",
        "entity_id": "e",
        "event_time": "2026-01-01T00:00:00Z",
        "data": {"x": 1.5},
    }

    async with agent_context(app, "validate_raw_event") as agent:
        await agent.put(b"not json", key=b"e")
        await agent.put(orjson.dumps(good), key=b"e")

    letters = sent.values("a.deadletter")
    assert len(letters) == 1
    assert letters[0]["reason"].startswith("bad event on a.events.raw: not valid JSON")
    assert sent.keys("a.features") == [b"e"]
    assert sent.values("a.features")[0]["features"] == {"x": 1.5}


async def test_a_batch_whose_handler_raises_is_retried_event_by_event(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent = capture_sends(monkeypatch)
    isolate_prometheus(monkeypatch)
    common = DriftlineSettings(data_dir=tmp_path, topic_prefix="a.")
    app = create_app("batcher", common, IngestionSettings())
    source, target = app.topic("a.in"), app.topic("a.out")
    dead_letters = DeadLetters(app, "batcher", common)

    async def forward(events: Sequence[EventT]) -> list[tuple[EventT, DriftlineError]]:
        if any(event.message.value == b"boom" for event in events):
            raise RuntimeError("boom")
        await send_records(target, "batcher", [(b"k", event.message.value) for event in events])
        return []

    @app.agent(source, name="forward_batches")
    async def forward_batches(stream: faust.Stream) -> None:
        await consume_batches(stream, "batcher", dead_letters, forward, 3, 30.0)

    observed = processing_count("batcher")
    async with agent_context(app, "forward_batches") as agent:
        for value in (b"one", b"boom", b"three"):
            await agent.put(value, key=b"k")

    assert processing_count("batcher") == observed + 3, "one observation per event, not per batch"

    assert [value for _, value in sent.by_topic["a.out"]] == [b"one", b"three"]
    letters = sent.values("a.deadletter")
    assert [(letter["offset"], letter["reason"], letter["code"]) for letter in letters] == [
        (1, "internal error: RuntimeError: boom", "internal_error")
    ]
    errors = [r for r in caplog.records if r.levelname == "ERROR"]  # structlog: msg is a dict
    assert [(r.msg["event"], r.exc_info is not None) for r in errors] == [
        ("batch handler failed; handling its events one by one", True),
        ("handler failed", True),
    ], "the batch's failure once, then the failing event's own"
    assert errors[0].msg["offsets"] == {"a.in[0]": [0, 2]}


def processing_count(service: str) -> float:
    labels = {"service": service}
    return REGISTRY.get_sample_value("driftline_processing_seconds_count", labels) or 0.0
