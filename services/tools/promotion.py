"""`driftline promote` and `driftline rollback`: an operator overrides the promotion policy.

Each publishes a `PromotionDecision` by ``operator`` on ``decisions``, then runs the action's
steps (`shared.rollout`): a command interrupted half way is completed by running it again.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from shared import settings as cfg
from shared.admin import live_deployments, publish
from shared.errors import DriftlineError
from shared.events import Deployment, PromotionAction, PromotionDecision, encode
from shared.logging import configure_logging
from shared.registry import MlflowRegistry
from shared.rollout import (
    CHAMPION_ALIAS,
    NoChallengerError,
    execute,
    find_challenger,
    promotion_steps,
    rollback_steps,
)
from shared.topics import DECISIONS, DEPLOYMENTS

console = Console()
DeploymentOption = Annotated[str, typer.Option("--deployment", help="Deployment name.")]
OPERATOR_REASON = "operator override"


class UnknownDeploymentError(DriftlineError):
    """No live deployment has the name an operator gave."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown deployment {name!r}: `driftline deployments list` shows them")


def register(app: typer.Typer) -> None:
    """Add `driftline promote` and `driftline rollback`."""
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)


async def override(
    common: cfg.DriftlineSettings, name: str, action: PromotionAction, version: str | None
) -> PromotionDecision:
    """Decide `action` on the deployment's challenger (or `version`) as an operator, publish the
    decision and run it (each step logged on stderr); returns the decision."""
    configure_logging("cli", common.log_level, common.log_format)
    deployment = (await live_deployments(common)).get(name)
    if deployment is None:
        raise UnknownDeploymentError(name)
    registry = MlflowRegistry(common.mlflow_tracking_uri)
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
    await publish(common, DECISIONS, name, encode(decision))

    async def publish_deployment(updated: Deployment) -> None:
        await publish(common, DEPLOYMENTS, updated.name, encode(updated))

    steps = (
        promotion_steps(registry, publish_deployment, deployment, challenger)
        if action == "promote"
        else rollback_steps(registry, publish_deployment, deployment, challenger, OPERATOR_REASON)
    )
    await execute(steps)
    return decision


def promote_command(
    deployment: DeploymentOption,
    version: Annotated[
        str | None, typer.Option(help="Version to promote (default: the deployment's challenger).")
    ] = None,
) -> None:
    """Make the deployment's challenger (or VERSION) the champion now, whatever the evidence."""
    decision = asyncio.run(
        override(cfg.load(cfg.DriftlineSettings), deployment, "promote", version)
    )
    console.print(
        f"promoted {decision.model_name} version {decision.challenger_version} in {deployment} "
        f"(champion was {decision.champion_version or 'unset'})"
    )


def rollback_command(deployment: DeploymentOption) -> None:
    """Remove the deployment's challenger now and tag its version rejected; the champion stays."""
    decision = asyncio.run(override(cfg.load(cfg.DriftlineSettings), deployment, "rollback", None))
    console.print(
        f"rolled back {decision.model_name} version {decision.challenger_version} in "
        f"{deployment} (champion stays {decision.champion_version or 'unset'})"
    )
