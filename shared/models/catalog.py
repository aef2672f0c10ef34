"""The online model catalogue: River models a deployment names by type, task and parameters.

The learner builds its models from here and the router unpickles what it built, so both agree on
what a name means. Linear models, regression trees (their leaves are linear models) and the
online network read numbers only (text features are dropped, flags count as 0/1) through a
`StandardScaler`; classification trees take every feature as it comes (text as a nominal value).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, Literal

from river import base, compose, forest, linear_model, preprocessing, tree

from shared.errors import DriftlineError
from shared.models.hbp import HedgeBackpropClassifier

Task = Literal["classification", "regression"]


class ModelSpecError(DriftlineError):
    """An online model spec names no model of the catalogue, or parameters the model refuses."""

    def __init__(self, model_type: str, task: str, problem: str) -> None:
        self.model_type = model_type
        self.task = task
        super().__init__(f"online model {model_type!r} ({task}): {problem}")


def _scaled(estimator: base.Estimator) -> compose.Pipeline:
    return compose.SelectType(numbers.Number) | preprocessing.StandardScaler() | estimator


CATALOGUE: dict[tuple[str, Task], Callable[..., base.Estimator]] = {
    ("logistic_regression", "classification"): lambda **p: _scaled(
        linear_model.LogisticRegression(**p)
    ),
    ("linear_regression", "regression"): lambda **p: _scaled(linear_model.LinearRegression(**p)),
    ("hoeffding_adaptive_tree", "classification"): tree.HoeffdingAdaptiveTreeClassifier,
    ("hoeffding_adaptive_tree", "regression"): lambda **p: _scaled(
        tree.HoeffdingAdaptiveTreeRegressor(**p)
    ),
    ("adaptive_random_forest", "classification"): forest.ARFClassifier,
    ("adaptive_random_forest", "regression"): lambda **p: _scaled(forest.ARFRegressor(**p)),
    ("hedge_backprop", "classification"): lambda **p: _scaled(HedgeBackpropClassifier(**p)),
}
"""Model factories by (type name, task); each takes the model's own parameters."""


def model_types() -> list[str]:
    """Every name a spec's `model_type` may take, with its tasks, e.g. ``logistic_regression``."""
    return sorted({f"{name} ({task})" for name, task in CATALOGUE})


def build_model(model_type: str, task: Task, params: dict[str, Any]) -> base.Estimator:
    """A fresh model of the catalogue; an unknown name or a refused parameter raises
    `ModelSpecError` naming it."""
    factory = CATALOGUE.get((model_type, task))
    if factory is None:
        raise ModelSpecError(model_type, task, f"not in the catalogue; known: {model_types()}")
    try:
        return factory(**params)
    except (TypeError, ValueError) as exc:
        raise ModelSpecError(model_type, task, f"bad parameters {params}: {exc}") from None
