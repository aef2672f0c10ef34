"""The router agent under Faust's test context, with online (River) models from signed snapshots:
routing by rule, canary and champion, shadows, refused snapshots and dead letters, no broker."""

from __future__ import annotations

import asyncio
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

import shared.app
from services.router.app import build
from shared.events import (
    Deployment,
    FeatureEvent,
    ModelSnapshot,
    RoutingRule,
    Variant,
    encode,
)
from shared.routing import entity_share
from shared.settings import DriftlineSettings, RouterSettings
from shared.signing import KeyRing, sign_snapshot
from tests.support.faust_doubles import (
    SentRecords,
    agent_context,
    capture_sends,
    fill_table,
    isolate_prometheus,
)

KEY = SecretStr("agent-test-key")


class Constant:
    """A picklable stand-in for a River classifier that always says `label`."""

    def __init__(self, label: str) -> None:
        self.label = label

    def predict_proba_one(self, x: dict[str, Any]) -> dict[str, float]:
        return {self.label: 0.9, "other": 0.1}


def snapshot(model_id: str, label: str, sequence: int = 1, key: SecretStr = KEY) -> bytes:
    unsigned = ModelSnapshot(
        model_id=model_id,
        model_type="constant",
        sequence=sequence,
        n_learned=sequence,
        payload=pickle.dumps(Constant(label)),
    )
    return encode(sign_snapshot(unsigned, KeyRing(key)))


DEPLOYMENT = Deployment(
    name="fraud",
    stream="payments",
    variants=[
        Variant(name="champion", role="champion", model_uri="online:champ"),
        Variant(name="canary", role="canary", model_uri="online:canary", weight=0.5),
        Variant(
            name="premium",
            role="rule",
            model_uri="online:premium",
            rule=RoutingRule(field="tier", value="premium"),
        ),
        Variant(name="shadow", role="shadow", model_uri="online:shadow"),
    ],
)


def feature_event(event_id: str, entity: str, stream: str = "payments", **features: Any) -> bytes:
    return encode(
        FeatureEvent(
            event_id=event_id,
            stream=stream,
            entity_id=entity,
            event_time=datetime(2026, 1, 1, tzinfo=UTC),
            features={"amount": 1.0, "tier": "basic"} | features,
        )
    )


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> SentRecords:
    isolate_prometheus(monkeypatch)
    return capture_sends(monkeypatch)


def router_app(tmp_path: Path) -> Any:
    app = build(
        DriftlineSettings(data_dir=tmp_path, topic_prefix="a.", snapshot_hmac_key=KEY),
        RouterSettings(),
    )
    fill_table(app, "deployments", {b"fraud": encode(DEPLOYMENT)})
    fill_table(
        app,
        "model_snapshots",
        {
            b"champ": snapshot("champ", "champ"),
            b"canary": snapshot("canary", "canary"),
            b"premium": snapshot("premium", "premium"),
            b"shadow": snapshot("shadow", "shadow"),
        },
    )
    return app


def entities_on(side: str, n: int) -> list[str]:
    """Entity ids whose stable share puts them on the canary (< 0.5) or not."""
    found = (f"user-{i}" for i in range(1000))
    wanted = (e for e in found if (entity_share("fraud", e) < 0.5) == (side == "canary"))
    return [next(wanted) for _ in range(n)]


