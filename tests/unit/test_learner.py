"""The learner's pure part: training examples per online model, predict-then-learn matching plain
River to the last digit, redelivered examples skipped, a changed spec starting a fresh model."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from river import linear_model, metrics, preprocessing
from river.datasets import synth

from services.learner.logic import (
    LabelError,
    OnlineLearner,
    TrainingExample,
    learner_for,
    training_examples,
)
from shared.events import LabeledPrediction, OnlineModelSpec, Provenance
from shared.signing import KeyRing, verify_snapshot
from tests.support.learner_fixtures import DEPLOYMENT, LR


def labeled(label: object = True, entity: str = "u1") -> LabeledPrediction:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return LabeledPrediction(
        event_id="e1",
        entity_id=entity,
        stream="payments",
        deployment="fraud",
        features={"amount": 3.0},
        outcomes=[],
        label=label,
        event_time=now,
        label_time=now,
        feedback_delay_s=0.0,
    )


def examples(spec: OnlineModelSpec = LR, n: int = 500) -> list[TrainingExample]:
    return [
        TrainingExample(
            model_key=spec.model_id,
            spec=spec,
            event_id=f"e{i}",
            features=x,
            label=bool(y),
            lineage="a.feedback[0]>a.predictions.labeled[0]",
            lineage_offset=i,
        )
        for i, (x, y) in enumerate(synth.Agrawal(classification_function=2, seed=7).take(n))
    ]


def test_one_example_per_online_model_keyed_by_model_or_entity() -> None:
    found = training_examples(labeled(entity="u9"), DEPLOYMENT, "labeled", partition=1, offset=42)

    assert [e.model_key for e in found] == ["fraud-lr", "fraud-user/u9"]
    assert {(e.lineage, e.lineage_offset) for e in found} == {("labeled[1]", 42)}


def test_an_example_is_applied_under_the_provenance_of_its_labeled_prediction() -> None:
    joined_at = Provenance(topic="feedback", partition=3, offset=7)
    resent = labeled(entity="u9").model_copy(update={"provenance": joined_at})
    found = training_examples(resent, DEPLOYMENT, "labeled", partition=1, offset=42)

    assert {(e.lineage, e.lineage_offset) for e in found} == {("feedback[3]>labeled[1]", 7)}


def test_a_late_variants_labeled_record_teaches_no_model_the_event_again() -> None:
    late = labeled(entity="u9").model_copy(update={"late_variant": True})

    assert training_examples(late, DEPLOYMENT, "labeled", 0, 7) == []


def test_a_labeled_prediction_resent_by_a_feedback_replay_is_not_learned_twice() -> None:
    learner = OnlineLearner(LR, 100)
    stream = [
        labeled(entity="u1").model_copy(
            update={"provenance": Provenance(topic="feedback", partition=0, offset=i)}
        )
        for i in range(5)
    ]
    # the originals at labeled offsets 0-4, a replay re-sent the last three at offsets 5-7
    delivered = [*enumerate(stream), *zip(range(5, 8), stream[2:], strict=True)]
    applied = [
        learner.learn(example)
        for offset, record in delivered
        for example in training_examples(record, DEPLOYMENT, "labeled", 0, offset)
        if example.spec == LR
    ]

    assert applied == [True] * 5 + [False] * 3
    assert learner.n_learned == 5


def test_a_regression_model_refuses_a_text_label() -> None:
    regression = OnlineModelSpec(
        model_id="amount", model_type="linear_regression", task="regression"
    )
    deployment = DEPLOYMENT.model_copy(update={"online_models": [regression]})
    with pytest.raises(LabelError, match=r"'amount'.*'high' is not a number"):
        training_examples(labeled(label="high"), deployment, "labeled", 0, 0)


def test_prequential_metrics_match_plain_river_to_the_last_digit() -> None:
    learner = OnlineLearner(LR, rolling_window=100)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    accuracy, log_loss = metrics.Accuracy(), metrics.CrossEntropy()
    for example in examples():
        learner.learn(example)
        accuracy.update(example.label, model.predict_one(example.features))
        log_loss.update(example.label, model.predict_proba_one(example.features))
        model.learn_one(example.features, example.label)

    values = learner.metric_values()
    assert (values["accuracy"], values["log_loss"]) == (accuracy.get(), log_loss.get())
    assert learner.model.predict_proba_one({"salary": 1.0}) == model.predict_proba_one(
        {"salary": 1.0}
    )


def test_a_redelivered_example_is_not_learned_twice() -> None:
    stream = examples(n=50)
    once, twice = OnlineLearner(LR, 100), OnlineLearner(LR, 100)
    for example in stream:
        once.learn(example)
    replayed = [twice.learn(e) for e in stream[:30] + stream[10:]]

    assert replayed.count(False) == 20
    assert (twice.n_learned, twice.metric_values()) == (50, once.metric_values())
    assert pickle.dumps(twice.model) == pickle.dumps(once.model)


def test_a_changed_spec_starts_a_fresh_model_but_remembers_what_it_applied() -> None:
    learner = OnlineLearner(LR, 100)
    for example in examples(n=10):
        learner.learn(example)
    tree = OnlineModelSpec(model_id="fraud-lr", model_type="hoeffding_adaptive_tree")

    assert learner_for(learner, LR, 100) is learner
    fresh = learner_for(learner, tree, 100)
    assert (fresh.n_learned, fresh.applied.offsets) == (
        0,
        {"a.feedback[0]>a.predictions.labeled[0]": 9},
    )


def test_a_snapshot_is_signed_and_carries_the_metrics() -> None:
    learner = OnlineLearner(LR, 100)
    for example in examples(n=20):
        learner.learn(example)
    keys = KeyRing(SecretStr("k"))
    snapshot = learner.snapshot("fraud-lr", keys)

    assert verify_snapshot(snapshot, keys)
    assert not verify_snapshot(snapshot.model_copy(update={"model_id": "other"}), keys)
    assert (snapshot.sequence, snapshot.n_learned) == (20, 20)
    assert set(snapshot.metrics) == {"accuracy", "log_loss", "rolling_accuracy", "rolling_log_loss"}


def test_a_regression_model_reports_mae_as_plain_river_does() -> None:
    spec = OnlineModelSpec(model_id="salary", model_type="linear_regression", task="regression")
    learner = OnlineLearner(spec, rolling_window=50)
    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    mae = metrics.MAE()
    for i, (x, _) in enumerate(synth.Agrawal(seed=3).take(300)):
        y = x.pop("salary") / 1000
        learner.learn(
            TrainingExample(
                model_key="salary",
                spec=spec,
                event_id=f"e{i}",
                features=x,
                label=y,
                lineage="labeled[0]",
                lineage_offset=i,
            )
        )
        mae.update(y, model.predict_one(x))
        model.learn_one(x, y)

    assert set(learner.metric_values()) == {"mae", "rolling_mae"}
    assert learner.metric_values()["mae"] == mae.get()
