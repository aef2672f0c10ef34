"""`driftline status`: are the services up, how far behind are they, what is deployed."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from shared import settings as cfg
from shared.admin import live_deployments, read_topic
from shared.errors import EventDecodeError
from shared.events import Deployment, PromotionDecision, decode
from shared.kafka_clients import admin_client, consumer
from shared.logging import configure_logging
from shared.topics import DECISIONS


def service_health(host: str) -> dict[str, str]:
    """Each service's answer on its health endpoint (ports from its settings)."""
    states: dict[str, str] = {}
    for service, settings_class in cfg.SERVICE_SETTINGS.items():
        port = cfg.load(settings_class).web_port
        try:
            response = httpx.get(f"http://{host}:{port}/health", timeout=2)
            states[service] = response.json().get("status", str(response.status_code))
        except (httpx.HTTPError, ValueError):
            states[service] = f"down (nothing answers on {host}:{port})"
    return states


async def consumer_lag(common: cfg.DriftlineSettings) -> dict[tuple[str, str], int]:
    """Messages not yet processed, per (consumer group, topic), for Driftline's groups."""
    admin = admin_client(common)
    offsets = consumer(common)
    await admin.start()
    await offsets.start()
    try:
        prefix = f"{common.topic_prefix}driftline-"
        groups = sorted(g[0] for g in await admin.list_consumer_groups() if g[0].startswith(prefix))
        lag: dict[tuple[str, str], int] = defaultdict(int)
        for group in groups:
            committed = await admin.list_consumer_group_offsets(group)
            ends = await offsets.end_offsets(list(committed))
            for partition, offset in committed.items():
                lag[(group, partition.topic)] += max(ends[partition] - offset.offset, 0)
        return dict(lag)
    finally:
        await offsets.stop()
        await admin.close()


async def deployments(common: cfg.DriftlineSettings) -> list[Deployment]:
    """The current deployments, as routers see them."""
    return sorted((await live_deployments(common)).values(), key=lambda d: d.name)


async def latest_decisions(common: cfg.DriftlineSettings) -> list[PromotionDecision]:
    """The latest promotion decision per deployment (a record that does not decode is skipped:
    status reports, it does not fail on one bad record)."""
    topic = DECISIONS.full_name(common)
    latest: dict[str, PromotionDecision] = {}
    async for message in read_topic(common, topic):
        try:
            decision = decode(PromotionDecision, message.value, topic)
        except EventDecodeError:
            continue
        previous = latest.get(decision.deployment)
        if previous is None or decision.decided_at >= previous.decided_at:
            latest[decision.deployment] = decision
    return sorted(latest.values(), key=lambda d: d.deployment)


def decision_numbers(decision: PromotionDecision) -> str:
    """Error rates, samples and p-value of a decision, as far as it has them."""
    if decision.champion_error is None or decision.challenger_error is None:
        return "-"
    p_value = "-" if decision.p_value is None else f"{decision.p_value:.2g}"
    return (
        f"error {decision.challenger_error:.4f} vs {decision.champion_error:.4f}, "
        f"n={decision.challenger_samples}/{decision.champion_samples}, p={p_value}"
    )


def register(app: typer.Typer) -> None:
    """Add `driftline status` to the CLI."""
    app.command("status")(status_command)


def status_command(
    host: Annotated[str, typer.Option(help="Where the services' HTTP endpoints listen.")] = (
        "127.0.0.1"
    ),
) -> None:
    """Show the services' health, consumer lag per topic, the current deployments and the latest
    promotion decision on each."""
    common = cfg.load(cfg.DriftlineSettings)
    configure_logging("cli", common.log_level, common.log_format)  # skipped records, on stderr
    console = Console()
    health = Table(title="services")
    health.add_column("service")
    health.add_column("health")
    for service, state in service_health(host).items():
        health.add_row(service, state)
    console.print(health)
    lag = Table(title="consumer lag")
    for column in ("consumer group", "topic", "lag"):
        lag.add_column(column)
    for (group, topic), behind in sorted(asyncio.run(consumer_lag(common)).items()):
        lag.add_row(group, topic, str(behind))
    console.print(lag)
    current = Table(title="deployments")
    for column in ("deployment", "stream", "variants", "online models"):
        current.add_column(column)
    for deployment in asyncio.run(deployments(common)):
        variants = "\n".join(
            f"{v.name} ({v.role}{f' {v.weight:.0%}' if v.role == 'canary' else ''}): {v.model_uri}"
            for v in deployment.variants
        )
        online = ", ".join(f"{m.model_id} ({m.model_type})" for m in deployment.online_models)
        current.add_row(deployment.name, deployment.stream, variants, online or "-")
    console.print(current)
    decisions = Table(title="promotion decisions (latest per deployment)")
    for column in ("deployment", "decision", "challenger", "numbers", "reason"):
        decisions.add_column(column)
    for decision in asyncio.run(latest_decisions(common)):
        decisions.add_row(
            decision.deployment,
            f"{decision.action} ({decision.decided_by}, {decision.decided_at:%Y-%m-%d %H:%M:%S})",
            f"{decision.model_name} v{decision.challenger_version} "
            f"vs v{decision.champion_version or '?'}",
            decision_numbers(decision),
            decision.reason,
        )
    console.print(decisions)
