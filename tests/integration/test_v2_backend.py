"""Models on a real MLServer (Open Inference Protocol, scikit-learn runtime) served through the
router on the real broker: an MLflow champion and a V2 canary, both variants' labeled errors
weighed by the drift service's trials until the canary is promoted (the deployment republished
with its URI as champion); `driftline deploy` checking an endpoint's metadata against the
stream; and MLServer killed mid-stream: every event gets its prediction or a dead letter naming
the endpoint, the breaker fails fast while it is down, and serving resumes once it is back."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from shared.admin import publish, read_compacted
from shared.deploying import check_deployable
from shared.errors import DriftlineError
from shared.events import (
    DeadLetter,
    Deployment,
    FeatureEvent,
    Feedback,
    PromotionDecision,
    PromotionPolicy,
    Variant,
    decode,
    encode,
)
from shared.overrides import carry_out, describe, plan
from shared.registry import MlflowRegistry, register_sklearn_model
from shared.topics import DEADLETTER, DECISIONS, DEPLOYMENTS, FEATURES, FEEDBACK, PREDICTIONS
from tests.support.kafka import Record, consume_until, produce
from tests.support.mlserver import V2_MODEL, V2_VERSION, LocalMlserver
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.integration

STREAM = {"name": "payments", "features": [{"name": "amount", "type": "numeric"}]}
EVERY = 30
"""Challenger outcomes between two looks of the policy (DRIFTLINE_DRIFT_PROMOTION_EVERY)."""
POLICY = PromotionPolicy(min_samples=60, min_improvement=0.05, max_looks=10)
CUT = 0.5
"""The true class is ``amount > 0.5``: the V2 model learned it; the MLflow champion learned
``amount > 0.8`` and errs on about 30 % of uniform amounts."""


@pytest.fixture
def mlflow_champion(mlflow_uri: str) -> Iterator[tuple[str, str]]:
    """A registered model of this test's own, version 1 @champion, of ``amount > 0.8``."""
    name = f"fraud-{uuid.uuid4().hex[:8]}"
    amounts = np.linspace(0, 1, 400)
    frame = pd.DataFrame({"amount": amounts})
    model = LogisticRegression(C=1000).fit(frame, (amounts > 0.8).astype(int))
    register_sklearn_model(mlflow_uri, name, model, frame.head(2))
    MlflowRegistry(mlflow_uri).set_alias(name, "champion", "1")
    yield mlflow_uri, name


def _events(prefix: str, n: int, seed: int) -> list[FeatureEvent]:
    rng = random.Random(seed)
    return [
        FeatureEvent(
            event_id=f"{prefix}-{i}",
            stream="payments",
            entity_id=f"user-{i % 200}",
            event_time=datetime.now(UTC),
            features={"amount": rng.random()},
        )
        for i in range(n)
    ]


async def _produce(pipeline: Pipeline, events: list[FeatureEvent]) -> None:
    await produce(pipeline.bootstrap, pipeline.topic(FEATURES), [(e.entity_id, e) for e in events])


def _declare(pipeline: Pipeline, tmp_path: Path, stream: dict) -> None:
    path = tmp_path / f"{stream['name']}.json"
    path.write_text(json.dumps(stream))
    result = pipeline.driftline("streams", "declare", "--file", str(path))
    assert result.returncode == 0, result.stderr


def _deploy(pipeline: Pipeline, tmp_path: Path, deployment: dict, **env: str) -> tuple[int, str]:
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(deployment))
    result = pipeline.driftline("deploy", "--file", str(path), **env)
    assert "Traceback" not in result.stderr
    return result.returncode, (result.stderr if result.returncode else result.stdout).strip()


