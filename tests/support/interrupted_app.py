"""A worker whose handler is interrupted once, as a rebalance or a stop cancels an agent
mid-batch: it forwards each record to a target topic (in micro-batches through
`consume_batches`, or one by one through `consume`), and the first time it meets the value
``interrupt`` (remembered in a marker file) it raises `CancelledError` instead. Faust restarts
the agent and acknowledges what it was handling as its generator closes. Run as a worker
process:

    DRIFTLINE_INTERRUPTED_SOURCE=... DRIFTLINE_INTERRUPTED_TARGET=...
    DRIFTLINE_INTERRUPTED_MARKER=... python -m tests.support.interrupted_app
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import faust
from faust.types import EventT
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared import settings as cfg
from shared.app import (
    DeadLetters,
    DriftlineApp,
    consume,
    consume_batches,
    create_app,
    run_worker,
)
from shared.errors import DriftlineError

INTERRUPT = b"interrupt"


class InterruptedSettings(cfg.ServiceSettings):
    """The interrupted forwarder (prefix ``DRIFTLINE_INTERRUPTED_``)."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_INTERRUPTED_")

    web_port: int = Field(default=6071, ge=1, le=65535)
    source: str
    target: str
    marker: Path
    """Exists once the handler was interrupted."""
    mode: Literal["batches", "events"] = "batches"


def build(common: cfg.DriftlineSettings, own: InterruptedSettings) -> DriftlineApp:
    """One micro-batching agent over `own.source`, interrupted once."""
    app = create_app("interrupted", common, own)
    dead_letters = DeadLetters(app, "interrupted", common)
    source = app.topic(own.source, key_serializer="raw", value_serializer="raw")
    target = app.topic(own.target, key_serializer="raw", value_serializer="raw")

    async def forward(event: EventT) -> None:
        if event.value == INTERRUPT and not own.marker.exists():
            own.marker.touch()
            raise asyncio.CancelledError
        await target.send(key=event.key, value=event.value)

    async def forward_batch(events: Sequence[EventT]) -> list[tuple[EventT, DriftlineError]]:
        for event in events:
            await forward(event)
        return []

    @app.agent(source, name="forward_events")
    async def forward_events(stream: faust.Stream) -> None:
        if own.mode == "events":
            await consume(stream, "interrupted", dead_letters, forward)
        else:
            await consume_batches(stream, "interrupted", dead_letters, forward_batch, 20, 0.05)

    return app


def main() -> None:
    """Run the worker until stopped."""
    run_worker(build(cfg.load(cfg.DriftlineSettings), cfg.load(InterruptedSettings)), "info")


if __name__ == "__main__":
    main()
