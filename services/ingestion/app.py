"""The ingestion worker: ``events.raw`` in, ``features`` (keyed by entity) and dead letters out."""

from __future__ import annotations

import faust
from faust.types import EventT

from services.ingestion.logic import parse_raw_event, to_feature_event
from shared import settings as cfg
from shared.app import DeadLetters, consume, create_app, declare_topic, send_event
from shared.topics import EVENTS_RAW, FEATURES

SERVICE = "ingestion"


def build(common: cfg.DriftlineSettings, own: cfg.IngestionSettings) -> faust.App:
    """The ingestion Faust app with its agent."""
    app = create_app(SERVICE, common, own)
    raw_topic = declare_topic(app, EVENTS_RAW, common)
    features_topic = declare_topic(app, FEATURES, common)
    dead_letters = DeadLetters(app, SERVICE, common)

    async def ingest(event: EventT) -> None:
        message = event.message
        raw = parse_raw_event(message.value, message.topic, own.max_event_bytes)
        feature_event = to_feature_event(raw, message.topic)
        await send_event(features_topic, SERVICE, feature_event.entity_id, feature_event)

    @app.agent(raw_topic, name="validate_raw_event")
    async def validate_raw_event(stream: faust.Stream) -> None:
        await consume(stream, SERVICE, dead_letters, ingest)

    return app
