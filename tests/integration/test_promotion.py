"""Promotion on evidence on the real broker and a real MLflow: two scikit-learn versions of one
model serve a deployment as champion and shadow; the router, feedback and drift workers turn
features and labels into each variant's live errors; the drift worker's policy waits while
labels are few, then promotes a clearly better challenger (the router serves it without a
restart) or rolls back a worse one. `driftline status` shows the latest decision."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

from shared.admin import publish, read_compacted
from shared.events import (
    Deployment,
    FeatureEvent,
    Feedback,
    PromotionDecision,
    PromotionPolicy,
    Variant,
    decode,
    encode,
)
from shared.registry import MlflowRegistry, register_sklearn_model
from shared.rollout import REJECTED_TAG
from shared.topics import DECISIONS, DEPLOYMENTS, FEATURES, FEEDBACK, PREDICTIONS
from tests.support.kafka import Record, consume_until, produce
from tests.support.pipeline import Pipeline
from tests.support.workers import Worker

pytestmark = pytest.mark.integration

STREAM = "payments"
EVERY = 50
"""Labeled events between two looks of the policy (DRIFTLINE_DRIFT_PROMOTION_EVERY)."""
POLICY = PromotionPolicy(min_samples=150, min_improvement=0.05, max_looks=10)
GOOD_CUT, BAD_CUT = 0.5, 0.8
"""The true class is ``amount > 0.5``; a model trained on ``amount > 0.8`` errs on ~30 %."""


def _model(cut: float) -> LogisticRegression:
    amounts = np.linspace(0, 1, 400)
    frame = pd.DataFrame({"amount": amounts})
    return LogisticRegression(C=1000).fit(frame, (amounts > cut).astype(int))


@pytest.fixture
def two_versions(mlflow_uri: str, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A model of this test's own with version 1 @champion and version 2 @challenger, trained
    on the cuts the test names (champion's, challenger's)."""
    champion_cut, challenger_cut = request.param
    name = f"fraud-{uuid.uuid4().hex[:8]}"
    example = pd.DataFrame({"amount": [0.1, 0.9]})
    for cut in (champion_cut, challenger_cut):
        register_sklearn_model(mlflow_uri, name, _model(cut), example)
    registry = MlflowRegistry(mlflow_uri)
    registry.set_alias(name, "champion", "1")
    registry.set_alias(name, "challenger", "2")
    yield mlflow_uri, name


def _deployment(name: str) -> Deployment:
    return Deployment(
        name="fraud",
        stream=STREAM,
        variants=[
            Variant(name="champion", role="champion", model_uri=f"models:/{name}@champion"),
            Variant(name="challenger", role="shadow", model_uri=f"models:/{name}/2"),
        ],
        promotion=POLICY,
    )


def _start_workers(pipeline: Pipeline, mlflow_uri: str) -> Worker:
    """Router, feedback and drift workers; returns the router."""
    env = {"DRIFTLINE_MLFLOW_TRACKING_URI": mlflow_uri}
    router, _, _ = pipeline.start_together(
        {
            "router": {"DRIFTLINE_ROUTER_MODEL_REFRESH_SECONDS": "1", **env},
            "feedback": {},
            "drift": {"DRIFTLINE_DRIFT_PROMOTION_EVERY": str(EVERY), **env},
        }
    )
    return router


async def _predict_and_label(pipeline: Pipeline, prefix: str, n: int, seed: int) -> None:
    """`n` events with uniform amounts; once both variants predicted them all, their labels."""
    rng = random.Random(seed)
    amounts = {f"{prefix}-{i}": rng.random() for i in range(n)}
    events = [
        FeatureEvent(
            event_id=event_id,
            stream=STREAM,
            entity_id=f"user-{i % 20}",
            event_time=datetime.now(UTC),
            features={"amount": amount},
        )
        for i, (event_id, amount) in enumerate(amounts.items())
    ]
    await produce(pipeline.bootstrap, pipeline.topic(FEATURES), [(e.entity_id, e) for e in events])
    topic = pipeline.topic(PREDICTIONS)

    def all_predicted(records: list[Record]) -> bool:
        return sum(r.key.decode().startswith(f"{prefix}-") for r in records if r.key) >= 2 * n

    await consume_until(pipeline.bootstrap, [topic], all_predicted, timeout=120)
    labels = [(e, Feedback(event_id=e, label=int(a > GOOD_CUT))) for e, a in amounts.items()]
    await produce(pipeline.bootstrap, pipeline.topic(FEEDBACK), labels)


