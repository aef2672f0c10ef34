"""The drift worker's promotion agent under Faust's test context: a look every N challenger
outcomes, one decision and one execution per trial whatever is redelivered, and an action that
failed half way (MLflow down) completed on the trial's next event."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import pytest

import services.drift.promotion
from services.drift.app import build
from shared.events import (
    Deployment,
    LabeledPrediction,
    PromotionPolicy,
    Variant,
    VariantOutput,
    encode,
)
from shared.registry import RegistryError
from shared.settings import DriftlineSettings, DriftSettings
from tests.support.faust_doubles import (
    SentRecords,
    agent_context,
    capture_sends,
    fill_table,
    isolate_prometheus,
)
from tests.support.registry import MemoryRegistry

EVERY = 4
POLICY = PromotionPolicy(min_samples=EVERY, max_looks=1)
DEPLOYMENT = Deployment(
    name="fraud",
    stream="payments",
    variants=[
        Variant(name="champion", role="champion", model_uri="models:/fraud@champion"),
        Variant(name="challenger", role="shadow", model_uri="models:/fraud/2"),
    ],
    promotion=POLICY,
)


class FlakyRegistry(MemoryRegistry):
    """A registry whose next `failures` alias moves fail, as when MLflow is down."""

    failures: int = 0

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        if self.failures:
            self.failures -= 1
            raise RegistryError("http://mlflow", f"set {model_name}@{alias}", "connection refused")
        super().set_alias(model_name, alias, version)


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_prometheus(monkeypatch)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> FlakyRegistry:
    """The model registry the agent acts on: fraud versions 1 (@champion) and 2 (@challenger)."""
    registry = FlakyRegistry(versions={"fraud": {"1", "2"}})
    registry.set_alias("fraud", "champion", "1")
    registry.set_alias("fraud", "challenger", "2")
    monkeypatch.setattr(services.drift.promotion, "mlflow_registry", lambda uri: registry)
    return registry


def _app(tmp_path: Path) -> faust.App:
    common = DriftlineSettings(data_dir=tmp_path, topic_prefix="a.")
    app = build(common, DriftSettings(promotion_every=EVERY))
    fill_table(app, "deployments", {b"fraud": encode(DEPLOYMENT)})
    return app


def _labeled(
    i: int, champion_output: int, challenger_output: int, deployment: str = "fraud"
) -> bytes:
    def outcome(variant: str, version: str, output: int) -> VariantOutput:
        role = "champion" if variant == "champion" else "shadow"
        return VariantOutput(
            variant=variant,
            role=role,
            served=role == "champion",
            model_name="fraud",
            model_version=version,
            output=output,
        )

    at = datetime(2026, 1, 1, 0, i, tzinfo=UTC)
    return encode(
        LabeledPrediction(
            event_id=f"e{i}",
            entity_id="u",
            stream="payments",
            deployment=deployment,
            features={"amount": 1.0},
            outcomes=[
                outcome("champion", "1", champion_output),
                outcome("challenger", "2", challenger_output),
            ],
            label=1,
            event_time=at,
            label_time=at,
            feedback_delay_s=0.0,
        )
    )


async def _put(agent: Any, value: bytes, redeliver: bool = False) -> None:
    if redeliver:
        agent.sent_offset -= 1  # the same offset again, as after a crash before the commit
    await agent.put(value, key=b"fraud", partition=0)


async def _drain(agent: Any) -> None:
    """Let the agent finish the message before: the test context's `put` returns once the agent
    took a message, not once it handled it (a message of a deployment it ignores)."""
    await agent.put(_labeled(0, 0, 0, deployment="unknown"), key=b"unknown", partition=0)


def _decisions(sent: SentRecords) -> list[dict[str, Any]]:
    return sent.values("a.decisions")


def _deployments(sent: SentRecords) -> list[dict[str, Any]]:
    return sent.values("a.deployments")


async def test_a_look_every_n_challenger_outcomes_and_one_promotion_despite_redelivery(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, registry: FlakyRegistry
) -> None:
    sent = capture_sends(monkeypatch)
    async with agent_context(_app(tmp_path), "weigh_challengers") as agent:
        for i in range(EVERY - 1):
            await _put(agent, _labeled(i, champion_output=0, challenger_output=1))
        await _put(agent, _labeled(EVERY - 2, champion_output=0, challenger_output=1), True)
        await _drain(agent)
        assert _decisions(sent) == [], "a redelivered outcome was counted twice"
        last = _labeled(EVERY - 1, champion_output=0, challenger_output=1)
        await _put(agent, last)
        await _put(agent, last, redeliver=True)
        await _put(agent, _labeled(EVERY, champion_output=0, challenger_output=1))
        await _drain(agent)

    [decision] = _decisions(sent)
    assert decision["action"] == "promote"
    assert (decision["champion_samples"], decision["challenger_samples"]) == (EVERY, EVERY)
    assert (decision["champion_error"], decision["challenger_error"]) == (1.0, 0.0)
    assert sent.keys("a.decisions") == [b"fraud"]
    assert registry.aliases("fraud") == {"champion": "2"}
    [published] = _deployments(sent)
    assert [v["name"] for v in published["variants"]] == ["champion"]


async def test_an_action_that_failed_is_completed_on_the_next_event_and_decided_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, registry: FlakyRegistry
) -> None:
    sent = capture_sends(monkeypatch)
    registry.failures = 1
    async with agent_context(_app(tmp_path), "weigh_challengers") as agent:
        for i in range(EVERY):
            await _put(agent, _labeled(i, champion_output=0, challenger_output=1))
        await _drain(agent)
        assert registry.aliases("fraud") == {"champion": "1", "challenger": "2"}
        assert _deployments(sent) == []
        await _put(agent, _labeled(EVERY, champion_output=1, challenger_output=0))
        await _drain(agent)

    assert [d["action"] for d in _decisions(sent)] == ["promote"]
    assert registry.aliases("fraud") == {"champion": "2"}
    assert len(_deployments(sent)) == 1


async def test_a_worse_challenger_is_rolled_back_and_the_champion_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, registry: FlakyRegistry
) -> None:
    sent = capture_sends(monkeypatch)
    async with agent_context(_app(tmp_path), "weigh_challengers") as agent:
        for i in range(EVERY):
            await _put(agent, _labeled(i, champion_output=1, challenger_output=0))
        await _drain(agent)

    [decision] = _decisions(sent)
    assert (decision["action"], decision["reason"]) == (
        "rollback",
        "challenger is significantly worse",
    )
    assert registry.aliases("fraud") == {"champion": "1"}
    assert registry.tags[("fraud", "2")] == {
        "driftline.rejected": "challenger is significantly worse"
    }
