"""Batch trainers: plain functions ``(features, labels) -> fitted model`` that a deployment names
by dotted path (``shared.trainers:gradient_boosting``); retraining calls them on fresh data.

Write your own with the same signature; any scikit-learn-compatible estimator works, since the
registry logs it with MLflow's sklearn flavour and the router loads it as a pyfunc. Add it to
`DriftlineSettings.allowed_trainers`: whoever can write a deployment record chooses its trainer,
so retraining runs only trainers the operator allowed, and imports nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection
from typing import Any

import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from shared.errors import DriftlineError

Trainer = Callable[[pd.DataFrame, pd.Series], Any]


def gradient_boosting(features: pd.DataFrame, labels: pd.Series) -> Any:
    """A histogram gradient-boosting classifier: strong on tabular data, no scaling needed."""
    return HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(features, labels)


class TrainerNotAllowedError(DriftlineError):
    """A deployment names a trainer the operator did not allow; it is not even imported."""

    def __init__(self, trainer: str, allowed: Collection[str]) -> None:
        self.trainer = trainer
        self.allowed = sorted(allowed)
        super().__init__(
            f"trainer {trainer!r} is not allowed: retraining runs only the trainers in "
            f"DRIFTLINE_ALLOWED_TRAINERS ({', '.join(self.allowed) or 'none'})"
        )


def load_trainer(path: str, allowed: Collection[str]) -> Trainer:
    """The trainer named ``module:function`` if `allowed` holds it (checked before anything is
    imported); a name not allowed or not found is a clear error, not a traceback."""
    if path not in allowed:
        raise TrainerNotAllowedError(path, allowed)
    module_name, _, function_name = path.partition(":")
    try:
        trainer = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError, ValueError):
        raise DriftlineError(
            f"trainer {path!r} not found: expected 'package.module:function'"
        ) from None
    if not callable(trainer):
        raise DriftlineError(f"trainer {path!r} is not a function")
    return trainer
