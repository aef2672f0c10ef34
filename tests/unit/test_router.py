"""The router's pure logic: stable canary shares, rules, variant choice, the deployment index,
the `deploy` options, and the model backends' cache and snapshot checks (no Kafka, no MLflow)."""

from __future__ import annotations

import math
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError
from sklearn.linear_model import LogisticRegression

from shared.backends import (
    Answer,
    MlflowBackend,
    ModelBackend,
    ModelCache,
    OnlineBackend,
    SnapshotStore,
    backend_for,
)
from shared.deploying import deployment_from_options, parse_rule
from shared.errors import (
    DriftlineError,
    ModelError,
    SignatureError,
    UnknownModelError,
    WrongFeaturesError,
)
from shared.events import (
    Deployment,
    FeatureEvent,
    RoutingRule,
    Variant,
    encode,
)
from shared.routing import (
    DeploymentIndex,
    NoDeploymentError,
    answer_calls,
    choose_variants,
    entity_share,
    plan_calls,
    prediction_for,
    rule_matches,
)
from shared.signing import KeyRing, sign_snapshot
from tests.support.hostile import marker_pickle, payload_only_signature
from tests.support.records import unsigned_snapshot

KEY = SecretStr("unit-key")
DEPLOYMENT = deployment_from_options(
    "fraud",
    "payments",
    "models:/fraud@champion",
    canary="models:/fraud/2",
    canary_weight=0.1,
    rules=["tier==premium=models:/fraud/3", "amount>1000=models:/big/1"],
    shadows=["online:fraud"],
)


def event(entity: str = "u1", **features: Any) -> FeatureEvent:
    return FeatureEvent(
        event_id="e1",
        stream="payments",
        entity_id=entity,
        event_time=datetime(2026, 1, 1, tzinfo=UTC),
        features={"amount": 5.0, "tier": "basic"} | features,
    )


def test_entity_share_is_stable_and_spreads_entities_evenly() -> None:
    shares = [entity_share("fraud", f"user-{i}") for i in range(20_000)]

    assert shares[:3] == [entity_share("fraud", f"user-{i}") for i in range(3)]
    assert all(0 <= s < 1 for s in shares)
    assert 0.09 < sum(s < 0.1 for s in shares) / len(shares) < 0.11
    assert entity_share("fraud", "user-1") != entity_share("other", "user-1")


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        (RoutingRule(field="tier", value="premium"), True),
        (RoutingRule(field="tier", op="!=", value="premium"), False),
        (RoutingRule(field="amount", op=">", value=100), True),
        (RoutingRule(field="amount", op="<=", value=100), False),
        (RoutingRule(field="tier", op="in", value=["gold", "premium"]), True),
        (RoutingRule(field="amount", op=">", value="text"), False),
        (RoutingRule(field="missing", value=1), False),
    ],
)
def test_rules_compare_a_feature_and_never_raise(rule: RoutingRule, matches: bool) -> None:
    assert rule_matches(rule, {"tier": "premium", "amount": 500.0}) is matches


def test_first_matching_rule_wins_then_canary_by_share_then_champion_and_shadows_always() -> None:
    canary_entity = next(f"u{i}" for i in range(1000) if entity_share("fraud", f"u{i}") < 0.1)
    champion_entity = next(f"u{i}" for i in range(1000) if entity_share("fraud", f"u{i}") >= 0.1)

    def chosen(e: FeatureEvent) -> list[tuple[str, bool]]:
        return [(v.name, served) for v, served in choose_variants(DEPLOYMENT, e)]

    assert chosen(event(champion_entity)) == [("champion", True), ("shadow-1", False)]
    assert chosen(event(canary_entity)) == [("canary", True), ("shadow-1", False)]
    assert chosen(event(canary_entity, tier="premium", amount=5000.0))[0] == ("rule-1", True)
    assert chosen(event(champion_entity, amount=5000.0))[0] == ("rule-2", True)


def test_a_prediction_says_whether_an_online_model_answered() -> None:
    answer = Answer("fraud", "3", True, None)
    champion, shadow = DEPLOYMENT.variants[0], DEPLOYMENT.variants[-1]
    assert (champion.model_uri, shadow.model_uri) == ("models:/fraud@champion", "online:fraud")
    flags = [prediction_for(event(), DEPLOYMENT, v, True, answer, 1.0).outcome.online
             for v in (champion, shadow)]  # fmt: skip
    assert flags == [False, True]


