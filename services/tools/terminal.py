"""What every `driftline` command prints through, so they all read and script alike.

Tables and lines go to stdout through :func:`stdout`; ``--json`` output through
:func:`print_json`, alone on stdout; errors are raised as `DriftlineError` and printed by
`services.cli.main` as one line on stderr. This module stays light (no Kafka, MLflow or Faust
import): `driftline --help` loads it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import pydantic_core
import typer
from rich.console import Console

from shared.client_logs import hold_kafka_client_logs
from shared.errors import DriftlineError
from shared.settings import DriftlineSettings

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Say what would be done, change nothing.")
]

T = TypeVar("T")

PIPED_WIDTH = 10_000
"""Width of the console when stdout is not a terminal: lines are never wrapped for `grep`."""

MLFLOW_REQUEST_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
"""MLflow client limits for one-shot commands (each overridable in the environment): MLflow's
defaults (7 retries with backoff, 120 s per request) keep a command silent for minutes while
the server is down."""


def stdout() -> Console:
    """The console for a command's output; as wide as its lines when piped (unless COLUMNS
    says otherwise), so a table row or a setting's description stays on one line."""
    piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return Console(width=PIPED_WIDTH if piped else None)


def print_json(value: Any) -> None:
    """Print `value` as indented JSON alone on stdout: events and records as their wire JSON
    (pydantic models), times in ISO 8601, secrets masked."""
    typer.echo(pydantic_core.to_json(value, indent=2).decode())


def print_empty(console: Console, what: str) -> None:
    """Say that a listing found nothing, rather than printing nothing at all."""
    console.print(f"no {what}", highlight=False)


def print_listing(records: Sequence[T], what: str, line: Callable[[T], str], as_json: bool) -> None:
    """Print what a `list` command found, as they all do: with ``--json`` the records as an array
    alone on stdout; otherwise one line per record from `line`, or "no <what>" when none."""
    if as_json:
        print_json(list(records))
        return
    console = stdout()
    if not records:
        print_empty(console, what)
    for record in records:
        console.print(line(record), highlight=False)


def quiet_logging(settings: DriftlineSettings) -> None:
    """Log as the settings say on stderr (skipped records...), without aiokafka's own lines or
    urllib3's "Retrying" warnings under MLflow's client: a failed Kafka or MLflow call is
    reported once, by the command, as one line."""
    from shared.logging import configure_logging

    configure_logging("cli", settings.log_level, settings.log_format)
    hold_kafka_client_logs()
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def bound_mlflow_requests() -> None:
    """Make this process's MLflow calls fail within seconds when the server is down (see
    `MLFLOW_REQUEST_BOUNDS`)."""
    for name, value in MLFLOW_REQUEST_BOUNDS.items():
        os.environ.setdefault(name, value)


def confirm(question: str, yes: bool) -> None:
    """Ask `question` before a change to production; `--yes` skips it, and without a terminal
    to ask on the command refuses rather than guess. The question goes to stderr, so stdout
    holds only the result (`--json` stays parseable)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise DriftlineError(f"{question} needs confirmation: pass --yes (no terminal to ask on)")
    if not typer.confirm(question, default=False, err=True):
        raise typer.Exit(1)
