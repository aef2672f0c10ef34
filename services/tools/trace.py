"""`driftline trace EVENT_ID`: one event's journey through the topics (`shared.tracing`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from services.tools.terminal import JsonOption, print_json, stdout
from shared import settings as cfg
from shared.tracing import as_dict, trace, what


def register(app: typer.Typer) -> None:
    """Add `driftline trace` to the CLI."""
    app.command("trace")(trace_command)


def trace_command(
    event_id: Annotated[str, typer.Argument(help="The event id producers gave the event.")],
    as_json: JsonOption = False,
) -> None:
    """Follow one event through the topics and the alerts after it.

    It reads events.raw, features, predictions, feedback, predictions.labeled, dead letters and
    alerts; exit 1 if no record names the event.
    --json: an array of {"topic", "partition", "offset", "written_at", "record"}."""
    common = cfg.load(cfg.DriftlineSettings)
    steps = asyncio.run(trace(common, event_id))
    if as_json:
        print_json([as_dict(topic, step) for topic, step in steps])
        if not steps:
            raise typer.Exit(1)
        return
    console = stdout()
    if not steps:
        console.print(f"no record names event {event_id!r} (topic prefix {common.topic_prefix!r})")
        raise typer.Exit(1)
    table = Table(title=f"journey of event {event_id}")
    for column in ("written at (UTC)", "topic", "where", "what"):
        table.add_column(column)
    for topic, step in steps:
        written = datetime.fromtimestamp(step.timestamp_ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
        table.add_row(written, topic.name, step.where, what(topic, step))
    console.print(table)
