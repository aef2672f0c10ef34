"""The router worker: ``features`` in, ``predictions`` (keyed by event id) out."""

from __future__ import annotations

import faust
from faust.types import EventT

from services.router.logic import passthrough_prediction
from shared import settings as cfg
from shared.app import DeadLetters, consume, create_app, declare_topic, send_event
from shared.events import FeatureEvent, decode
from shared.topics import FEATURES, PREDICTIONS

SERVICE = "router"


def build(common: cfg.DriftlineSettings, own: cfg.RouterSettings) -> faust.App:
    """The router Faust app with its agent."""
    app = create_app(SERVICE, common, own)
    features_topic = declare_topic(app, FEATURES, common)
    predictions_topic = declare_topic(app, PREDICTIONS, common)
    dead_letters = DeadLetters(app, SERVICE, common)

    async def route(event: EventT) -> None:
        features = decode(FeatureEvent, event.message.value, event.message.topic)
        prediction = passthrough_prediction(features)
        await send_event(predictions_topic, SERVICE, prediction.event_id, prediction)

    @app.agent(features_topic, name="route_feature_event")
    async def route_feature_event(stream: faust.Stream) -> None:
        await consume(stream, SERVICE, dead_letters, route)

    return app