def test_a_replayed_event_gets_the_prediction_id_it_got_before() -> None:
    champion, shadow = DEPLOYMENT.variants[0], DEPLOYMENT.variants[-1]
    answer = Answer("fraud", "3", True, None)
    first = prediction_for(event(), DEPLOYMENT, champion, True, answer, 1.0)
    replay = prediction_for(event(), DEPLOYMENT, champion, True, answer, 7.0)

    assert first.prediction_id == replay.prediction_id
    assert (
        first.prediction_id
        != prediction_for(event(), DEPLOYMENT, shadow, False, answer, 1.0).prediction_id
    )
    newer = Answer("fraud", "4", True, None)
    assert (
        first.prediction_id
        != prediction_for(event(), DEPLOYMENT, champion, True, newer, 1.0).prediction_id
    )


def test_index_follows_updates_moves_and_deletions_by_stream() -> None:
    index = DeploymentIndex.empty()
    index.apply("fraud", DEPLOYMENT)
    moved = DEPLOYMENT.model_copy(update={"stream": "clicks"})

    assert index.for_stream("payments") == [DEPLOYMENT]
    index.apply("fraud", moved)
    assert index.for_stream("clicks") == [moved]
    with pytest.raises(NoDeploymentError, match="no deployment: stream 'payments' has none"):
        index.for_stream("payments")
    assert len(index) == 1
    assert "online:fraud" in index.model_uris()
    index.apply("fraud", None)
    assert len(index) == 0


