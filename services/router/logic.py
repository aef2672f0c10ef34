"""Routing feature events to model variants, without Kafka."""

from __future__ import annotations

from shared.events import FeatureEvent, Prediction, VariantOutput

PASSTHROUGH_VARIANT = VariantOutput(
    variant="passthrough",
    role="champion",
    served=True,
    model_name="none",
    model_version="0",
    output=None,
)
"""Answer for streams with no deployment yet: keeps the chain flowing, predicts nothing."""


def passthrough_prediction(features: FeatureEvent) -> Prediction:
    """A prediction record that carries the event on, with no model output."""
    return Prediction(
        event_id=features.event_id,
        entity_id=features.entity_id,
        stream=features.stream,
        deployment=features.stream,
        outcome=PASSTHROUGH_VARIANT,
        features=features.features,
        latency_ms=0.0,
        event_time=features.event_time,
    )