async def test_an_mlflow_champion_and_a_v2_canary_are_weighed_and_the_canary_promoted(
    pipeline: Pipeline,
    mlserver: LocalMlserver,
    mlflow_champion: tuple[str, str],
    tmp_path: Path,
) -> None:
    mlflow_uri, name = mlflow_champion
    env = {"DRIFTLINE_MLFLOW_TRACKING_URI": mlflow_uri}
    canary_uri = mlserver.uri(V2_MODEL)
    pipeline.start_together(
        {
            "router": {"DRIFTLINE_ROUTER_MODEL_REFRESH_SECONDS": "1", **env},
            "feedback": {},
            "drift": {"DRIFTLINE_DRIFT_PROMOTION_EVERY": str(EVERY), **env},
        }
    )
    _declare(pipeline, tmp_path, STREAM)
    deployment = {
        "name": "fraud",
        "stream": "payments",
        "variants": [
            {"name": "champion", "role": "champion", "model_uri": f"models:/{name}@champion"},
            {"name": "canary", "role": "canary", "model_uri": canary_uri, "weight": 0.5},
        ],
        "promotion": POLICY.model_dump(),
    }
    code, printed = _deploy(pipeline, tmp_path, deployment, **env)
    assert code == 0, printed

    events = _events("ev", 300, seed=7)
    await _produce(pipeline, events)
    topic = pipeline.topic(PREDICTIONS)
    records = await consume_until(
        pipeline.bootstrap, [topic], lambda rs: len(rs) >= len(events), timeout=120
    )
    served = {r.json()["event_id"]: r.json()["outcome"] for r in records}
    assert set(served) == {e.event_id for e in events}
    by_variant = {o["variant"]: (o["model_name"], o["model_version"]) for o in served.values()}
    assert by_variant == {"champion": (name, "1"), "canary": (V2_MODEL, V2_VERSION)}
    canary = [o for o in served.values() if o["variant"] == "canary"]
    assert 90 < len(canary) < 210, "about half the entities on the canary"
    assert all(set(o["probabilities"]) == {"0", "1"} for o in canary)

    labels = [
        (e.event_id, Feedback(event_id=e.event_id, label=int(e.features["amount"] > CUT)))
        for e in events
    ]
    await produce(pipeline.bootstrap, pipeline.topic(FEEDBACK), labels)
    decisions_topic = pipeline.topic(DECISIONS)

    def decided(rs: list[Record]) -> bool:
        return any(decode(PromotionDecision, r.value, "d").action != "wait" for r in rs)

    decisions = await consume_until(pipeline.bootstrap, [decisions_topic], decided, timeout=120)
    *earlier, promote = [decode(PromotionDecision, r.value, decisions_topic) for r in decisions]
    assert all(d.action == "wait" for d in earlier)
    assert (promote.action, promote.decided_by) == ("promote", "policy")
    assert (promote.model_name, promote.challenger_variant) == (V2_MODEL, "canary")
    assert (promote.champion_version, promote.challenger_version) == ("1", V2_VERSION)
    assert promote.champion_error is not None and 0.15 < promote.champion_error < 0.45
    assert promote.challenger_error is not None and promote.challenger_error < 0.05

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        live = decode(
            Deployment,
            (await read_compacted(pipeline.settings, DEPLOYMENTS))[b"fraud"],
            DEPLOYMENTS.name,
        )
        if len(live.variants) == 1:
            break
    assert [(v.name, v.role, v.model_uri) for v in live.variants] == [
        ("champion", "champion", canary_uri)
    ]
    assert MlflowRegistry(mlflow_uri).aliases(name) == {"champion": "1"}, "no alias moved"

    for round_ in range(30):
        after = _events(f"after-{round_}", 20, seed=round_)
        await _produce(pipeline, after)
        wanted = {e.event_id for e in after}
        records = await consume_until(
            pipeline.bootstrap,
            [topic],
            lambda rs, w=wanted: w <= {r.json()["event_id"] for r in rs},
            timeout=60,
        )
        answered = {
            (r.json()["outcome"]["role"], r.json()["outcome"]["model_name"])
            for r in records
            if r.json()["event_id"] in wanted
        }
        if answered == {("champion", V2_MODEL)}:
            break
    assert answered == {("champion", V2_MODEL)}, "the router did not serve the promoted model"


async def test_deploy_checks_a_v2_endpoint_against_the_stream(
    pipeline: Pipeline, mlserver: LocalMlserver, tmp_path: Path
) -> None:
    _declare(pipeline, tmp_path, {"name": "other", "features": [{"name": "age"}]})

    async def refusal(uri: str) -> DriftlineError:
        variants = [Variant(name="champion", role="champion", model_uri=uri)]
        deployment = Deployment(name="fraud", stream="other", variants=variants)
        with pytest.raises(DriftlineError) as refused:
            await check_deployable(pipeline.settings, deployment)
        return refused.value

    wrong = await refusal(mlserver.uri(V2_MODEL))
    assert (wrong.exit_code, str(wrong)) == (
        2,
        f"wrong feature set: {mlserver.uri(V2_MODEL)}: it takes amount, which stream 'other' "
        "does not declare (it has age)",
    )
    unknown = await refusal(mlserver.uri("nope"))
    assert (unknown.exit_code, str(unknown)) == (
        2,
        f"unknown model: {mlserver.uri('nope')}: the server does not serve this model",
    )
    down = await refusal("v2+http://127.0.0.1:9/fraud")
    assert down.exit_code == 3
    assert str(down).startswith("endpoint unavailable: v2+http://127.0.0.1:9/fraud: ")