@pytest.mark.parametrize(
    ("variants", "problem"),
    [
        ([], "exactly one champion"),
        ([("a", "champion"), ("b", "champion")], "exactly one champion"),
        ([("a", "champion"), ("a", "shadow")], "unique"),
        ([("a", "champion"), ("b", "rule")], "needs a rule"),
    ],
)
def test_a_deployment_must_be_answerable(variants: list[tuple[str, str]], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        Deployment(
            name="d",
            stream="s",
            variants=[Variant(name=n, role=r, model_uri="online:m") for n, r in variants],
        )


def test_deploy_options_parse_rules_and_refuse_mistakes_in_one_line() -> None:
    assert parse_rule('tier == "premium"=models:/fraud@premium') == (
        RoutingRule(field="tier", op="==", value="premium"),
        "models:/fraud@premium",
    )
    assert parse_rule("amount>=10.5=online:m")[0] == RoutingRule(
        field="amount", op=">=", value=10.5
    )
    assert parse_rule('country in ["NL", "BE"]=online:m')[0].value == ["NL", "BE"]
    with pytest.raises(DriftlineError, match="expected <field><op><value>=<model uri>"):
        parse_rule("tier=premium")
    with pytest.raises(DriftlineError, match="deployment 'd': weight: Input should be less"):
        deployment_from_options("d", "s", "online:a", canary="online:b", canary_weight=1.5)


def signed_snapshot(model_id: str, model: Any, sequence: int, key: SecretStr = KEY) -> bytes:
    return encode(
        sign_snapshot(unsigned_snapshot(model_id, sequence, pickle.dumps(model)), KeyRing(key))
    )


class Always:
    def __init__(self, label: str) -> None:
        self.label = label

    def predict_one(self, x: dict[str, Any]) -> str:
        return self.label


def test_snapshots_are_verified_before_stored_and_only_newer_ones_replace() -> None:
    store = SnapshotStore(KeyRing(KEY), cache_size=1)

    with pytest.raises(SignatureError, match="bad signature"):
        store.accept(signed_snapshot("m", Always("x"), 1, SecretStr("other")), "t")
    store.apply(b"m", signed_snapshot("m", Always("a"), 2))
    assert store.accept(signed_snapshot("m", Always("b"), 1), "t") is None
    assert store.accept(signed_snapshot("m", Always("b"), 3), "t") is not None
    assert store.model("missing") is None
    model, sequence = store.model("m") or (None, 0)
    assert (model.label, sequence) == ("a", 2)


def test_online_backend_prefers_the_entitys_model_and_answers_cold_without_one() -> None:
    store = SnapshotStore(KeyRing(KEY), cache_size=10)
    store.apply(b"m", signed_snapshot("m", Always("shared"), 4))
    store.apply(b"m/u1", signed_snapshot("m/u1", Always("own"), 7))
    backend = OnlineBackend("online:m", store)
    cold = OnlineBackend("online:none", store)

    assert backend.predict({}, "u1") == Answer("m/u1", "7", "own", None)
    assert backend.predict({}, "u2") == Answer("m", "4", "shared", None)
    assert cold.predict({}, "u1") == Answer("none", "cold", None, None)


def test_model_uris_pick_their_backend_or_are_refused() -> None:
    store = SnapshotStore(KeyRing(KEY), cache_size=1)
    assert isinstance(backend_for("models:/fraud@champion", "http://x", store), MlflowBackend)
    assert isinstance(backend_for("online:m", "http://x", store), OnlineBackend)
    with pytest.raises(UnknownModelError, match="unknown model: s3://m: unknown scheme"):
        backend_for("s3://m", "http://x", store)
    with pytest.raises(UnknownModelError, match="expected models:/<name>@<alias>"):
        backend_for("models:/a/b/c", "http://x", store)


class Counting(ModelBackend):
    loads = 0
    unloads = 0

    async def load(self) -> None:
        Counting.loads += 1
        if "missing" in self.uri:
            raise UnknownModelError(self.uri, "no such model")

    async def unload(self) -> None:
        Counting.unloads += 1

    def predict(self, features: dict[str, Any], entity_id: str) -> Answer:
        return Answer("m", "1", 1, None)


async def test_cache_loads_once_per_uri_remembers_failures_and_unloads_unused() -> None:
    cache = ModelCache(Counting, retry_seconds=60)

    first = await cache.get("a")
    assert await cache.get("a") is first
    for _ in range(2):
        with pytest.raises(UnknownModelError):
            await cache.get("missing")
    assert Counting.loads == 2
    await cache.get("b")
    await cache.refresh({"b"})
    assert (len(cache), Counting.unloads) == (1, 1)


class Echo(ModelBackend):
    """Answers each event's amount; refuses a negative one; counts its batch calls."""

    calls = 0

    async def load(self) -> None:
        pass

    async def unload(self) -> None:
        pass

    def predict(self, features: dict[str, Any], entity_id: str) -> Answer:
        if features["amount"] < 0:
            raise WrongFeaturesError(self.uri, "negative amount")
        return Answer(self.uri, "1", features["amount"], None)

    async def predict_many(self, rows: Any) -> list[Answer | ModelError]:
        Echo.calls += 1
        return await super().predict_many(rows)


def test_deployments_the_gateway_answered_an_event_for_are_not_asked_again() -> None:
    other = DEPLOYMENT.model_copy(update={"name": "audit"})
    index = DeploymentIndex.empty()
    index.apply("fraud", DEPLOYMENT)
    index.apply("audit", other)
    answered = event("u1").model_copy(update={"answered_for": ["fraud"]})
    both = event("u2")

    calls, unrouted = plan_calls([(0, answered), (1, both)], index)

    assert not unrouted
    assert {(c.position, c.deployment.name) for c in calls} == {
        (0, "audit"),
        (1, "fraud"),
        (1, "audit"),
    }
    only_fraud = event("u3").model_copy(update={"answered_for": ["fraud", "audit"]})
    assert plan_calls([(0, only_fraud)], index) == ([], {})


async def test_a_batch_asks_each_model_once_and_keeps_event_order_and_failures_apart() -> None:
    two = Deployment(
        name="two",
        stream="payments",
        variants=[
            Variant(name="champion", role="champion", model_uri="m:champ"),
            Variant(name="shadow", role="shadow", model_uri="m:gone"),
        ],
    )
    index = DeploymentIndex.empty()
    index.apply("two", two)
    events = [
        (0, event("u1", amount=1.0)),
        (2, event("u2", amount=-1.0)),
        (3, event("u3", amount=3.0).model_copy(update={"stream": "orphans"})),
        (4, event("u4", amount=4.0)),
    ]
    calls, unrouted = plan_calls(events, index)
    assert list(unrouted) == [3]
    assert [(c.position, c.variant.name) for c in calls] == [
        (0, "champion"),
        (0, "shadow"),
        (2, "champion"),
        (2, "shadow"),
        (4, "champion"),
        (4, "shadow"),
    ]
    gone = UnknownModelError("m:gone", "no such model")
    Echo.calls = 0
    predictions, failures = await answer_calls(calls, {"m:champ": Echo("m:champ"), "m:gone": gone})

    assert Echo.calls == 1
    assert [(p.entity_id, p.outcome.output) for p in predictions] == [("u1", 1.0), ("u4", 4.0)]
    assert {position: [(d, v) for d, v, _ in f] for position, f in failures.items()} == {
        0: [("two", "shadow")],
        2: [("two", "champion"), ("two", "shadow")],
        4: [("two", "shadow")],
    }
    assert isinstance(failures[2][0][2], WrongFeaturesError)


async def test_an_mlflow_classifier_scores_a_batch_in_one_call_with_the_per_event_answers() -> None:
    model = LogisticRegression().fit([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]], [0, 0, 1, 1])
    backend = MlflowBackend("models:/clf/1", "http://unused")
    backend._classifier, backend._model, backend._inputs = model, model, ["a", "b"]
    rows = [({"a": 0.5, "b": 1.0}, "u1"), ({"a": 2.5, "b": 0.0}, "u2")]

    batch = await backend.predict_many(rows)
    assert batch == [backend.predict(features, entity) for features, entity in rows]
    assert [answer.output for answer in batch if isinstance(answer, Answer)] == [0, 1]
    broken = await backend.predict_many([*rows, ({"a": 1.0}, "u3")])
    assert broken[:2] == batch
    assert isinstance(broken[2], WrongFeaturesError)


