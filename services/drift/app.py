"""The drift worker: ``features`` in, ``alerts`` out.

Feature events are keyed by entity, but one detector must see one (stream, feature)'s values in
order, so the first agent re-keys each value by ``stream:feature`` through an internal topic and
the second runs the detectors, whose state lives in a table partitioned the same way.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import faust
import orjson
from faust.types import EventT

from services.drift.logic import FeatureDriftMonitor, numeric_values
from shared import settings as cfg
from shared.app import DeadLetters, consume, create_app, declare_topic, send_event
from shared.events import FeatureEvent, decode
from shared.topics import ALERTS, FEATURES

SERVICE = "drift"


def build(common: cfg.DriftlineSettings, own: cfg.DriftSettings) -> faust.App:
    """The drift Faust app with its agents and detector table."""
    app = create_app(SERVICE, common, own)
    features_topic = declare_topic(app, FEATURES, common)
    alerts_topic = declare_topic(app, ALERTS, common)
    feature_values_topic = app.topic(
        f"{app.conf.id}-feature-values",
        partitions=common.topic_partitions,
        key_serializer="raw",
        value_serializer="raw",
        internal=True,
    )
    dead_letters = DeadLetters(app, SERVICE, common)
    feature_to_detector = app.Table("feature_to_detector", key_type=bytes, value_type=bytes)

    async def fan_out(event: EventT) -> None:
        features = decode(FeatureEvent, event.message.value, event.message.topic)
        time = features.event_time.timestamp()
        for name, value in numeric_values(features).items():
            key = f"{features.stream}:{name}".encode()
            await feature_values_topic.send(key=key, value=orjson.dumps([value, time]))

    async def detect(event: EventT) -> None:
        stream, feature = event.message.key.decode().split(":", 1)
        value, time = orjson.loads(event.message.value)
        stored = feature_to_detector.get(event.message.key)
        monitor: FeatureDriftMonitor = (
            pickle.loads(stored)
            if stored is not None
            else FeatureDriftMonitor(stream, feature, own.detectors["default"]["delta"])
        )
        alert = monitor.update(value, datetime.fromtimestamp(time, UTC))
        feature_to_detector[event.message.key] = pickle.dumps(monitor)
        if alert is not None:
            await send_event(alerts_topic, SERVICE, alert.key, alert)

    @app.agent(features_topic, name="fan_out_feature_values")
    async def fan_out_feature_values(stream: faust.Stream) -> None:
        await consume(stream, SERVICE, dead_letters, fan_out)

    @app.agent(feature_values_topic, name="detect_data_drift")
    async def detect_data_drift(stream: faust.Stream) -> None:
        await consume(stream, SERVICE, dead_letters, detect)

    return app
