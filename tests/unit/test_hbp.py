"""Hedge Backpropagation: the Hedge step by hand, a gradient check, River's contract, learning.

The reference is Algorithm 1 of Sahoo et al. (IJCAI 2018) and, where the paper leaves a detail
implicit, the authors' code (github.com/LIBOL/ODL).
"""

from __future__ import annotations

import doctest
import math
import pickle
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from river import base, checks, datasets, metrics, preprocessing

from shared.models import HedgeBackpropClassifier, OnlineBackpropClassifier, hbp

CLASSIFIERS = (HedgeBackpropClassifier, OnlineBackpropClassifier)


def _small(cls: type[HedgeBackpropClassifier]) -> HedgeBackpropClassifier:
    return cls(**next(cls._unit_test_params()))


def _head_losses(model: HedgeBackpropClassifier, x: dict[str, float], y: str) -> list[float]:
    """Cross-entropy of every head on (x, y), read off the forward pass."""
    row = np.array([[x.get(f, 0.0) for f in model._features]])
    _, log_probas = model._forward(row)
    return (-log_probas[:, 0, model._class_index[y]]).tolist()


def test_hedge_step_rescales_discounts_floors_and_renormalises() -> None:
    model = HedgeBackpropClassifier(n_layers=2, hidden_units=2, beta=0.5, s=0.4, seed=0)
    assert model.alphas == pytest.approx([1 / 3] * 3)  # L + 1 heads, uniform at the start

    model._hedge(np.array([0.1, 3.0, 1.55]))

    # The paper's Hedge takes losses in [0, 1]: rescaled over the heads they are 0, 1 and 0.5.
    # Discounted: 1/3 * 0.5**0 = 0.333333, 1/3 * 0.5**1 = 0.166667 (under the floor
    # s / L = 0.2, so 0.2) and 1/3 * 0.5**0.5 = 0.235702; their sum is 0.769036.
    assert model.alphas == pytest.approx([0.433443, 0.260066, 0.306491], abs=1e-6)


def test_hedge_step_depends_on_the_ranking_of_the_losses_not_their_scale() -> None:
    scaled, shifted = (HedgeBackpropClassifier(n_layers=3, beta=0.9, seed=0) for _ in range(2))
    losses = np.array([0.2, 0.9, 0.4, 2.5])

    scaled._hedge(losses)
    shifted._hedge(10.0 * losses + 3.0)

    np.testing.assert_allclose(scaled.alphas, shifted.alphas, rtol=1e-12)
    assert scaled.alphas.argmax() == 0


def test_hedge_step_leaves_tied_heads_alone() -> None:
    model = HedgeBackpropClassifier(n_layers=3, beta=0.5, seed=0)

    model._hedge(np.full(4, 0.7))

    assert model.alphas == pytest.approx([0.25] * 4)


def test_learn_one_moves_alphas_by_the_hedge_rule_on_the_head_losses() -> None:
    model = HedgeBackpropClassifier(n_layers=2, hidden_units=2, beta=0.5, s=0.6, seed=3)
    samples = [({"u": 1.0, "v": -0.5}, "a"), ({"u": -0.2, "v": 0.8}, "b")] * 3
    for x, y in samples:
        model.learn_one(x, y)
    x, y = {"u": 0.7, "v": 0.1}, "a"
    before = model.alphas.tolist()
    losses = _head_losses(model, x, y)

    model.learn_one(x, y)

    rescaled = [(loss - min(losses)) / (max(losses) - min(losses)) for loss in losses]
    floor = 0.6 / 2
    discounted = [max(a * 0.5**loss, floor) for a, loss in zip(before, rescaled, strict=True)]
    expected = [d / sum(discounted) for d in discounted]
    assert model.alphas == pytest.approx(expected, rel=1e-12)
    assert math.isclose(model.alphas.sum(), 1.0)


def test_depth_zero_head_reads_the_input_itself() -> None:
    model = HedgeBackpropClassifier(n_layers=3, hidden_units=8, seed=4)
    for x, y in datasets.Phishing().take(30):
        model.learn_one(x, y)
    row = np.array([[x.get(f, 0.0) for f in model._features]])
    _, before = model._forward(row)

    model._params["input_weights"] *= -1.0  # every hidden layer now sees other features

    _, after = model._forward(row)
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.isclose(after[1:], before[1:]).all(axis=(1, 2)).any()


def test_alphas_is_a_copy() -> None:
    model = HedgeBackpropClassifier(n_layers=4, seed=0)

    model.alphas[:] = 0.0

    assert model.alphas == pytest.approx([0.2] * 5)