async def _decisions(
    pipeline: Pipeline, done: Callable[[list[PromotionDecision]], bool]
) -> list[PromotionDecision]:
    """The decisions on ``decisions`` once `done` holds for them, in order."""
    topic = pipeline.topic(DECISIONS)

    def decoded(records: list[Record]) -> list[PromotionDecision]:
        assert all(r.key == b"fraud" for r in records)
        return [decode(PromotionDecision, r.value, topic) for r in records]

    records = await consume_until(
        pipeline.bootstrap, [topic], lambda rs: done(decoded(rs)), timeout=120
    )
    return decoded(records)


def _acted(decisions: list[PromotionDecision]) -> bool:
    return any(d.action != "wait" for d in decisions)


async def _deployed(pipeline: Pipeline) -> Deployment:
    value = (await read_compacted(pipeline.settings, DEPLOYMENTS))[b"fraud"]
    return decode(Deployment, value, DEPLOYMENTS.name)


@pytest.mark.parametrize("two_versions", [(BAD_CUT, GOOD_CUT)], indirect=True)
async def test_a_better_challenger_waits_for_enough_labels_then_is_promoted_and_served(
    pipeline: Pipeline, two_versions: tuple[str, str]
) -> None:
    mlflow_uri, name = two_versions
    router = _start_workers(pipeline, mlflow_uri)
    await publish(pipeline.settings, DEPLOYMENTS, "fraud", encode(_deployment(name)))

    await _predict_and_label(pipeline, "few", 2 * EVERY + 20, seed=1)
    waits = await _decisions(pipeline, lambda ds: len(ds) >= 2)
    assert [(d.action, d.challenger_samples) for d in waits] == [
        ("wait", EVERY),
        ("wait", 2 * EVERY),
    ]
    assert all(d.reason == "fewer than 150 labeled outcomes per variant" for d in waits)
    assert all(0 < d.champion_samples <= 2 * EVERY + 20 for d in waits)
    assert MlflowRegistry(mlflow_uri).aliases(name) == {"champion": "1", "challenger": "2"}
    assert [v.name for v in (await _deployed(pipeline)).variants] == ["champion", "challenger"]

    await _predict_and_label(pipeline, "more", 2 * EVERY, seed=2)
    *earlier, promote = await _decisions(pipeline, _acted)
    assert all(d.action == "wait" for d in earlier)
    assert (promote.action, promote.decided_by) == ("promote", "policy")
    assert (promote.champion_version, promote.challenger_version) == ("1", "2")
    assert promote.challenger_samples in (3 * EVERY, 4 * EVERY)
    assert promote.champion_samples >= POLICY.min_samples
    assert promote.champion_error is not None and promote.challenger_error is not None
    assert 0.2 < promote.champion_error < 0.4
    assert promote.challenger_error < 0.05
    assert promote.p_value is not None and promote.p_value < POLICY.alpha / POLICY.max_looks

    registry = MlflowRegistry(mlflow_uri)
    deadline = time.monotonic() + 30
    while registry.aliases(name) != {"champion": "2"} and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert registry.aliases(name) == {"champion": "2"}
    deployed = await _deployed(pipeline)
    assert [(v.name, v.model_uri) for v in deployed.variants] == [
        ("champion", f"models:/{name}@champion")
    ]

    served: list[str] = []
    for round_ in range(30):
        events = [
            FeatureEvent(
                event_id=f"after-{round_}-{i}",
                stream=STREAM,
                entity_id=f"user-{i}",
                event_time=datetime.now(UTC),
                features={"amount": 0.7},
            )
            for i in range(5)
        ]
        await produce(
            pipeline.bootstrap, pipeline.topic(FEATURES), [(e.entity_id, e) for e in events]
        )
        topic = pipeline.topic(PREDICTIONS)
        prefix = f"after-{round_}-".encode()
        records = await consume_until(
            pipeline.bootstrap,
            [topic],
            lambda rs, p=prefix: sum(bool(r.key and r.key.startswith(p)) for r in rs) >= 5,
        )
        served = [
            r.json()["outcome"]["model_version"]
            for r in records
            if r.key and r.key.startswith(prefix) and r.json()["outcome"]["role"] == "champion"
        ]
        if served and all(version == "2" for version in served):
            break
        await asyncio.sleep(1)
    assert served == ["2"] * 5, "the router did not serve the promoted version"
    assert router.process is not None and router.process.poll() is None, "router restarted"

    result = pipeline.driftline("status", DRIFTLINE_MLFLOW_TRACKING_URI=mlflow_uri, COLUMNS="250")
    assert result.returncode == 0, result.stderr
    status = result.stdout
    assert "promote (policy" in status
    assert f"{name} v2 vs v1" in status


