"""The feedback worker: ``predictions`` and ``feedback`` in (co-partitioned on event id),
``predictions.labeled`` (keyed by deployment) out."""

from __future__ import annotations

import faust
import orjson
from faust.types import EventT

from services.feedback.logic import label_predictions
from shared import settings as cfg
from shared.app import DeadLetters, consume, create_app, declare_topic, send_event
from shared.events import Feedback, Prediction, decode, encode
from shared.topics import FEEDBACK, PREDICTIONS, PREDICTIONS_LABELED

SERVICE = "feedback"


def build(common: cfg.DriftlineSettings, own: cfg.FeedbackSettings) -> faust.App:
    """The feedback Faust app: one agent over both co-partitioned topics, two tables."""
    app = create_app(SERVICE, common, own)
    predictions_name = PREDICTIONS.full_name(common)
    joined_topics = app.topic(
        predictions_name, FEEDBACK.full_name(common), key_type=bytes, value_type=bytes
    )
    declare_topic(app, PREDICTIONS, common)
    declare_topic(app, FEEDBACK, common)
    labeled_topic = declare_topic(app, PREDICTIONS_LABELED, common)
    dead_letters = DeadLetters(app, SERVICE, common)
    event_to_predictions = app.Table("event_to_predictions", key_type=bytes, value_type=bytes)
    event_to_early_feedback = app.Table("event_to_early_feedback", key_type=bytes, value_type=bytes)

    async def join(event: EventT) -> None:
        message = event.message
        if message.topic == predictions_name:
            prediction = decode(Prediction, message.value, message.topic)
            key = prediction.event_id.encode()
            early = event_to_early_feedback.get(key)
            if early is not None:
                feedback = decode(Feedback, early, message.topic)
                labeled = label_predictions([prediction], feedback)
                await send_event(labeled_topic, SERVICE, labeled.deployment, labeled)
                return
            pending = orjson.loads(event_to_predictions.get(key, b"[]"))
            pending.append(orjson.loads(encode(prediction)))
            event_to_predictions[key] = orjson.dumps(pending)
            return
        feedback = decode(Feedback, message.value, message.topic)
        key = feedback.event_id.encode()
        pending_bytes = event_to_predictions.get(key)
        if pending_bytes is None:
            event_to_early_feedback[key] = message.value
            return
        predictions = [Prediction.model_validate(p) for p in orjson.loads(pending_bytes)]
        labeled = label_predictions(predictions, feedback)
        await send_event(labeled_topic, SERVICE, labeled.deployment, labeled)
        del event_to_predictions[key]

    @app.agent(joined_topics, name="join_feedback_to_predictions")
    async def join_feedback_to_predictions(stream: faust.Stream) -> None:
        await consume(stream, SERVICE, dead_letters, join)

    return app
