"""The learner's agents under Faust's test context: labeled predictions become one example per
online model of their deployment; examples are learned in batches, once each, into the model
table, with signed snapshots every N updates; no broker."""

from __future__ import annotations

import asyncio
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr
from river.datasets import synth

from services.learner.app import build
from services.learner.logic import OnlineLearner, TrainingExample
from shared.events import (
    LabeledPrediction,
    ModelSnapshot,
    encode,
)
from shared.settings import DriftlineSettings, LearnerSettings
from shared.signing import KeyRing, verify_snapshot
from tests.support.faust_doubles import (
    SentRecords,
    agent_context,
    capture_sends,
    fill_table,
    isolate_prometheus,
)
from tests.support.learner_fixtures import DEPLOYMENT, LR
from tests.support.records import stored_state

KEY = SecretStr("agent-test-key")
EXAMPLES_TOPIC = "a.driftline-learner-training-examples"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> SentRecords:
    isolate_prometheus(monkeypatch)
    return capture_sends(monkeypatch)


def fraud_lr(stored: bytes) -> Any:
    """The learner of model ``fraud-lr`` as its table holds it."""
    return stored_state("learner", "model_state", b"fraud-lr", stored)


def learner_app(tmp_path: Path) -> Any:
    app = build(
        DriftlineSettings(data_dir=tmp_path, topic_prefix="a.", snapshot_hmac_key=KEY),
        LearnerSettings(snapshot_every=10, batch_size=8, batch_within_s=0.05, mlflow_enabled=False),
    )
    fill_table(app, "deployments", {b"fraud": encode(DEPLOYMENT)})
    return app


def labeled(event_id: str, entity: str, deployment: str = "fraud") -> bytes:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return encode(
        LabeledPrediction(
            event_id=event_id,
            entity_id=entity,
            stream="payments",
            deployment=deployment,
            features={"amount": 3.0},
            outcomes=[],
            label=True,
            event_time=now,
            label_time=now,
            feedback_delay_s=0.0,
        )
    )


async def test_labeled_predictions_become_examples_per_model_and_entity(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = learner_app(tmp_path)
    async with agent_context(app, "route_labeled_prediction") as agent:
        await agent.put(labeled("e1", "u1"), key=b"fraud")
        await agent.put(labeled("e2", "u2", deployment="nobody"), key=b"nobody")

    assert sent.keys(EXAMPLES_TOPIC) == [b"fraud-lr", b"fraud-user/u1"]
    assert [e["lineage_offset"] for e in sent.values(EXAMPLES_TOPIC)] == [0, 0]
    [letter] = sent.values("a.deadletter")
    assert letter["reason"].startswith("unknown deployment 'nobody'")


async def test_examples_are_learned_once_in_batches_with_snapshots_every_n(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = learner_app(tmp_path)
    stream = [
        TrainingExample(
            model_key="fraud-lr",
            spec=LR,
            event_id=f"e{i}",
            features=x,
            label=bool(y),
            lineage="a.predictions.labeled[0]",
            lineage_offset=i,
        )
        for i, (x, y) in enumerate(synth.Agrawal(seed=5).take(30))
    ]
    expected = OnlineLearner(LR, rolling_window=1000)
    for example in stream:
        expected.learn(example)
    table = app.tables["model_state"]
    async with agent_context(app, "learn_from_examples") as agent:
        for example in stream[:20] + stream[5:]:
            await agent.put(encode(example), key=b"fraud-lr", wait=False)
        await agent.put(b"not an example", key=b"fraud-lr", wait=False)
        for _ in range(200):
            stored = table.get(b"fraud-lr")
            if stored is not None and fraud_lr(stored).n_learned == 30:
                break
            await asyncio.sleep(0.05)

    learner = fraud_lr(table[b"fraud-lr"])
    assert learner.n_learned == 30
    assert learner.metric_values() == expected.metric_values()
    snapshots = sent.values("a.model-snapshots")
    assert [s["sequence"] for s in snapshots] == [10, 20, 30]
    last = ModelSnapshot.model_validate(snapshots[-1])
    assert last.metrics == expected.metric_values()
    assert verify_snapshot(last, KeyRing(KEY))
    probe = stream[0].features
    assert pickle.loads(last.payload).predict_proba_one(probe) == expected.model.predict_proba_one(
        probe
    )
    [letter] = sent.values("a.deadletter")
    assert letter["reason"].startswith("bad event on")
    values = expected.metric_values()
    for unit, gauge in (
        ("accuracy", "driftline_online_model_accuracy"),
        ("log_loss", "driftline_online_model_log_loss"),
    ):
        for window, name in (("cumulative", unit), ("rolling", f"rolling_{unit}")):
            labels = {"model_id": "fraud-lr", "window": window}
            assert REGISTRY.get_sample_value(gauge, labels) == values[name], (gauge, window)