def test_a_snapshot_is_unpickled_once_until_a_newer_one_is_applied() -> None:
    store = SnapshotStore(KeyRing(KEY), cache_size=10)
    store.apply(b"m", signed_snapshot("m", Always("a"), 1))

    first = store.model("m")
    assert first is not None and store.model("m") is first
    assert store.model("m/u1") is None
    store.apply(b"m", signed_snapshot("m", Always("b"), 2))
    model, sequence = store.model("m") or (None, 0)
    assert (model.label, sequence) == ("b", 2)


class Unusable(ModelBackend):
    """Answers NaN for a negative amount, a probability of infinity for a zero one."""

    async def load(self) -> None:
        pass

    async def unload(self) -> None:
        pass

    def predict(self, features: dict[str, Any], entity_id: str) -> Answer:
        if features["amount"] < 0:
            return Answer(self.uri, "1", math.nan, None)
        probabilities = {"yes": math.inf if features["amount"] == 0 else 0.5}
        return Answer(self.uri, "1", "yes", probabilities)


async def test_an_answer_no_prediction_may_hold_fails_that_event_only() -> None:
    index = DeploymentIndex.empty()
    index.apply("fraud", DEPLOYMENT)
    events = [(i, event(f"u{i}", amount=amount)) for i, amount in enumerate([-1.0, 0.0, 2.0])]
    calls, _ = plan_calls(events, index)
    backends = {uri: Unusable(uri) for uri in index.model_uris()}
    predictions, failures = await answer_calls(calls, backends)

    assert {p.entity_id for p in predictions} == {"u2"}
    problems = {position: str(f[0][2]) for position, f in failures.items()}
    assert problems.keys() == {0, 1}
    assert "unusable answer: output: Value error, nan is not a finite number" in problems[0]
    assert "unusable answer: probabilities.yes: Value error, inf is not a finite" in problems[1]


def test_a_stored_snapshot_that_is_not_verified_for_its_key_is_refused_unloaded(
    tmp_path: Path,
) -> None:
    store = SnapshotStore(KeyRing(KEY), cache_size=1)
    store.apply(b"m", signed_snapshot("m", Always("a"), 2))
    marker = tmp_path / "pwned"
    hostile = unsigned_snapshot("m", 3, marker_pickle(marker))
    genuine = sign_snapshot(unsigned_snapshot("m", 1, pickle.dumps(Always("old"))), KeyRing(KEY))
    other = sign_snapshot(unsigned_snapshot("other", 9, pickle.dumps(Always("o"))), KeyRing(KEY))
    forged = [
        encode(hostile),
        # signed the old way, over the payload only
        encode(
            hostile.model_copy(update={"signature": payload_only_signature(hostile.payload, KEY)})
        ),
        # a genuine payload republished with a huge sequence, or under another model id
        encode(genuine.model_copy(update={"sequence": 10**30})),
        encode(other.model_copy(update={"model_id": "m"})),
        encode(other),  # verified, but stored under another key
        encode(genuine),  # verified, but older than the one held
        None,  # a tombstone: the router never deletes a snapshot
        b"{not json",
    ]
    for value in forged:
        store.apply(b"m", value)
        assert store.model("other") is None  # evicts m from the cache of one
        model, sequence = store.model("m") or (None, 0)
        assert (model.label, sequence) == ("a", 2)
    assert not marker.exists()
    store.apply(b"m", signed_snapshot("m", Always("b"), 3))
    model, sequence = store.model("m") or (None, 0)
    assert (model.label, sequence) == ("b", 3)
