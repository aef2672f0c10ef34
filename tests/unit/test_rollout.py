"""Promote and rollback: what they change, and that a crash after any step leaves a champion
serving and a second run completes the action."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.events import Deployment, Variant
from shared.model_uris import RegistryUri
from shared.rollout import (
    REJECTED_TAG,
    Challenger,
    NoChallengerError,
    Step,
    execute,
    find_challenger,
    promotion_steps,
    rollback_steps,
)
from tests.support.registry import MemoryRegistry

MODEL = "fraud"


class Deployments:
    """The ``deployments`` topic as the routers see it: the last deployment published."""

    def __init__(self, first: Deployment) -> None:
        self.published = [first]

    @property
    def current(self) -> Deployment:
        return self.published[-1]

    async def publish(self, deployment: Deployment) -> None:
        self.published.append(deployment)


def _registry() -> MemoryRegistry:
    registry = MemoryRegistry(versions={MODEL: {"1", "2", "3"}})
    registry.set_alias(MODEL, "champion", "1")
    registry.set_alias(MODEL, "challenger", "2")
    return registry


def _deployment(champion: str = f"models:/{MODEL}@champion", role: str = "shadow") -> Deployment:
    return Deployment(
        name="fraud",
        stream="payments",
        variants=[
            Variant(name="champion", role="champion", model_uri=champion),
            Variant(name="challenger", role=role, model_uri=f"models:/{MODEL}/2", weight=0.2),
            Variant(name="online", role="shadow", model_uri="online:fraud-river"),
        ],
    )


def _serving(registry: MemoryRegistry, deployment: Deployment) -> str:
    """The version the champion variant serves; fails if it names none."""
    champion = next(v for v in deployment.variants if v.role == "champion")
    uri = RegistryUri.parse(champion.model_uri)
    assert uri is not None
    version = uri.version or registry.aliases(uri.name)[uri.alias or ""]
    assert registry.has_version(uri.name, version)
    return version


StepsFor = Callable[[MemoryRegistry, Deployments, Challenger], list[Step]]


def _promote(registry: MemoryRegistry, topic: Deployments, challenger: Challenger) -> list[Step]:
    return promotion_steps(registry, topic.publish, topic.current, challenger)


def _rollback(registry: MemoryRegistry, topic: Deployments, challenger: Challenger) -> list[Step]:
    return rollback_steps(registry, topic.publish, topic.current, challenger, "worse on tier x")


def _variants(deployment: Deployment) -> list[tuple[str, str]]:
    return [(v.name, v.model_uri) for v in deployment.variants]


async def test_promote_moves_the_champion_drops_the_challenger_and_its_alias() -> None:
    registry, topic = _registry(), Deployments(_deployment())
    challenger = find_challenger(topic.current, registry)
    assert challenger == Challenger(MODEL, "2", "challenger")

    await execute(_promote(registry, topic, challenger))

    assert registry.aliases(MODEL) == {"champion": "2"}
    assert _variants(topic.current) == [
        ("champion", f"models:/{MODEL}@champion"),
        ("online", "online:fraud-river"),
    ]
    assert topic.current.updated_at > topic.published[0].updated_at


async def test_promote_re_points_a_champion_pinned_to_a_version() -> None:
    registry, topic = _registry(), Deployments(_deployment(champion=f"models:/{MODEL}/1"))
    await execute(_promote(registry, topic, find_challenger(topic.current, registry)))
    assert _variants(topic.current)[0] == ("champion", f"models:/{MODEL}/2")
    assert _serving(registry, topic.current) == "2"


async def test_rollback_keeps_the_champion_and_tags_the_version_rejected() -> None:
    registry, topic = _registry(), Deployments(_deployment(role="canary"))
    await execute(_rollback(registry, topic, find_challenger(topic.current, registry)))
    assert registry.aliases(MODEL) == {"champion": "1"}
    assert registry.tags[(MODEL, "2")] == {REJECTED_TAG: "worse on tier x"}
    assert [name for name, _ in _variants(topic.current)] == ["champion", "online"]


@pytest.mark.parametrize(
    ("steps_for", "old", "new"),
    [(_promote, "1", "2"), (_rollback, "1", "1")],
    ids=["promote", "rollback"],
)
async def test_a_crash_after_any_step_leaves_a_champion_and_a_rerun_completes(
    steps_for: StepsFor, old: str, new: str
) -> None:
    complete_registry, complete_topic = _registry(), Deployments(_deployment())
    first = find_challenger(complete_topic.current, complete_registry)
    await execute(steps_for(complete_registry, complete_topic, first))
    for done in range(len(steps_for(_registry(), Deployments(_deployment()), first))):
        registry, topic = _registry(), Deployments(_deployment())
        for step in steps_for(registry, topic, first)[:done]:
            await step.run()
            assert _serving(registry, topic.current) in {old, new}

        again = find_challenger(topic.current, registry)
        assert again.version == "2"
        await execute(steps_for(registry, topic, again))

        assert registry.aliases(MODEL) == complete_registry.aliases(MODEL), f"after {done} steps"
        assert registry.tags == complete_registry.tags
        assert _variants(topic.current) == _variants(complete_topic.current)
        assert _serving(registry, topic.current) == new


async def test_a_finished_action_runs_again_without_change() -> None:
    registry, topic = _registry(), Deployments(_deployment())
    challenger = find_challenger(topic.current, registry)
    await execute(_promote(registry, topic, challenger))
    published = len(topic.published)
    await execute(_promote(registry, topic, challenger))
    assert len(topic.published) == published
    with pytest.raises(NoChallengerError, match="no canary or shadow of 'fraud'"):
        find_challenger(topic.current, registry)


def test_finding_the_challenger_refuses_what_it_cannot_act_on() -> None:
    registry = _registry()
    online = Deployment(
        name="fraud",
        stream="payments",
        variants=[Variant(name="champion", role="champion", model_uri="online:m")],
    )
    with pytest.raises(NoChallengerError, match="not an MLflow registry model"):
        find_challenger(online, registry)
    with pytest.raises(NoChallengerError, match="has no version '9'"):
        find_challenger(_deployment(), registry, version="9")
    two = _deployment().model_copy(
        update={
            "variants": [
                *_deployment().variants,
                Variant(name="other", role="shadow", model_uri=f"models:/{MODEL}/3"),
            ]
        }
    )
    with pytest.raises(NoChallengerError, match=r"versions 2, 3\): pick one with --version"):
        find_challenger(two, registry)
    assert find_challenger(two, registry, version="3") == Challenger(MODEL, "3", "other")


async def test_rolling_back_the_champion_is_refused_before_anything_changes() -> None:
    registry, topic = _registry(), Deployments(_deployment())
    with pytest.raises(NoChallengerError, match="version 1 is the champion"):
        await execute(_rollback(registry, topic, Challenger(MODEL, "1", None)))
    assert registry.tags == {}
    assert len(topic.published) == 1
