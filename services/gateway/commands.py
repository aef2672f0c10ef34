"""`driftline gateway`: the V2 inference gateway (`services.gateway.app`)."""

from __future__ import annotations

import asyncio
import contextlib

import typer

from shared import settings as cfg


def register(app: typer.Typer) -> None:
    """Add `driftline gateway` to the CLI."""
    app.command("gateway")(gateway_command)


def gateway_command() -> None:
    """Serve the deployments over the Open Inference Protocol (KServe V2 REST) on
    DRIFTLINE_GATEWAY_WEB_PORT: each answer routed like the router's, recorded on `features` and
    `predictions` before it is returned, so it is labeled and monitored like stream events."""
    from threadpoolctl import threadpool_limits

    from services.gateway.app import serve
    from shared.logging import configure_logging

    threadpool_limits(limits=1)  # as the router: one request's rows, no thread hand-offs
    common = cfg.load(cfg.DriftlineSettings)
    own = cfg.load(cfg.GatewaySettings)
    common.require_secret_keys()
    configure_logging("gateway", common.log_level, common.log_format)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(common, own))