async def test_an_operator_promotes_a_v2_challenger_by_republishing_the_deployment(
    pipeline: Pipeline,
) -> None:
    champion, challenger = "v2+http://127.0.0.1:9/fraud", "v2+http://127.0.0.1:9/fraud/versions/2"
    variants = [
        Variant(name="champion", role="champion", model_uri=champion),
        Variant(name="canary", role="canary", model_uri=challenger, weight=0.1),
    ]
    deployment = Deployment(name="fraud", stream="payments", variants=variants)
    await publish(pipeline.settings, DEPLOYMENTS, "fraud", encode(deployment))
    registry = MlflowRegistry("http://127.0.0.1:9")  # no alias moves: never asked

    override = await plan(pipeline.settings, registry, "fraud", "promote", None, "test")
    assert describe(override.decision, done=False) == (
        "would promote fraud version 2 in fraud (champion was latest)"
    )
    await carry_out(pipeline.settings, registry, override)
    live = (await read_compacted(pipeline.settings, DEPLOYMENTS))[b"fraud"]
    promoted = decode(Deployment, live, DEPLOYMENTS.name)
    assert [(v.name, v.role, v.model_uri) for v in promoted.variants] == [
        ("champion", "champion", challenger)
    ]
    [published] = await consume_until(
        pipeline.bootstrap, [pipeline.topic(DECISIONS)], lambda rs: len(rs) >= 1
    )
    decision = decode(PromotionDecision, published.value, DECISIONS.name)
    assert (decision.action, decision.decided_by, decision.challenger_variant) == (
        "promote",
        "operator",
        "canary",
    )


def _outcomes(records: list[Record], predictions: str) -> dict[str, list[str]]:
    """By event id: ``predicted`` for each prediction, the reason of each dead letter."""
    found: dict[str, list[str]] = {}
    for record in records:
        if record.topic == predictions:
            found.setdefault(record.json()["event_id"], []).append("predicted")
        else:
            letter = decode(DeadLetter, record.value, record.topic)
            event_id = json.loads(letter.value)["event_id"]
            found.setdefault(event_id, []).append(letter.reason)
    return found


async def test_an_mlserver_outage_loses_no_event_and_serving_resumes(
    pipeline: Pipeline, mlserver: LocalMlserver
) -> None:
    uri = mlserver.uri(V2_MODEL)
    router = pipeline.start(
        "router", DRIFTLINE_ROUTER_V2_TIMEOUT_S="3", DRIFTLINE_ROUTER_V2_BREAKER_RESET_S="1"
    )
    variants = [Variant(name="champion", role="champion", model_uri=uri)]
    deployment = Deployment(name="fraud", stream="payments", variants=variants)
    await publish(pipeline.settings, DEPLOYMENTS, "fraud", encode(deployment))
    topics = [pipeline.topic(PREDICTIONS), pipeline.topic(DEADLETTER)]
    sent: list[FeatureEvent] = []

    async def send_and_account(events: list[FeatureEvent]) -> dict[str, list[str]]:
        """Produce `events` and wait until each has a prediction or a dead letter."""
        sent.extend(events)
        await _produce(pipeline, events)
        wanted = {e.event_id for e in sent}
        records = await consume_until(
            pipeline.bootstrap,
            topics,
            lambda rs: wanted <= set(_outcomes(rs, topics[0])),
            timeout=90,
        )
        return _outcomes(records, topics[0])

    lacking = _events("lacking", 1, seed=0)[0].model_copy(update={"features": {"age": 3}})
    before = await send_and_account([*_events("before", 100, seed=1), lacking])
    assert all(before[f"before-{i}"] == ["predicted"] for i in range(100)), (
        "one bad row spoils none"
    )
    assert before["lacking-0"] == [
        f"wrong feature set: {uri}: event lacks amount (deployment 'fraud', variant 'champion')"
    ]

    mlserver.kill()
    outcomes: dict[str, list[str]] = {}
    for round_ in range(5):
        outcomes = await send_and_account(_events(f"down-{round_}", 20, seed=round_))
    down = [outcomes[e.event_id] for e in sent if e.event_id.startswith("down-")]
    assert all(len(o) == 1 and o[0] != "predicted" for o in down), "nothing answers when down"
    reasons = [o[0] for o in down]
    assert all(
        f": {uri}: " in r and "(deployment 'fraud', variant 'champion')" in r for r in reasons
    )
    assert all(r.startswith(("endpoint unavailable: ", "circuit open: ")) for r in reasons)
    assert any(r.startswith("circuit open: ") for r in reasons), "the breaker never opened"
    failures = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(router.metrics())
        if family.name == "driftline_model_failures"
        for sample in family.samples
        if sample.name == "driftline_model_failures_total"
    }
    assert set(failures) <= {"endpoint unavailable", "circuit open", "wrong feature set"}
    assert failures["circuit open"] > 0

    mlserver.start([V2_MODEL])
    resumed = False
    for round_ in range(30):
        outcomes = await send_and_account(_events(f"after-{round_}", 10, seed=round_))
        if all(outcomes[f"after-{round_}-{i}"] == ["predicted"] for i in range(10)):
            resumed = True
            break
    assert resumed, "serving did not resume once MLServer was back"
    assert {e.event_id for e in sent} <= set(outcomes), "an event has neither answer"
