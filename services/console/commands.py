"""`driftline console`: run the operator console (`services.console.app`)."""

from __future__ import annotations

import asyncio
import contextlib

import typer

from shared import settings as cfg
from shared.errors import SettingsError


def register(app: typer.Typer) -> None:
    """Add `driftline console` to the CLI."""
    app.command("console")(console_command)


def console_command() -> None:
    """Serve the operator console on DRIFTLINE_CONSOLE_WEB_PORT (6068) until stopped: services,
    deployments, alerts live, trials, traces, and forms to change deployments (settings
    DRIFTLINE_CONSOLE_*; it needs a token or a trusted proxy header to let anyone in)."""
    from services.console.app import serve
    from services.tools.terminal import bound_mlflow_requests
    from shared.logging import configure_logging

    common = cfg.load(cfg.DriftlineSettings)
    own = cfg.load(cfg.ConsoleSettings)
    if not own.authenticates:
        raise SettingsError(
            cfg.env_name(cfg.ConsoleSettings, "editor_token"),
            None,
            "the console lets nobody in without a token or DRIFTLINE_CONSOLE_TRUSTED_USER_HEADER; "
            "set one (e.g. openssl rand -hex 32)",
        )
    bound_mlflow_requests()  # a page waits seconds, not minutes, for an MLflow that is down
    configure_logging("console", common.log_level, common.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(common, own))
