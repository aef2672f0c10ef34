"""The framework ceiling: a bare Faust agent that forwards each event unchanged.

Built by the services' own app factory (`shared.app.create_app`: same broker settings, producer
linger, raw serializers, health page and Prometheus sensor), with no decoding, no tables and no
dead-letter wrapper, so its rate is what Faust's per-event machinery allows one worker. Run as a
worker process:

    DRIFTLINE_FORWARD_SOURCE=... DRIFTLINE_FORWARD_TARGET=... python -m loadtest.forward_app
"""

from __future__ import annotations

import faust
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared import settings as cfg
from shared.app import DriftlineApp, create_app, run_worker


class ForwardSettings(cfg.ServiceSettings):
    """The reference forwarder (prefix ``DRIFTLINE_FORWARD_``)."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_FORWARD_")

    web_port: int = Field(default=6069, ge=1, le=65535)
    """Port of the worker's HTTP endpoint (``/metrics``, ``/health``)."""
    source: str = "bench.source"
    """Topic read, with its full name."""
    target: str = "bench.target"
    """Topic written, with its full name."""
    name: str = "forward"
    """App name (and so consumer group): forwarders in a chain need one each."""


def build(common: cfg.DriftlineSettings, own: ForwardSettings) -> DriftlineApp:
    """The forwarder app: one agent, no tables."""
    app = create_app(own.name, common, own)
    partitions = common.topic_partitions
    source = app.topic(
        own.source, partitions=partitions, key_serializer="raw", value_serializer="raw"
    )
    target = app.topic(
        own.target, partitions=partitions, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(source, name="forward_event")
    async def forward_event(stream: faust.Stream) -> None:
        async for event in stream.events():
            await target.send(key=event.key, value=event.value)

    return app


def main() -> None:
    """Run the forwarder's worker until stopped."""
    app = build(cfg.load(cfg.DriftlineSettings), cfg.load(ForwardSettings))
    run_worker(app, "warn")


if __name__ == "__main__":
    main()
