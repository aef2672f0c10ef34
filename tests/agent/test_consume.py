"""`shared.app.consume` under Faust's test context: bad messages become dead letters, good ones
flow, and the agent keeps going after either."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from services.ingestion.app import build
from shared.events import FeatureSpec, StreamSchema, encode
from shared.settings import DriftlineSettings, IngestionSettings
from tests.support.faust_doubles import agent_context, capture_sends, fill_table


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
