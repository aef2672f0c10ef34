"""`driftline status`: are the services up, how far behind are they, what is deployed.

The health of each service is asked first, over HTTP, so it is shown even when Kafka is out of
reach; the rest is read from Kafka, and a broker out of reach is then one line and exit 3.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from services.tools.terminal import JsonOption, print_json, quiet_logging, stdout
from shared import settings as cfg
from shared.errors import DriftlineError

if TYPE_CHECKING:
    from shared.events import Deployment, PromotionDecision


def health_urls(
    host: str, configured: dict[str, str], given: list[str] | None = None
) -> dict[str, str]:
    """Each service's health URL: one given as ``service=URL`` (``--health-url``), else the
    settings' `health_urls`, else its web port on `host`."""
    urls = {
        service: f"http://{host}:{cfg.load(settings_class).web_port}/health"
        for service, settings_class in cfg.SERVICE_SETTINGS.items()
    }
    urls |= configured
    for text in given or []:
        service, sep, url = text.partition("=")
        if not sep or service not in cfg.SERVICE_SETTINGS or not url:
            raise DriftlineError(
                f"--health-url {text!r}: expected <service>=<url> with a service among "
                f"{', '.join(cfg.SERVICE_SETTINGS)}"
            )
        urls[service] = url
    return urls


def service_health(urls: dict[str, str]) -> dict[str, str]:
    """Each service's answer on its health URL, or why there is none."""
    import httpx

    states: dict[str, str] = {}
    for service, url in urls.items():
        try:
            response = httpx.get(url, timeout=2)
            states[service] = response.json().get("status", str(response.status_code))
        except (httpx.HTTPError, ValueError, AttributeError):  # no answer, or not JSON
            states[service] = "down (no answer)"
    return states


async def consumer_lag(common: cfg.DriftlineSettings) -> dict[tuple[str, str], int]:
    """Messages not yet processed, per (consumer group, topic), for Driftline's groups."""
    from shared.kafka_clients import admin_client, consumer

    admin = admin_client(common)
    offsets = consumer(common)
    try:
        await admin.start()
        await offsets.start()
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
