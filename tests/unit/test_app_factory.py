"""The app factory's consumer: its fetch wait is ours, not the 1,500 ms faust-streaming writes in
(a fetch of only quiet partitions held new events that long; see `FETCH_MAX_WAIT_MS`). And the
worker starts with what it has built frozen out of the garbage collector's full collections."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

import shared.app
from shared.app import FETCH_MAX_WAIT_MS, create_app, run_worker
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


def test_a_worker_starts_with_its_objects_frozen_out_of_full_collections(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_prometheus(monkeypatch)
    app = create_app("factory", DriftlineSettings(data_dir=tmp_path), IngestionSettings())
    frozen_at_start: list[int] = []

    class Worker:
        def __init__(self, started: Any, loglevel: str, shutdown_grace_s: float) -> None:
            assert started is app

        def execute_from_commandline(self) -> None:
            frozen_at_start.append(gc.get_freeze_count())

    monkeypatch.setattr(shared.app, "DriftlineWorker", Worker)
    monkeypatch.setattr(shared.app, "log_uncaught_exceptions", lambda: None)
    try:
        run_worker(app, "info")
    finally:
        gc.unfreeze()
    assert frozen_at_start[0] > 10_000  # the libraries' and the app's objects
