"""`driftline retrain --alert ALERT_ID` and `driftline retrain serve`.

The first retrains once, now, and prints what it did; the second runs the webhook-triggered job
(`services.tools.retrain_job`) that the drift service's webhook points at.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from shared import settings as cfg
from shared.errors import DriftlineError

if TYPE_CHECKING:
    from shared.retraining import RetrainResult

retrain_app = typer.Typer(
    invoke_without_command=True,
    help="Retrain a deployment's batch model on a drift alert's fresh data.",
)


def register(app: typer.Typer) -> None:
    """Add `driftline retrain` to the CLI."""
    app.add_typer(retrain_app, name="retrain")


@retrain_app.callback()
def retrain_command(
    ctx: typer.Context,
    alert: Annotated[
        str | None, typer.Option("--alert", help="Id of a concept-drift alert on `alerts`.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON (for CI) instead of a table.")
    ] = False,
) -> None:
    """Read the alert's window of labeled data, train the deployment's trainer, register the
    version as `challenger` and deploy it (again for the same alert: the same version).

    Exits 3 while the window holds too few labels (retry later), 2 on any other problem."""
    if ctx.invoked_subcommand is not None:
        if alert is not None:
            raise DriftlineError(f"--alert goes without `{ctx.invoked_subcommand}`")
        return
    if alert is None:
        raise DriftlineError("retrain needs --alert ALERT_ID (or `driftline retrain serve`)")
    from services.tools.terminal import bound_mlflow_requests
    from shared.retraining import retrain

    bound_mlflow_requests()
    settings = cfg.load(cfg.DriftlineSettings)
    # On stderr: with --json, stdout holds the result alone (MLflow's own progress goes there too).
    progress = Console(stderr=True).status(f"retraining on the window of alert {alert}")
    with progress, contextlib.redirect_stdout(sys.stderr):
        result = asyncio.run(retrain(settings, alert))
    if as_json:
        typer.echo(result.to_json())
    else:
        Console().print(summary(result))


def summary(result: RetrainResult) -> Table:
    """What a retrain did, as a two-column table."""
    what = "registered" if result.new else "already registered by an earlier retrain"
    deployed = "published" if result.deployed else "unchanged"
    offsets = ", ".join(
        f"[{p}] {result.start_offsets[p]}..{result.end_offsets[p]}" for p in result.start_offsets
    )
    table = Table(title=f"retrain of alert {result.alert_id}", show_header=False)
    table.add_row("model", f"{result.model_uri} ({what})")
    table.add_row("deployment", f"{result.deployment} ({deployed}, variant challenger)")
    table.add_row("window", f"since {result.window.start_time.isoformat(timespec='seconds')}")
    table.add_row("offsets", offsets)
    table.add_row("rows", str(result.rows))
    for name, value in sorted(result.metrics.items()):
        table.add_row(name, f"{value:.4g}")
    return table


@retrain_app.command("serve")
def serve_command() -> None:
    """Receive the drift service's signed webhooks (POST /retrain) and retrain in the background,
    one alert at a time, retrying while there are too few labels (settings DRIFTLINE_RETRAIN_*)."""
    from services.tools.retrain_job import serve
    from shared.logging import configure_logging

    common = cfg.load(cfg.DriftlineSettings)
    own = cfg.load(cfg.RetrainSettings)
    common.require_secret_keys()
    configure_logging("retrain", common.log_level, common.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(common, own))
