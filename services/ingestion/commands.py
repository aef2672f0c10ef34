"""`driftline streams declare|list`: stream declarations on the compacted ``streams`` topic."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from services.tools.terminal import JsonOption, print_listing, quiet_logging, stdout
from shared import settings as cfg
from shared.deploying import stream_from_file
from shared.events import StreamSchema, encode
from shared.topics import STREAMS

streams_app = typer.Typer(no_args_is_help=True, help="Declared streams (what raw events hold).")


def register(app: typer.Typer) -> None:
    """Add `driftline streams ...` to the CLI."""
    app.add_typer(streams_app, name="streams")


@streams_app.command("declare")
def declare(
    file: Annotated[Path, typer.Option("--file", "-f", help="JSON file of a StreamSchema.")],
) -> None:
    """Declare (or re-declare) a stream; ingestion workers apply it without a restart."""
    from shared.admin import publish

    schema = stream_from_file(file)
    settings = cfg.load(cfg.DriftlineSettings)
    asyncio.run(publish(settings, STREAMS, schema.name, encode(schema)))
    stdout().print(f"declared stream {schema.name} ({len(schema.features)} features)")


@streams_app.command("list")
def list_streams(as_json: JsonOption = False) -> None:
    """List the declared streams with their features.

    --json: an array of stream declarations as on the topic."""
    from shared.admin import live_streams

    settings = cfg.load(cfg.DriftlineSettings)
    quiet_logging(settings)  # skipped records, on stderr
    found = sorted(asyncio.run(live_streams(settings)).values(), key=lambda s: s.name)
    print_listing(found, "declared streams", stream_line, as_json)


def stream_line(schema: StreamSchema) -> str:
    """A declared stream and its features, ``name  feature:type, ...``."""
    return f"{schema.name}  {', '.join(f'{f.name}:{f.type}' for f in schema.features)}"
