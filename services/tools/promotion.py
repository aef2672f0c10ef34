"""`driftline promote` and `driftline rollback`: an operator overrides the promotion policy.

Each first works out the decision (which challenger, which champion) and says it; asks before
it changes production (``--yes`` to skip; without a terminal it refuses unless given
``--yes``); then publishes a `PromotionDecision` by ``operator`` on ``decisions`` and runs the
action's steps (`shared.rollout`): a command interrupted half way is completed by running it
again. ``--dry-run`` stops after saying what it would do.
"""

from __future__ import annotations

import asyncio
import getpass
from typing import Annotated

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
from shared.events import PromotionAction

DeploymentOption = Annotated[str, typer.Option("--deployment", help="Deployment name.")]


def register(app: typer.Typer) -> None:
    """Add `driftline promote` and `driftline rollback`."""
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)


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
    from shared.overrides import carry_out, describe, plan
    from shared.registry import MlflowRegistry

    common = cfg.load(cfg.DriftlineSettings)
    quiet_logging(common)
    bound_mlflow_requests()
    registry = MlflowRegistry(common.mlflow_tracking_uri)
    override = asyncio.run(plan(common, registry, name, action, version, operator()))
    if not dry_run:
        confirm(f"{describe(override.decision, done=False).removeprefix('would ')}?", yes)
        asyncio.run(carry_out(common, registry, override))
    if as_json:
        print_json({"dry_run": dry_run, "decision": override.decision})
    else:
        stdout().print(describe(override.decision, done=not dry_run), highlight=False)


def operator() -> str:
    """Who runs the command, as the decision records it: the login name, or ``cli`` where the
    system has none (a container without a user entry)."""
    try:
        return getpass.getuser()
    except OSError:
        return "cli"


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
