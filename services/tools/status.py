"""`driftline status`: are the services up, how far behind are they, what is deployed.

The health of each service is asked first, over HTTP, so it is shown even when Kafka is out of
reach; the rest is read from Kafka, and a broker out of reach is then one line and exit 3.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from services.tools.terminal import JsonOption, print_json, quiet_logging, stdout
from shared import settings as cfg

if TYPE_CHECKING:
    from shared.events import Deployment, PromotionDecision


async def deployments(common: cfg.DriftlineSettings) -> list[Deployment]:
    """The current deployments, as routers see them."""
    from shared.admin import live_deployments

    return sorted((await live_deployments(common)).values(), key=lambda d: d.name)


async def latest_decisions(common: cfg.DriftlineSettings) -> list[PromotionDecision]:
    """The latest promotion decision per deployment (a record that does not decode is skipped:
    status reports, it does not fail on one bad record)."""
    from shared.admin import read_topic
    from shared.errors import EventDecodeError
    from shared.events import PromotionDecision, decode
    from shared.topics import DECISIONS

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


async def from_kafka(
    common: cfg.DriftlineSettings,
) -> tuple[dict[tuple[str, str], int], list[Deployment], list[PromotionDecision]]:
    """Lag, deployments and decisions, read in one event loop."""
    from shared.health import consumer_lag

    return await consumer_lag(common), await deployments(common), await latest_decisions(common)


def decision_numbers(decision: PromotionDecision) -> str:
    """Error rates, samples and p-value of a decision, as far as it has them."""
    if decision.champion_error is None or decision.challenger_error is None:
        return "-"
    p_value = "-" if decision.p_value is None else f"{decision.p_value:.2g}"
    return (
        f"error {decision.challenger_error:.4f} vs {decision.champion_error:.4f}, "
        f"n={decision.challenger_samples}/{decision.champion_samples}, p={p_value}"
    )


def variants_text(deployment: Deployment, separator: str) -> str:
    """A deployment's variants, ``name (role[ weight]): uri`` each."""
    return separator.join(
        f"{v.name} ({v.role}{f' {v.weight:.0%}' if v.role == 'canary' else ''}): {v.model_uri}"
        for v in deployment.variants
    )


def register(app: typer.Typer) -> None:
    """Add `driftline status` to the CLI."""
    app.command("status")(status_command)


def status_command(
    host: Annotated[
        str, typer.Option(help="Where the services' HTTP endpoints listen (their web ports).")
    ] = "127.0.0.1",
    health_url: Annotated[
        list[str] | None,
        typer.Option(
            help="service=URL of a service's health endpoint (e.g. on Kubernetes), repeatable; "
            "overrides DRIFTLINE_HEALTH_URLS and --host."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show the services' health, consumer lag, deployments and promotion decisions.

    Health comes first, over HTTP; the rest is read from Kafka: if Kafka is out of reach, the
    command exits 3 after showing the health. --json: {"services", "lag", "deployments",
    "decisions"} (see the README)."""
    from shared.health import health_urls, service_health  # httpx: not for every command's start

    common = cfg.load(cfg.DriftlineSettings)
    quiet_logging(common)  # skipped records, on stderr
    console = stdout()
    urls = health_urls(host, common.health_urls, health_url)
    health = service_health(urls)
    if not as_json:
        table = Table("service", "health", "url", title="services")
        for service, state in health.items():
            table.add_row(service, state, urls[service])
        console.print(table)
    report: dict[str, Any] = {
        "services": [
            {"service": service, "url": urls[service], "health": state}
            for service, state in health.items()
        ],
        "lag": None,
        "deployments": None,
        "decisions": None,
    }
    try:
        lag, current, decisions = asyncio.run(from_kafka(common))
    except Exception:
        if as_json:
            print_json(report)
        raise
    if as_json:
        report["lag"] = [
            {"group": group, "topic": topic, "lag": behind}
            for (group, topic), behind in sorted(lag.items())
        ]
        report["deployments"] = current
        report["decisions"] = decisions
        print_json(report)
        return
    lag_table = Table("consumer group", "topic", "lag", title="consumer lag")
    for (group, topic), behind in sorted(lag.items()):
        lag_table.add_row(group, topic, str(behind))
    console.print(lag_table if lag else "no consumer groups of this Driftline yet")
    deployed = Table("deployment", "stream", "variants", "online models", title="deployments")
    for deployment in current:
        online = ", ".join(f"{m.model_id} ({m.model_type})" for m in deployment.online_models)
        deployed.add_row(
            deployment.name, deployment.stream, variants_text(deployment, "\n"), online or "-"
        )
    console.print(deployed if current else "no deployments")
    decided = Table(
        "deployment",
        "decision",
        "challenger",
        "numbers",
        "reason",
        title="promotion decisions (latest per deployment)",
    )
    for decision in decisions:
        decided.add_row(
            decision.deployment,
            f"{decision.action} ({decision.decided_by}, {decision.decided_at:%Y-%m-%d %H:%M:%S})",
            f"{decision.model_name} v{decision.challenger_version} "
            f"vs v{decision.champion_version or '?'}",
            decision_numbers(decision),
            decision.reason,
        )
    console.print(decided if decisions else "no promotion decisions")
