"""Batch trainers: plain functions ``(features, labels) -> fitted model`` that a deployment names
by dotted path (``shared.trainers:gradient_boosting``); retraining calls them on fresh data.

Write your own with the same signature; any scikit-learn-compatible estimator works, since the
registry logs it with MLflow's sklearn flavour and the router loads it as a pyfunc.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from shared.errors import DriftlineError

Trainer = Callable[[pd.DataFrame, pd.Series], Any]


def gradient_boosting(features: pd.DataFrame, labels: pd.Series) -> Any:
    """A histogram gradient-boosting classifier: strong on tabular data, no scaling needed."""
    return HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(features, labels)


def load_trainer(path: str) -> Trainer:
    """The trainer named ``module:function``; a wrong name is a clear error, not a traceback."""
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
