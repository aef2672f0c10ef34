"""What the retraining tests send: a deployment with a registry champion, its labeled
predictions and a concept-drift alert whose window starts at given offsets."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.events import (
    DataWindow,
    Deployment,
    DriftAlert,
    LabeledPrediction,
    RetrainSpec,
    Variant,
    VariantOutput,
)

MODEL = "loans"


def loans_deployment(model: str = MODEL, min_samples: int = 100, **retrain: object) -> Deployment:
    """Deployment ``loans`` on stream ``applications``, champion ``models:/<model>@champion``."""
    return Deployment(
        name="loans",
        stream="applications",
        variants=[Variant(name="champion", role="champion", model_uri=f"models:/{model}@champion")],
        retrain=RetrainSpec(min_samples=min_samples, **retrain),  # type: ignore[arg-type]
    )


def labeled(
    i: int, x: float, label: bool, at: float, deployment: str = "loans"
) -> LabeledPrediction:
    """Event ``ev-<i>`` of `deployment` with feature `x` (and a text feature, which no batch model
    can be served), labeled `label`, at event time `at` (epoch seconds)."""
    return LabeledPrediction(
        event_id=f"ev-{i}",
        entity_id=f"u{i % 7}",
        stream="applications",
        deployment=deployment,
        features={"x": x, "flag": i % 2 == 0, "region": "north"},
        outcomes=[
            VariantOutput(
                variant="champion",
                role="champion",
                served=True,
                model_name=MODEL,
                model_version="1",
                output=x > 0,
            )
        ],
        label=label,
        event_time=datetime.fromtimestamp(at, UTC),
        label_time=datetime.fromtimestamp(at + 2, UTC),
        feedback_delay_s=2.0,
    )


def concept_alert(
    offsets: dict[str, dict[int, int]],
    start: float,
    deployment: str | None = "loans",
    kind: str = "concept",
    level: str = "drift",
    alert_id: str = "alert-1",
) -> DriftAlert:
    """A DDM concept-drift alert on the champion whose window starts at `start` and `offsets`."""
    return DriftAlert(
        alert_id=alert_id,
        kind=kind,  # type: ignore[arg-type]
        level=level,  # type: ignore[arg-type]
        key=f"concept:{MODEL}:1",
        model_name=MODEL,
        model_version="1",
        deployment=deployment,
        detector="ddm",
        position=500,
        event_time=datetime.fromtimestamp(start + 60, UTC),
        window=DataWindow(
            start_time=datetime.fromtimestamp(start, UTC),
            start_position=400,
            estimated_by="warning_start",
            offsets=offsets,
        ),
    )