def test_gradient_matches_central_differences_and_drives_the_sgd_step() -> None:
    rng = np.random.default_rng(7)
    model = HedgeBackpropClassifier(n_layers=3, hidden_units=5, beta=0.7, seed=2)
    for label in rng.integers(0, 3, 30):
        model.learn_one({f"x{i}": float(v) for i, v in enumerate(rng.normal(size=3))}, int(label))
    x, label = rng.normal(size=3), 2
    y = model._class_index[label]
    alphas = model.alphas
    hidden, _ = model._forward(x[None, :])
    # A dead layer would leave the next layer's pre-activations at exactly 0, the ReLU kink,
    # where central differences see half a slope.
    assert (hidden > 0.0).any(axis=(1, 2)).all()

    def weighted_loss() -> float:
        _, log_probas = model._forward(x[None, :])
        return float(-(alphas * log_probas[:, 0, y]).sum())

    _, analytic = model._gradients(x, y, alphas)
    eps = 1e-6
    for name, param in model._params.items():
        numeric = np.zeros_like(param)
        for index in np.ndindex(param.shape):
            saved = param[index]
            param[index] = saved + eps
            upper = weighted_loss()
            param[index] = saved - eps
            lower = weighted_loss()
            param[index] = saved
            numeric[index] = (upper - lower) / (2 * eps)
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)
    assert np.abs(analytic["input_weights"]).max() > 1e-3  # some units were active
    assert np.abs(analytic["input_head_weights"]).max() > 1e-3

    before = {name: param.copy() for name, param in model._params.items()}
    model.learn_one({f"x{i}": float(v) for i, v in enumerate(x)}, label)
    for name, param in model._params.items():
        step = (before[name] - param) / model.learning_rate
        np.testing.assert_allclose(step, analytic[name], rtol=1e-9, atol=1e-12, err_msg=name)


def _river_checks() -> list[tuple[type[HedgeBackpropClassifier], Callable]]:
    return [(cls, check) for cls in CLASSIFIERS for check in checks.yield_checks(_small(cls))]


@pytest.mark.parametrize(
    ("cls", "check"),
    _river_checks(),
    ids=[f"{cls.__name__}-{check.__name__}" for cls, check in _river_checks()],
)
def test_river_estimator_contract(
    cls: type[HedgeBackpropClassifier], check: Callable[[HedgeBackpropClassifier], None]
) -> None:
    model = _small(cls)
    assert check.__name__ not in model._unit_test_skips()
    check(model.clone())


@pytest.mark.parametrize("cls", CLASSIFIERS)
def test_pickled_model_predicts_and_learns_like_the_original(
    cls: type[HedgeBackpropClassifier],
) -> None:
    model = _small(cls)
    for x, y in datasets.Phishing().take(50):
        model.learn_one(x, y)

    copy = pickle.loads(pickle.dumps(model))

    for x, y in datasets.Phishing().take(20):
        assert copy.predict_proba_one(x) == model.predict_proba_one(x)
        model.learn_one(x, y)
        copy.learn_one(x, y)
    np.testing.assert_array_equal(copy.alphas, model.alphas)


def test_same_seed_same_model_other_seed_other_model() -> None:
    models = [HedgeBackpropClassifier(n_layers=3, hidden_units=8, seed=s) for s in (5, 5, 6)]
    for x, y in datasets.Phishing().take(100):
        for model in models:
            model.learn_one(x, y)

    x = next(iter(datasets.Phishing()))[0]
    first, twin, other = (model.predict_proba_one(x) for model in models)
    assert first == twin
    assert first != other


def test_features_are_fixed_by_the_first_sample() -> None:
    model = HedgeBackpropClassifier(n_layers=2, hidden_units=8, seed=0)
    model.learn_one({"a": 1.0, "b": 2.0}, "yes")
    model.learn_one({"a": -1.0, "b": 0.5}, "no")

    unseen = model.predict_proba_one({"a": 1.0, "b": 2.0, "c": 100.0})
    missing = model.predict_proba_one({"a": 1.0})

    assert unseen == model.predict_proba_one({"a": 1.0, "b": 2.0})
    assert missing == model.predict_proba_one({"a": 1.0, "b": 0.0})
    assert model.predict_proba_one({"a": 1.0, "b": 2.0}) != missing


