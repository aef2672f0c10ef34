"""Joining predictions and feedback, without Kafka."""

from __future__ import annotations

from shared.events import Feedback, LabeledPrediction, Prediction


def label_predictions(predictions: list[Prediction], feedback: Feedback) -> LabeledPrediction:
    """One labeled record for an event: every variant's output beside the ground truth."""
    first = predictions[0]
    return LabeledPrediction(
        event_id=first.event_id,
        entity_id=first.entity_id,
        stream=first.stream,
        deployment=first.deployment,
        features=first.features,
        outcomes=[p.outcome for p in predictions],
        label=feedback.label,
        event_time=first.event_time,
        label_time=feedback.label_time,
        feedback_delay_s=(feedback.label_time - first.event_time).total_seconds(),
    )