@pytest.mark.parametrize("two_versions", [(GOOD_CUT, BAD_CUT)], indirect=True)
async def test_a_worse_challenger_is_rolled_back(
    pipeline: Pipeline, two_versions: tuple[str, str]
) -> None:
    mlflow_uri, name = two_versions
    _start_workers(pipeline, mlflow_uri)
    await publish(pipeline.settings, DEPLOYMENTS, "fraud", encode(_deployment(name)))

    await _predict_and_label(pipeline, "ev", 4 * EVERY, seed=3)
    *earlier, rollback = await _decisions(pipeline, _acted)
    assert all(d.action == "wait" for d in earlier)
    assert (rollback.action, rollback.reason) == ("rollback", "challenger is significantly worse")
    assert rollback.champion_error is not None and rollback.challenger_error is not None
    assert rollback.challenger_error > rollback.champion_error + 0.15

    registry = MlflowRegistry(mlflow_uri)
    deadline = time.monotonic() + 30
    while "challenger" in registry.aliases(name) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert registry.aliases(name) == {"champion": "1"}
    tags = MlflowClient(mlflow_uri).get_model_version(name, "2").tags
    assert tags[REJECTED_TAG] == "challenger is significantly worse"
    assert [v.name for v in (await _deployed(pipeline)).variants] == ["champion"]


@pytest.mark.parametrize("two_versions", [(BAD_CUT, GOOD_CUT)], indirect=True)
async def test_an_operator_promotes_and_rolls_back_and_mistakes_are_one_line(
    pipeline: Pipeline, two_versions: tuple[str, str]
) -> None:
    mlflow_uri, name = two_versions
    await publish(pipeline.settings, DEPLOYMENTS, "fraud", encode(_deployment(name)))

    def driftline(*args: str) -> tuple[int, str]:
        result = pipeline.driftline(*args, DRIFTLINE_MLFLOW_TRACKING_URI=mlflow_uri)
        assert "Traceback" not in result.stderr
        return result.returncode, (result.stderr if result.returncode else result.stdout).strip()

    assert driftline("rollback", "--deployment", "nope") == (
        2,
        "error: unknown deployment 'nope': `driftline deployments list` shows them",
    )
    assert driftline("promote", "--deployment", "fraud", "--version", "7") == (
        2,
        f"error: deployment 'fraud': model {name!r} has no version '7'",
    )

    assert driftline("promote", "--deployment", "fraud", "--dry-run") == (
        0,
        f"would promote {name} version 2 in fraud (champion was 1)",
    )
    assert driftline("promote", "--deployment", "fraud") == (
        2,
        f"error: promote {name} version 2 in fraud (champion was 1)? needs confirmation: "
        "pass --yes (no terminal to ask on)",
    )
    assert driftline("promote", "--deployment", "fraud", "--yes") == (
        0,
        f"promoted {name} version 2 in fraud (champion was 1)",
    )
    assert MlflowRegistry(mlflow_uri).aliases(name) == {"champion": "2"}
    assert [v.name for v in (await _deployed(pipeline)).variants] == ["champion"]
    [decision] = await _decisions(pipeline, lambda ds: len(ds) >= 1)
    assert (decision.action, decision.decided_by, decision.reason) == (
        "promote",
        "operator",
        "operator override",
    )
    assert (decision.champion_version, decision.challenger_version) == ("1", "2")
    assert decision.champion_error is None

    assert driftline("rollback", "--deployment", "fraud", "--yes") == (
        2,
        f"error: deployment 'fraud': no canary or shadow of {name!r} and no challenger alias",
    )
    MlflowRegistry(mlflow_uri).set_alias(name, "challenger", "1")
    code, printed = driftline("rollback", "--deployment", "fraud", "--yes", "--json")
    assert code == 0
    rolled_back = json.loads(printed)
    assert rolled_back["dry_run"] is False
    assert {k: rolled_back["decision"][k] for k in ("action", "decided_by", "deployment")} == {
        "action": "rollback",
        "decided_by": "operator",
        "deployment": "fraud",
    }
    assert (
        rolled_back["decision"]["challenger_version"],
        rolled_back["decision"]["champion_version"],
    ) == ("1", "2")
    assert MlflowRegistry(mlflow_uri).aliases(name) == {"champion": "2"}
    tags = MlflowClient(mlflow_uri).get_model_version(name, "1").tags
    assert tags[REJECTED_TAG] == "operator override"
