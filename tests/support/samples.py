"""One valid record of every event schema, as tests of the schemas as a whole take them: the
regression tests of bad values in any field, and the fuzz tests' seeds for mutations."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.events import (
    DataWindow,
    DeadLetter,
    Deployment,
    DriftAlert,
    Event,
    FeatureEvent,
    FeatureSpec,
    Feedback,
    LabeledPrediction,
    ModelSnapshot,
    OnlineModelSpec,
    Prediction,
    PromotionDecision,
    RawEvent,
    StreamSchema,
    Variant,
    VariantOutput,
    WindowedAggregate,
)

AT = datetime(2026, 1, 1, 10, tzinfo=UTC)
OUTCOME = VariantOutput(
    variant="champion",
    role="champion",
    served=True,
    model_name="fraud-model",
    model_version="3",
    output=1,
    probabilities={"0": 0.25, "1": 0.75},
)
FEATURES = {"amount": 12.5, "count": 3, "plan": "pro", "new": True}

SAMPLES: dict[type[Event], Event] = {
    RawEvent: RawEvent(
        event_id="ev-1", stream="payments", entity_id="u1", event_time=AT, data=FEATURES
    ),
    FeatureEvent: FeatureEvent(
        event_id="ev-1", stream="payments", entity_id="u1", event_time=AT, features=FEATURES
    ),
    Prediction: Prediction(
        prediction_id="p-1",
        event_id="ev-1",
        entity_id="u1",
        stream="payments",
        deployment="fraud",
        outcome=OUTCOME,
        features=FEATURES,
        latency_ms=1.5,
        event_time=AT,
    ),
    Feedback: Feedback(event_id="ev-1", label=1, label_time=AT),
    LabeledPrediction: LabeledPrediction(
        event_id="ev-1",
        entity_id="u1",
        stream="payments",
        deployment="fraud",
        features=FEATURES,
        outcomes=[OUTCOME],
        label=0.5,
        event_time=AT,
        label_time=AT,
        feedback_delay_s=0.0,
    ),
    DriftAlert: DriftAlert(
        alert_id="a-1",
        kind="concept",
        level="drift",
        key="concept:fraud-model:3",
        deployment="fraud",
        detector="adwin",
        position=12,
        event_time=AT,
        stats_before={"mean": 0.1},
        window=DataWindow(
            start_time=AT,
            start_position=3,
            estimated_by="detector_window",
            offsets={"predictions.labeled": {0: 4}},
        ),
    ),
    DeadLetter: DeadLetter(
        reason="r",
        service="ingestion",
        source_topic="events.raw",
        partition=0,
        offset=1,
        value=b"x",
    ),
    ModelSnapshot: ModelSnapshot(
        model_id="m",
        model_type="logistic_regression",
        sequence=1,
        n_learned=1,
        payload=b"\x80",
        signature="00",
    ),
    PromotionDecision: PromotionDecision(
        deployment="fraud",
        model_name="fraud-model",
        challenger_version="4",
        action="wait",
        reason="too few samples",
    ),
    Deployment: Deployment(
        name="fraud",
        stream="payments",
        variants=[Variant(name="champion", role="champion", model_uri="models:/fraud-model@x")],
        online_models=[OnlineModelSpec(model_id="m", model_type="linear_regression")],
    ),
    StreamSchema: StreamSchema(
        name="payments",
        features=[FeatureSpec(name="amount", min=0, max=1e6), FeatureSpec(name="count")],
        aggregates=[WindowedAggregate(field="amount", minutes=10)],
    ),
}
"""A valid record of each event schema, with every optional part that holds a number or a time
filled in."""
