"""Records the feedback tests send: a variant of the `fraud` deployment predicts one event."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.events import Prediction, VariantOutput


def fraud_prediction(event_id: str, at: float, variant: str = "champion") -> Prediction:
    """`variant`'s prediction for `event_id`, with event time `at` (epoch seconds)."""
    return Prediction(
        event_id=event_id,
        entity_id="u1",
        stream="payments",
        deployment="fraud",
        outcome=VariantOutput(
            variant=variant,
            role="champion" if variant == "champion" else "shadow",
            served=variant == "champion",
            model_name="fraud-model",
            model_version="3",
            output=True,
        ),
        features={"amount": 2.5},
        latency_ms=1.0,
        event_time=datetime.fromtimestamp(at, UTC),
    )
