"""The learner worker: ``predictions.labeled`` in (keyed by deployment), ``model-snapshots`` out."""

from __future__ import annotations

import pickle

import faust
from faust.types import EventT

from services.learner.logic import OnlineModel
from shared import settings as cfg
from shared.app import DeadLetters, consume, create_app, declare_topic, send_event
from shared.events import LabeledPrediction, decode
from shared.topics import MODEL_SNAPSHOTS, PREDICTIONS_LABELED

SERVICE = "learner"


def build(common: cfg.DriftlineSettings, own: cfg.LearnerSettings) -> faust.App:
    """The learner Faust app: model state per deployment in a changelog-backed table."""
    app = create_app(SERVICE, common, own)
    labeled_topic = declare_topic(app, PREDICTIONS_LABELED, common)
    snapshots_topic = declare_topic(app, MODEL_SNAPSHOTS, common)
    dead_letters = DeadLetters(app, SERVICE, common)
    deployment_to_model = app.Table("deployment_to_model", key_type=bytes, value_type=bytes)

    async def learn(event: EventT) -> None:
        labeled = decode(LabeledPrediction, event.message.value, event.message.topic)
        key = labeled.deployment.encode()
        stored = deployment_to_model.get(key)
        model: OnlineModel = pickle.loads(stored) if stored is not None else OnlineModel()
        model.learn(labeled)
        deployment_to_model[key] = pickle.dumps(model)
        if model.n_learned % own.snapshot_every == 0:
            snapshot = model.snapshot(labeled.deployment, model.n_learned, common.snapshot_hmac_key)
            await send_event(snapshots_topic, SERVICE, snapshot.model_id, snapshot)

    @app.agent(labeled_topic, name="learn_from_labeled_prediction")
    async def learn_from_labeled_prediction(stream: faust.Stream) -> None:
        await consume(stream, SERVICE, dead_letters, learn)

    return app
