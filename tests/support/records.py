"""Records tests send: a variant of the `fraud` deployment predicts one event (feedback tests);
a champion's labeled answer (drift tests); a model snapshot before it is signed; what a
service's table holds, read back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.events import (
    FeatureValue,
    Label,
    LabeledPrediction,
    ModelSnapshot,
    Prediction,
    VariantOutput,
    prediction_id_for,
)
from shared.sealing import PICKLE, SealedState
from shared.settings import DriftlineSettings


def fraud_prediction(event_id: str, at: float, variant: str = "champion") -> Prediction:
    """`variant`'s prediction for `event_id`, with event time `at` (epoch seconds)."""
    outcome = VariantOutput(
        variant=variant,
        role="champion" if variant == "champion" else "shadow",
        served=variant == "champion",
        model_name="fraud-model",
        model_version="3",
        output=True,
    )
    return Prediction(
        prediction_id=prediction_id_for(event_id, "fraud", outcome),
        event_id=event_id,
        entity_id="u1",
        stream="payments",
        deployment="fraud",
        outcome=outcome,
        features={"amount": 2.5},
        latency_ms=1.0,
        event_time=datetime.fromtimestamp(at, UTC),
    )


def champion_labeled(
    i: int,
    *,
    output: Label | None,
    label: Label,
    at: float,
    model: tuple[str, str],
    deployment: str,
    stream: str,
    entities: int,
    features: dict[str, FeatureValue] | None = None,
) -> LabeledPrediction:
    """Event ``ev-<i>`` answered `output` by the champion (`model`: name and version) alone,
    labeled `label` at its event time `at` (epoch seconds), from entity ``u<i % entities>``."""
    name, version = model
    outcome = VariantOutput(
        variant="champion",
        role="champion",
        served=True,
        model_name=name,
        model_version=version,
        output=output,
    )
    return LabeledPrediction(
        event_id=f"ev-{i}",
        entity_id=f"u{i % entities}",
        stream=stream,
        deployment=deployment,
        features=features or {},
        outcomes=[outcome],
        label=label,
        event_time=at,
        label_time=at,
        feedback_delay_s=0.0,
    )


def stored_state(service: str, table: str, key: bytes, value: bytes) -> Any:
    """A pickled table value as `service` reads it back under the default settings' state key:
    unsealed (refused if its seal does not verify: None), then unpickled."""
    sealed = SealedState[Any](service, table, DriftlineSettings().state_keys, PICKLE)
    return sealed.loads(key, value)


def unsigned_snapshot(
    model_id: str, sequence: int, payload: bytes, model_type: str = "t"
) -> ModelSnapshot:
    """A snapshot of `payload` (a pickled model) at `sequence`, not signed yet."""
    return ModelSnapshot(
        model_id=model_id,
        model_type=model_type,
        sequence=sequence,
        n_learned=sequence,
        payload=payload,
    )
