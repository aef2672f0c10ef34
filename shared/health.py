"""Are the services up and how far behind are they: what `driftline status` and the console's
launchpad show. Health and metrics are asked over HTTP (so they are known even when Kafka is out
of reach); consumer lag is read from the cluster."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shared import settings as cfg
from shared.errors import DriftlineError


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


def metrics_url(health_url: str) -> str:
    """A service's ``/metrics`` beside its ``/health``."""
    return health_url.rsplit("/", 1)[0] + "/metrics"


def service_health(urls: dict[str, str]) -> dict[str, str]:
    """Each service's answer on its health URL, or why there is none."""
    states: dict[str, str] = {}
    for service, url in urls.items():
        try:
            response = httpx.get(url, timeout=2)
            states[service] = response.json().get("status", str(response.status_code))
        except (httpx.HTTPError, ValueError, AttributeError):  # no answer, or not JSON
            states[service] = "down (no answer)"
    return states


@dataclass(frozen=True)
class Counts:
    """A service's message counters at one moment, from its ``/metrics``."""

    consumed: float
    """``driftline_events_in_total`` over every topic."""
    produced: float
    """``driftline_events_out_total`` over every topic."""


def message_counts(metrics_text: str) -> Counts:
    """The message counters in a Prometheus exposition text (0 where a service has none yet)."""
    totals = {"driftline_events_in": 0.0, "driftline_events_out": 0.0}
    for family in text_string_to_metric_families(metrics_text):
        if family.name in totals:
            totals[family.name] += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return Counts(totals["driftline_events_in"], totals["driftline_events_out"])


def scrape_counts(url: str) -> Counts | None:
    """The message counters a service's ``/metrics`` shows now; None when it does not answer."""
    try:
        response = httpx.get(url, timeout=2)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return message_counts(response.text)


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
