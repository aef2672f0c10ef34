"""The deployment the learner's unit and agent tests train: one shared and one per-entity model."""

from __future__ import annotations

from shared.events import Deployment, OnlineModelSpec, Variant

LR = OnlineModelSpec(model_id="fraud-lr", model_type="logistic_regression")
PER_USER = OnlineModelSpec(model_id="fraud-user", model_type="logistic_regression", per_entity=True)
DEPLOYMENT = Deployment(
    name="fraud",
    stream="payments",
    variants=[Variant(name="champion", role="champion", model_uri="online:fraud-lr")],
    online_models=[LR, PER_USER],
)
