"""Online learning on labeled predictions, without Kafka."""

from __future__ import annotations

import pickle

from pydantic import SecretStr
from river import compose, linear_model, metrics, preprocessing

from shared.events import FeatureValue, LabeledPrediction, ModelSnapshot
from shared.signing import sign


def numeric_features(features: dict[str, FeatureValue]) -> dict[str, float]:
    """The features an online linear model can read: numbers and flags (as 0/1)."""
    return {k: float(v) for k, v in features.items() if not isinstance(v, str)}


class OnlineModel:
    """One deployment's online model and its prequential accuracy (test, then train)."""

    model_type = "logistic_regression"

    def __init__(self) -> None:
        self.model: compose.Pipeline = (
            preprocessing.StandardScaler() | linear_model.LogisticRegression()
        )
        self.accuracy = metrics.Accuracy()
        self.n_learned = 0

    def learn(self, labeled: LabeledPrediction) -> None:
        """Score the model on the event first, then learn from it."""
        x = numeric_features(labeled.features)
        y = bool(labeled.label)
        prediction = self.model.predict_one(x)
        if prediction is not None:
            self.accuracy.update(y, prediction)
        self.model.learn_one(x, y)
        self.n_learned += 1

    def snapshot(self, model_id: str, sequence: int, key: SecretStr) -> ModelSnapshot:
        """A signed snapshot of the model for the router."""
        payload = pickle.dumps(self.model)
        return ModelSnapshot(
            model_id=model_id,
            model_type=self.model_type,
            sequence=sequence,
            n_learned=self.n_learned,
            metrics={"accuracy": self.accuracy.get()},
            payload=payload,
            signature=sign(payload, key),
        )