def test_new_labels_grow_the_heads() -> None:
    model = HedgeBackpropClassifier(n_layers=3, hidden_units=8, seed=0)
    assert model.predict_proba_one({"a": 1.0}) == {}
    assert model.predict_one({"a": 1.0}) is None

    for label in ("red", "green", "blue"):
        model.learn_one({"a": 1.0}, label)
        proba = model.predict_proba_one({"a": 1.0})
        assert math.isclose(sum(proba.values()), 1.0)

    assert set(proba) == {"red", "green", "blue"}
    assert model._params["head_weights"].shape == (3, 8, 3)
    assert model._params["input_head_weights"].shape == (1, 3)


def test_mini_batches_match_single_rows() -> None:
    rows = list(datasets.ImageSegments().take(60))
    X = pd.DataFrame([x for x, _ in rows])
    X.iloc[3, 2] = np.nan  # a missing key in a frame reads as 0.0, as in learn_one
    y = pd.Series([y for _, y in rows])
    one, many = (HedgeBackpropClassifier(n_layers=3, hidden_units=16, seed=1) for _ in range(2))

    many.learn_many(X.iloc[:40], y.iloc[:40])
    many.learn_many(X.iloc[40:], y.iloc[40:])
    for i, (x, label) in enumerate(rows):
        one.learn_one({k: v for k, v in x.items() if i != 3 or k != X.columns[2]}, label)

    np.testing.assert_allclose(many.alphas, one.alphas, rtol=1e-12)
    probas = many.predict_proba_many(X)
    assert list(probas.columns) == list(one.predict_proba_one(rows[0][0]))
    for (x, _), (_, row) in zip(rows, probas.iterrows(), strict=True):
        assert row.to_dict() == pytest.approx(one.predict_proba_one(x), rel=1e-9)


def test_plain_backprop_keeps_all_weight_on_the_last_head() -> None:
    model = OnlineBackpropClassifier(n_layers=3, hidden_units=8, seed=0)
    model.learn_one({"a": 0.5, "b": 1.0}, True)
    model.learn_one({"a": -0.5, "b": 0.0}, False)
    lower_heads = model._params["head_weights"][:2].copy()
    input_head = model._params["input_head_weights"].copy()

    for x, y in datasets.Phishing().take(50):
        model.learn_one(x, y)

    np.testing.assert_array_equal(model.alphas, [0.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(model._params["head_weights"][:2], lower_heads)
    np.testing.assert_array_equal(model._params["input_head_weights"], input_head)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"n_layers": 0}, "n_layers"),
        ({"hidden_units": 0}, "hidden_units"),
        ({"beta": 0.0}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"s": -0.1}, "s"),
        ({"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_invalid_hyperparameters_are_refused_by_name(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"HedgeBackpropClassifier: {name}="):
        HedgeBackpropClassifier(**params)


def _prequential_accuracy(model: base.Classifier, stream: Iterable[tuple[dict, Any]]) -> float:
    metric = metrics.Accuracy()
    for x, y in stream:
        metric.update(y, model.predict_one(x))
        model.learn_one(x, y)
    return metric.get()


def test_learns_multiclass_image_segments() -> None:
    model = preprocessing.StandardScaler() | HedgeBackpropClassifier(n_layers=4, seed=42)

    accuracy = _prequential_accuracy(model, datasets.ImageSegments().take(1000))

    assert accuracy > 0.75  # seven classes: chance is about 0.14
    assert len(model.predict_proba_one(next(iter(datasets.ImageSegments()))[0])) == 7


def test_learns_binary_phishing() -> None:
    model = preprocessing.StandardScaler() | HedgeBackpropClassifier(n_layers=4, seed=42)

    accuracy = _prequential_accuracy(model, datasets.Phishing())

    assert accuracy > 0.85  # the majority class is about 0.56


def test_weight_goes_to_the_heads_that_predict_best() -> None:
    scaler, model = preprocessing.StandardScaler(), HedgeBackpropClassifier(n_layers=8, seed=42)
    recent_losses = []
    for i, (x, y) in enumerate(datasets.Phishing()):
        scaler.learn_one(x)
        x = scaler.transform_one(x)
        if i >= 1000:
            recent_losses.append(_head_losses(model, x, y))
        model.learn_one(x, y)

    mean_losses = np.mean(recent_losses, axis=0)
    alphas = model.alphas
    assert mean_losses[alphas.argmax()] < mean_losses[alphas.argmin()]
    assert alphas.max() > 2 * alphas.min()


def test_docstring_examples_run() -> None:
    results = doctest.testmod(hbp, optionflags=doctest.NORMALIZE_WHITESPACE)

    assert results.attempted > 0
    assert results.failed == 0
