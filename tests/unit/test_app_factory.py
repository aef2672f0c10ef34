"""The app factory's consumer: its fetch wait is ours, not the 1,500 ms faust-streaming writes in
(a fetch of only quiet partitions held new events that long; see `FETCH_MAX_WAIT_MS`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.app import FETCH_MAX_WAIT_MS, create_app
from shared.settings import DriftlineSettings, IngestionSettings
from tests.support.faust_doubles import isolate_prometheus


async def test_worker_consumers_wait_at_most_fetch_max_wait_ms_at_the_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_prometheus(monkeypatch)
    app = create_app("factory", DriftlineSettings(data_dir=tmp_path), IngestionSettings())
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert consumer._fetch_max_wait_ms == FETCH_MAX_WAIT_MS < 1500
    finally:
        await consumer.stop()