async def test_rule_then_canary_then_champion_serve_and_the_shadow_always_answers(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = router_app(tmp_path)
    canary_entity, champion_entity = entities_on("canary", 1)[0], entities_on("champion", 1)[0]
    latencies, shadow = {"service": "router"}, {"deployment": "fraud", "variant": "shadow"}
    observed = REGISTRY.get_sample_value("driftline_end_to_end_seconds_count", latencies) or 0
    inferred = REGISTRY.get_sample_value("driftline_model_inference_seconds_count", shadow) or 0
    async with agent_context(app, "route_feature_event") as agent:
        await agent.put(feature_event("e1", champion_entity), key=champion_entity.encode())
        await agent.put(feature_event("e2", canary_entity), key=canary_entity.encode())
        await agent.put(
            feature_event("e3", canary_entity, tier="premium"), key=canary_entity.encode()
        )

    predictions = sent.values("a.predictions")
    assert REGISTRY.get_sample_value(
        "driftline_end_to_end_seconds_count", latencies
    ) == observed + len(predictions), "one end-to-end latency per prediction"
    inferred_now = REGISTRY.get_sample_value("driftline_model_inference_seconds_count", shadow)
    assert inferred_now == inferred + 3, "the shadow answered each of the three events"
    served = {p["event_id"]: p["outcome"] for p in predictions if p["outcome"]["served"]}
    assert {e: o["variant"] for e, o in served.items()} == {
        "e1": "champion",
        "e2": "canary",
        "e3": "premium",
    }
    assert served["e3"]["output"] == "premium"
    assert served["e3"]["probabilities"] == {"premium": 0.9, "other": 0.1}
    assert served["e1"]["model_version"] == "1"
    shadows = [p for p in predictions if not p["outcome"]["served"]]
    assert [p["outcome"]["variant"] for p in shadows] == ["shadow"] * 3
    assert sent.keys("a.predictions") == [b"e1", b"e1", b"e2", b"e2", b"e3", b"e3"]
    assert sent.values("a.deadletter") == []


async def test_an_entitys_own_model_wins_and_a_cold_model_answers_nothing(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = router_app(tmp_path)
    entity = entities_on("champion", 1)[0]
    own_id = f"champ/{entity}"
    fill_table(app, "model_snapshots", {own_id.encode(): snapshot(own_id, "mine")})
    cold = Deployment(
        name="cold",
        stream="clicks",
        variants=[Variant(name="champion", role="champion", model_uri="online:nothing-yet")],
    )
    fill_table(app, "deployments", {b"cold": encode(cold)})
    async with agent_context(app, "route_feature_event") as agent:
        await agent.put(feature_event("e1", entity), key=entity.encode())
        await agent.put(feature_event("e2", entity, stream="clicks"), key=entity.encode())

    outcomes = {
        p["event_id"]: p["outcome"] for p in sent.values("a.predictions") if p["outcome"]["served"]
    }
    assert (outcomes["e1"]["output"], outcomes["e1"]["model_name"]) == ("mine", own_id)
    assert (outcomes["e2"]["output"], outcomes["e2"]["model_version"]) == (None, "cold")
    assert outcomes["e1"]["online"] and outcomes["e2"]["online"]


async def test_unsigned_badly_signed_and_older_snapshots_are_refused(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = router_app(tmp_path)
    unsigned = orjson.loads(snapshot("champ", "evil", sequence=5))
    unsigned["signature"] = ""
    codes = ("unsigned", "bad_signature", "champ")
    before = [refused_snapshots(code) for code in codes]
    async with agent_context(app, "store_model_snapshot") as agent:
        await agent.put(orjson.dumps(unsigned), key=b"champ")
        await agent.put(snapshot("champ", "evil", 6, key=SecretStr("wrong")), key=b"champ")
        await agent.put(snapshot("champ", "newer", sequence=3), key=b"champ")
        await agent.put(snapshot("champ", "older", sequence=2), key=b"champ")
    entity = entities_on("champion", 1)[0]
    async with agent_context(app, "route_feature_event") as agent:
        await agent.put(feature_event("e1", entity), key=entity.encode())

    champion = next(p for p in sent.values("a.predictions") if p["outcome"]["served"])
    assert (champion["outcome"]["output"], champion["outcome"]["model_version"]) == ("newer", "3")
    reasons = [letter["reason"] for letter in sent.values("a.deadletter")]
    assert reasons == [
        "snapshot of model 'champ' refused: unsigned",
        "snapshot of model 'champ' refused: bad signature",
    ]
    assert [letter["code"] for letter in sent.values("a.deadletter")] == list(codes[:2])
    counted = [refused_snapshots(code) - b for code, b in zip(codes, before, strict=True)]
    assert counted == [1, 1, 0], "counted by reason code, never by model name"


def refused_snapshots(reason: str) -> float:
    return REGISTRY.get_sample_value("driftline_refused_snapshots_total", {"reason": reason}) or 0.0


async def test_a_bad_deployment_record_is_dead_lettered_and_a_tombstone_removes_one(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = router_app(tmp_path)
    async with agent_context(app, "store_deployment_record") as agent:
        await agent.put(b"{not json", key=b"bad")
        await agent.put(encode(DEPLOYMENT), key=b"misnamed")
        await agent.put(None, key=b"fraud")
    entity = entities_on("champion", 1)[0]
    async with agent_context(app, "route_feature_event") as agent:
        await agent.put(feature_event("e1", entity), key=entity.encode())

    reasons = [letter["reason"] for letter in sent.values("a.deadletter")]
    assert "not valid JSON" in reasons[0]
    assert reasons[1].endswith("key b'misnamed' is not the deployment name 'fraud'")
    assert reasons[2].startswith("no deployment: stream 'payments'")
    assert sent.values("a.predictions") == []


async def test_events_without_deployment_bad_events_and_unknown_models_are_dead_lettered(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = router_app(tmp_path)
    broken = Deployment(
        name="broken",
        stream="payments",
        variants=[Variant(name="champion", role="champion", model_uri="nowhere:model")],
    )
    fill_table(app, "deployments", {b"broken": encode(broken)})
    entity = entities_on("champion", 1)[0]
    async with agent_context(app, "route_feature_event") as agent:
        await agent.put(feature_event("e1", entity, stream="orphans"), key=b"k")
        await agent.put(b"garbage", key=b"k")
        await agent.put(feature_event("e2", entity), key=entity.encode())

    reasons = [letter["reason"] for letter in sent.values("a.deadletter")]
    assert reasons[0] == (
        "no deployment: stream 'orphans' has none; create one with `driftline deploy`"
    )
    assert reasons[1].startswith("bad event on a.features: not valid JSON")
    assert reasons[2].startswith("unknown model: nowhere:model: unknown scheme")
    assert "(deployment 'broken', variant 'champion')" in reasons[2]
    served = [p["deployment"] for p in sent.values("a.predictions") if p["outcome"]["served"]]
    assert served == ["fraud"]


class RefusesNegative(Constant):
    """Answers `label`, but fails on a negative amount (a model error for one event)."""

    def predict_proba_one(self, x: dict[str, Any]) -> dict[str, float]:
        if x["amount"] < 0:
            raise ValueError("negative amount")
        return super().predict_proba_one(x)


def batched_router(tmp_path: Path, batch: int) -> Any:
    """The router app with micro-batches of exactly `batch` events (a long `within`)."""
    app = build(
        DriftlineSettings(data_dir=tmp_path, topic_prefix="a.", snapshot_hmac_key=KEY),
        RouterSettings(batch_max_events=batch, batch_within_s=30.0),
    )
    only_champion = Deployment(
        name="fraud",
        stream="payments",
        variants=[Variant(name="champion", role="champion", model_uri="online:champ")],
    )
    champ = ModelSnapshot(
        model_id="champ",
        model_type="constant",
        sequence=1,
        n_learned=1,
        payload=pickle.dumps(RefusesNegative("champ")),
    )
    fill_table(app, "deployments", {b"fraud": encode(only_champion)})
    fill_table(app, "model_snapshots", {b"champ": encode(sign_snapshot(champ, KeyRing(KEY)))})
    return app


async def test_a_micro_batch_keeps_event_order_and_isolates_each_bad_event(
    sent: SentRecords, tmp_path: Path
) -> None:
    app = batched_router(tmp_path, batch=6)
    values = [
        feature_event("e1", "u1"),
        b"garbage",
        feature_event("e2", "u2", amount=-1.0),
        feature_event("e3", "u3", stream="orphans"),
        feature_event("e4", "u4"),
        feature_event("e5", "u1"),
    ]
    async with agent_context(app, "route_feature_event") as agent:
        for value in values:
            await agent.put(value, key=b"k")

    assert sent.keys("a.predictions") == [b"e1", b"e4", b"e5"]
    letters = sent.values("a.deadletter")
    assert [letter["offset"] for letter in letters] == [1, 2, 3]
    assert letters[0]["reason"].startswith("bad event on a.features: not valid JSON")
    assert "ValueError: negative amount" in letters[1]["reason"]
    assert "(deployment 'fraud', variant 'champion')" in letters[1]["reason"]
    assert letters[2]["reason"].startswith("no deployment: stream 'orphans'")


async def test_a_micro_batch_is_acked_only_after_its_predictions_went_to_the_producer(
    sent: SentRecords, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = batched_router(tmp_path, batch=3)
    events: list[Any] = []
    acked_at_send: list[bool] = []
    capture = shared.app._produce

    async def produce(app: Any, topic: str, key: bytes, value: bytes) -> None:
        acked_at_send.append(any(event.message.acked for event in events))
        await capture(app, topic, key, value)

    monkeypatch.setattr(shared.app, "_produce", produce)
    async with agent_context(app, "route_feature_event") as agent:
        for i in range(3):
            events.append(await agent.put(feature_event(f"e{i}", "u1"), key=b"k"))
        for _ in range(100):
            if all(event.message.acked for event in events):
                break
            await asyncio.sleep(0.01)

    assert sent.keys("a.predictions") == [b"e0", b"e1", b"e2"]
    assert acked_at_send == [False, False, False]
    assert all(event.message.acked for event in events)
