"""`driftline alerts tail` and `driftline alerts list`: read drift alerts back from their topic.

Both read ``alerts`` with a plain consumer outside any consumer group, so they never move a
service's offsets. An undecodable record is skipped with a note on stderr.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from services.tools.terminal import print_empty, stdout
from shared import settings as cfg
from shared.errors import DriftlineError, EventDecodeError
from shared.events import DriftAlert, decode, utc_now
from shared.topics import ALERTS

alerts_app = typer.Typer(no_args_is_help=True, help="Drift alerts on the alerts topic.")
errors = Console(stderr=True)

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
Kind = Literal["data", "concept"]
Level = Literal["warning", "drift"]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


class SinceError(DriftlineError):
    """`--since` is neither a duration like ``2h`` nor an ISO 8601 time."""

    def __init__(self, value: str) -> None:
        self.value = value
        super().__init__(f"--since {value!r}: expected a duration (30m, 2h, 7d) or an ISO time")


def parse_since(value: str, now: datetime) -> datetime:
    """The time `value` names: a duration back from `now`, or an ISO 8601 time (UTC if no zone)."""
    try:
        if match := _DURATION.match(value):
            return now - timedelta(**{_UNIT[match[2]]: int(match[1])})
        parsed = datetime.fromisoformat(value)
    except (ValueError, OverflowError):  # OverflowError: a duration reaching before year 1
        raise SinceError(value) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=now.tzinfo)


async def read_alerts(
    common: cfg.DriftlineSettings, from_beginning: bool, until_end: bool
) -> AsyncIterator[DriftAlert]:
    """Alerts from the topic in arrival order; stops at the end when `until_end`, else waits."""
    from shared.admin import read_topic

    topic = ALERTS.full_name(common)
    records = read_topic(common, topic, from_beginning=from_beginning, until_end=until_end)
    async for message in records:
        try:
            yield decode(DriftAlert, message.value, topic)
        except EventDecodeError as exc:
            errors.print(f"skipped {topic}[{message.partition}]@{message.offset}: {exc}")


def _matches(
    alert: DriftAlert, kind: Kind | None, level: Level | None, since: datetime | None
) -> bool:
    return (
        (kind is None or alert.kind == kind)
        and (level is None or alert.level == level)
        and (since is None or alert.event_time >= since)
    )


def _subject(alert: DriftAlert) -> str:
    if alert.kind == "data":
        return f"{alert.stream}:{alert.feature}"
    return f"{alert.model_name}:{alert.model_version}"


def _row(alert: DriftAlert) -> list[str]:
    return [
        alert.event_time.isoformat(timespec="seconds"),
        alert.kind,
        alert.level,
        _subject(alert),
        alert.detector,
        str(alert.position),
        "yes" if alert.escalated else "",
    ]


@alerts_app.command("list")
def list_alerts(
    kind: Annotated[Kind | None, typer.Option(help="Only data or concept alerts.")] = None,
    level: Annotated[Level | None, typer.Option(help="Only warnings or drifts.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only alerts from this event time: 2h, 7d or ISO 8601.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the alerts on the topic now, oldest first, and exit."""
    common = cfg.load(cfg.DriftlineSettings)
    start = parse_since(since, utc_now()) if since else None

    async def collect() -> list[DriftAlert]:
        return [
            alert
            async for alert in read_alerts(common, from_beginning=True, until_end=True)
            if _matches(alert, kind, level, start)
        ]

    found = asyncio.run(collect())
    if as_json:
        for alert in found:
            typer.echo(alert.model_dump_json())
        return
    if not found:
        print_empty(stdout(), "alerts")
        return
    table = Table("event time", "kind", "level", "what", "detector", "position", "escalated")
    for alert in found:
        table.add_row(*_row(alert))
    stdout().print(table)


@alerts_app.command("tail")
def tail_alerts(
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start with the alerts already there.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Print alerts as they arrive until Ctrl-C."""
    common = cfg.load(cfg.DriftlineSettings)
    console = stdout()

    async def follow() -> None:
        async for alert in read_alerts(common, from_beginning, until_end=False):
            if as_json:
                typer.echo(alert.model_dump_json())
            else:
                console.print("  ".join(_row(alert)), highlight=False)

    try:
        asyncio.run(follow())
    except KeyboardInterrupt:
        errors.print("stopped")


def register(app: typer.Typer) -> None:
    """Add ``driftline alerts ...`` to the CLI."""
    app.add_typer(alerts_app, name="alerts")
