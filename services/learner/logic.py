"""Online learning on labeled predictions, without Kafka.

A labeled prediction becomes one `TrainingExample` per online model its deployment asks for,
keyed by the model (``<model id>`` or, per entity, ``<model id>/<entity id>``). Each model's
`OnlineLearner` runs predict-then-learn (prequential evaluation) and remembers, per source
lineage (`shared.replays`), the input offset of the last labeled prediction it learned, so one
redelivered or re-sent by a replay upstream is skipped: learning is idempotent whatever the
delivery guarantee.
"""

from __future__ import annotations

import pickle
from typing import Any

from river import metrics, utils

from shared.errors import DriftlineError
from shared.events import (
    Deployment,
    Event,
    FeatureValue,
    Identifier,
    Label,
    LabeledPrediction,
    ModelSnapshot,
    OnlineModelSpec,
)
from shared.models.catalog import build_model
from shared.replays import Applied, lineage_of
from shared.signing import KeyRing, sign_snapshot


class LabelError(DriftlineError):
    """A label a model cannot learn from (text or a flag for a regression model)."""

    code = "bad_label"

    def __init__(self, model_id: str, label: object) -> None:
        super().__init__(f"bad label for regression model {model_id!r}: {label!r} is not a number")


class TrainingExample(Event):
    """One labeled prediction for one online model, on the learner's internal topic."""

    model_key: Identifier
    """``<model id>``, or ``<model id>/<entity id>`` for per-entity models (the snapshot id)."""
    spec: OnlineModelSpec
    event_id: Identifier
    features: dict[str, FeatureValue]
    label: Label
    lineage: str
    """The input partition the labeled prediction derives from (`shared.replays.lineage_of`)."""
    lineage_offset: int
    """Its input offset there: what makes a redelivery or a replayed re-send recognisable."""


def model_key(spec: OnlineModelSpec, entity_id: str) -> str:
    """The key (and snapshot id) of the model that learns from an entity's events."""
    return f"{spec.model_id}/{entity_id}" if spec.per_entity else spec.model_id


def training_examples(
    labeled: LabeledPrediction, deployment: Deployment, topic: str, partition: int, offset: int
) -> list[TrainingExample]:
    """One example per online model of `deployment`, for the labeled prediction read at
    `topic`, `partition` and `offset`; none for a late variant's record, whose event the
    models learned from an earlier one."""
    if labeled.late_variant:
        return []
    lineage, lineage_offset = lineage_of(labeled.provenance, topic, partition, offset)
    examples = []
    for spec in deployment.online_models:
        if spec.task == "regression" and (
            isinstance(labeled.label, str | bool) or not isinstance(labeled.label, int | float)
        ):
            raise LabelError(spec.model_id, labeled.label)
        examples.append(
            TrainingExample(
                model_key=model_key(spec, labeled.entity_id),
                spec=spec,
                event_id=labeled.event_id,
                features=labeled.features,
                label=labeled.label,
                lineage=lineage,
                lineage_offset=lineage_offset,
            )
        )
    return examples


class OnlineLearner:
    """One online model with its prequential metrics (test, then train) and what it learned.

    Parameters
    ----------
    spec
        Which catalogue model to train, with its parameters and task.
    rolling_window
        Examples in the rolling metrics.
    """

    def __init__(self, spec: OnlineModelSpec, rolling_window: int) -> None:
        self.spec = spec
        self.rolling_window = rolling_window
        self.model = build_model(spec.model_type, spec.task, spec.params)
        self.metrics: dict[str, Any] = (
            {
                "accuracy": metrics.Accuracy(),
                "log_loss": metrics.CrossEntropy(),
                "rolling_accuracy": utils.Rolling(metrics.Accuracy, window_size=rolling_window),
                "rolling_log_loss": utils.Rolling(metrics.CrossEntropy, window_size=rolling_window),
            }
            if spec.task == "classification"
            else {
                "mae": metrics.MAE(),
                "rolling_mae": utils.Rolling(metrics.MAE, window_size=rolling_window),
            }
        )
        self.n_learned = 0
        self.applied = Applied()

    def learn(self, example: TrainingExample) -> bool:
        """Score the model on the example, then learn from it; False (and nothing changes) if
        this example, or a later one of its lineage, was learned already."""
        if not self.applied.first_time(example.lineage, example.lineage_offset):
            return False
        x, y = example.features, example.label
        if self.spec.task == "classification":
            proba = self.model.predict_proba_one(x)
            if proba:
                y_pred = max(proba, key=proba.get)
                for name in ("accuracy", "rolling_accuracy"):
                    self.metrics[name].update(y, y_pred)
                for name in ("log_loss", "rolling_log_loss"):
                    self.metrics[name].update(y, proba)
        else:
            y_pred = self.model.predict_one(x)
            if y_pred is not None:
                for name in ("mae", "rolling_mae"):
                    self.metrics[name].update(y, y_pred)
        self.model.learn_one(x, y)
        self.n_learned += 1
        return True

    def metric_values(self) -> dict[str, float]:
        """Every prequential metric's current value."""
        return {name: float(metric.get()) for name, metric in self.metrics.items()}

    def snapshot(self, model_key: str, keys: KeyRing) -> ModelSnapshot:
        """A signed snapshot of the model for the router; its sequence is `n_learned`."""
        snapshot = ModelSnapshot(
            model_id=model_key,
            model_type=self.spec.model_type,
            sequence=self.n_learned,
            n_learned=self.n_learned,
            metrics=self.metric_values(),
            payload=pickle.dumps(self.model),
        )
        return sign_snapshot(snapshot, keys)


def learner_for(
    current: OnlineLearner | None, spec: OnlineModelSpec, rolling_window: int
) -> OnlineLearner:
    """The learner to train for `spec`: the current one, or a fresh model when the deployment
    changed the spec (it keeps the applied offsets, so old examples are not learned again)."""
    if current is not None and current.spec == spec:
        return current
    fresh = OnlineLearner(spec, rolling_window)
    if current is not None:
        fresh.applied.offsets = dict(current.applied.offsets)
    return fresh
