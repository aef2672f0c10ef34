"""An operator overrides the promotion policy (promote, roll back) or retrains on an alert's
window: what `driftline promote`, `rollback` and `retrain` and the console's buttons do, each
recorded on ``decisions`` as a `PromotionDecision` by ``operator`` naming who acted.

An override is first worked out (`plan`: which challenger, which champion) and said, then
carried out (`carry_out`): the decision is published, then the action's steps run
(`shared.rollout`); a run interrupted half way is completed by running it again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from shared.errors import UnknownDeploymentError
from shared.events import Deployment, PromotionAction, PromotionDecision, encode
from shared.registry import MlflowRegistry
from shared.retraining import RetrainResult, retrain
from shared.rollout import Challenger
from shared.settings import DriftlineSettings

OPERATOR_REASON = "operator override"


@dataclass(frozen=True)
class Override:
    """What an operator's promote or rollback will do, worked out before anything changes."""

    deployment: Deployment
    challenger: Challenger
    decision: PromotionDecision
    swapped: bool = False
    """A challenger on another backend: its URI replaces the champion's, no alias moves."""


async def plan(
    common: DriftlineSettings,
    registry: MlflowRegistry,
    name: str,
    action: PromotionAction,
    version: str | None,
    operator: str,
) -> Override:
    """Decide `action` on the deployment's challenger (or `version`) as `operator`, changing
    nothing yet."""
    from shared.admin import live_deployments
    from shared.model_uris import model_identity
    from shared.rollout import (
        CHAMPION_ALIAS,
        NoChallengerError,
        find_challenger,
        find_swap_challenger,
    )

    deployment = (await live_deployments(common)).get(name)
    if deployment is None:
        raise UnknownDeploymentError(name)
    swap = find_swap_challenger(deployment) if version is None else None
    if swap is not None:
        model, swap_version = model_identity(swap.model_uri)
        champion = next(v for v in deployment.variants if v.role == "champion")
        decision = PromotionDecision(
            deployment=name,
            model_name=model,
            champion_version=model_identity(champion.model_uri)[1],
            challenger_version=swap_version,
            challenger_variant=swap.name,
            action=action,
            reason=OPERATOR_REASON,
            decided_by="operator",
            operator=operator,
        )
        return Override(deployment, Challenger(model, swap_version, swap.name), decision, True)
    challenger = await asyncio.to_thread(find_challenger, deployment, registry, version)
    aliases = await asyncio.to_thread(registry.aliases, challenger.model_name)
    champion_version = aliases.get(CHAMPION_ALIAS)
    if action == "rollback" and challenger.version == champion_version:
        raise NoChallengerError(name, f"version {challenger.version} is the champion")
    decision = PromotionDecision(
        deployment=name,
        model_name=challenger.model_name,
        champion_version=champion_version,
        challenger_version=challenger.version,
        challenger_variant=challenger.variant,
        action=action,
        reason=OPERATOR_REASON,
        decided_by="operator",
        operator=operator,
    )
    return Override(deployment, challenger, decision)


async def carry_out(
    common: DriftlineSettings, registry: MlflowRegistry, override: Override
) -> None:
    """Publish the decision and run its steps; the deployment it changes names the operator as
    its author."""
    from shared.admin import publish
    from shared.rollout import execute, promotion_steps, rollback_steps, swap_steps
    from shared.topics import DECISIONS, DEPLOYMENTS

    deployment, challenger, decision = override.deployment, override.challenger, override.decision
    await publish(common, DECISIONS, deployment.name, encode(decision))

    async def publish_deployment(updated: Deployment) -> None:
        signed = updated.model_copy(update={"updated_by": decision.operator})
        await publish(common, DEPLOYMENTS, updated.name, encode(signed))

    if override.swapped and challenger.variant is not None:
        promoted = decision.action == "promote"
        steps = swap_steps(publish_deployment, deployment, challenger.variant, promoted)
    elif decision.action == "promote":
        steps = promotion_steps(registry, publish_deployment, deployment, challenger)
    else:
        steps = rollback_steps(
            registry, publish_deployment, deployment, challenger, OPERATOR_REASON
        )
    await execute(steps)


def describe(decision: PromotionDecision, done: bool) -> str:
    """What the decision does, said before (``would ...``) or after it is done."""
    if decision.action == "promote":
        verb = "promoted" if done else "would promote"
        champion = f"champion was {decision.champion_version or 'unset'}"
    else:
        verb = "rolled back" if done else "would roll back"
        champion = f"champion stays {decision.champion_version or 'unset'}"
    return (
        f"{verb} {decision.model_name} version {decision.challenger_version} in "
        f"{decision.deployment} ({champion})"
    )


async def retrain_as(common: DriftlineSettings, alert_id: str, operator: str) -> RetrainResult:
    """Retrain on the alert's window (`shared.retraining.retrain`) and record it on
    ``decisions`` as `operator`'s decision to deploy the new challenger."""
    from shared.admin import publish
    from shared.topics import DECISIONS

    result = await retrain(common, alert_id)
    decision = PromotionDecision(
        deployment=result.deployment,
        model_name=result.model_name,
        challenger_version=result.version,
        challenger_variant="challenger",
        action="retrain",
        reason=f"retrained on the window of alert {alert_id} ({result.rows} rows)",
        decided_by="operator",
        operator=operator,
    )
    await publish(common, DECISIONS, result.deployment, encode(decision))
    return result
