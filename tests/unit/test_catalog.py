"""The online model catalogue: every entry builds, learns, predicts and pickles; wrong names and
parameters are refused with a clear message."""

from __future__ import annotations

import pickle

import pytest
from river.datasets import synth

from shared.models.catalog import CATALOGUE, ModelSpecError, build_model


@pytest.mark.parametrize(("model_type", "task"), sorted(CATALOGUE))
def test_every_model_learns_from_mixed_features_and_survives_pickling(
    model_type: str, task: str
) -> None:
    params = {} if model_type.endswith("regression") else {"seed": 1}
    model = build_model(model_type, task, params)  # type: ignore[arg-type]
    for x, y in synth.Agrawal(seed=3).take(200):
        x = {**x, "country": "NL", "flagged": True}
        target = x["salary"] / 1000 if task == "regression" else bool(y)
        model.predict_one(x)
        model.learn_one(x, target)

    restored = pickle.loads(pickle.dumps(model))
    assert restored.predict_one(x) == model.predict_one(x)
    assert model.predict_one(x) is not None


def test_an_unknown_model_type_names_the_known_ones() -> None:
    with pytest.raises(ModelSpecError, match=r"'deep_forest' \(classification\): not in the"):
        build_model("deep_forest", "classification", {})


def test_a_model_for_the_wrong_task_is_refused() -> None:
    with pytest.raises(ModelSpecError, match="not in the catalogue"):
        build_model("logistic_regression", "regression", {})


def test_bad_parameters_are_refused_with_the_models_own_reason() -> None:
    with pytest.raises(ModelSpecError, match="bad parameters"):
        build_model("adaptive_random_forest", "classification", {"n_trees": 3, "bogus": 1})
