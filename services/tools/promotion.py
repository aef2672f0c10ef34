"""`driftline promote` and `driftline rollback`: an operator overrides the promotion policy.

Each first works out the decision (which challenger, which champion) and says it; asks before
it changes production (``--yes`` to skip; without a terminal it refuses unless given
``--yes``); then publishes a `PromotionDecision` by ``operator`` on ``decisions`` and runs the
action's steps (`shared.rollout`): a command interrupted half way is completed by running it
again. ``--dry-run`` stops after saying what it would do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from services.tools.terminal import (
    DryRunOption,
    JsonOption,
    YesOption,
    bound_mlflow_requests,
    confirm,
    print_json,
    quiet_logging,
    stdout,
)
from shared import settings as cfg
from shared.errors import UnknownDeploymentError
from shared.events import Deployment, PromotionAction, PromotionDecision

if TYPE_CHECKING:
    from shared.registry import MlflowRegistry
    from shared.rollout import Challenger

DeploymentOption = Annotated[str, typer.Option("--deployment", help="Deployment name.")]
OPERATOR_REASON = "operator override"


@dataclass(frozen=True)
class Override:
    """What an operator's promote or rollback will do, worked out before anything changes."""

    deployment: Deployment
    challenger: Challenger
    decision: PromotionDecision
    swapped: bool = False
    """A challenger on another backend: its URI replaces the champion's, no alias moves."""


def register(app: typer.Typer) -> None:
    """Add `driftline promote` and `driftline rollback`."""
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)


async def plan(
    common: cfg.DriftlineSettings,
    registry: MlflowRegistry,
    name: str,
    action: PromotionAction,
    version: str | None,
) -> Override:
    """Decide `action` on the deployment's challenger (or `version`) as an operator, changing
    nothing yet."""
    from shared.admin import live_deployments
    from shared.model_uris import model_identity
    from shared.rollout import (
        CHAMPION_ALIAS,
        Challenger,
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
    )
    return Override(deployment, challenger, decision)


async def carry_out(
    common: cfg.DriftlineSettings, registry: MlflowRegistry, override: Override
) -> None:
    """Publish the decision and run its steps (each logged on stderr)."""
    from shared.admin import publish
    from shared.events import encode
    from shared.rollout import execute, promotion_steps, rollback_steps, swap_steps
    from shared.topics import DECISIONS, DEPLOYMENTS

    deployment, challenger, decision = override.deployment, override.challenger, override.decision
    await publish(common, DECISIONS, deployment.name, encode(decision))

    async def publish_deployment(updated: Deployment) -> None:
        await publish(common, DEPLOYMENTS, updated.name, encode(updated))

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


def operator_override(
    name: str,
    action: PromotionAction,
    version: str | None,
    yes: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Plan the override, say it, ask, carry it out and say it is done; ``--json`` prints
    ``{"dry_run", "decision"}`` with the decision as published on ``decisions``."""
    from shared.registry import MlflowRegistry

    common = cfg.load(cfg.DriftlineSettings)
    quiet_logging(common)
    bound_mlflow_requests()
    registry = MlflowRegistry(common.mlflow_tracking_uri)
    override = asyncio.run(plan(common, registry, name, action, version))
    if not dry_run:
        confirm(f"{describe(override.decision, done=False).removeprefix('would ')}?", yes)
        asyncio.run(carry_out(common, registry, override))
    if as_json:
        print_json({"dry_run": dry_run, "decision": override.decision})
    else:
        stdout().print(describe(override.decision, done=not dry_run), highlight=False)


def promote_command(
    deployment: DeploymentOption,
    version: Annotated[
        str | None, typer.Option(help="Version to promote (default: the deployment's challenger).")
    ] = None,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Make the deployment's challenger (or VERSION) the champion now, whatever the evidence."""
    operator_override(deployment, "promote", version, yes, dry_run, as_json)


def rollback_command(
    deployment: DeploymentOption,
    yes: YesOption = False,
    dry_run: DryRunOption = False,
    as_json: JsonOption = False,
) -> None:
    """Remove the deployment's challenger now and tag its version rejected; the champion stays."""
    operator_override(deployment, "rollback", None, yes, dry_run, as_json)
