"""The `driftline` command: run a service's worker, manage the local broker, create topics.

A user mistake prints one line and exits 2, a server out of reach one line and exit 3;
tracebacks are for bugs only. Start-up imports only typer, rich and the settings: each command
imports what it needs (Kafka, MLflow, Faust, scikit-learn) when it runs, so `driftline --help`
stays fast (``tests/unit/test_cli.py`` checks which modules it loads).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from services.console.commands import register as register_console
from services.demo.commands import register as register_demo
from services.gateway.commands import register as register_gateway
from services.tools.apply import register as register_apply
from services.tools.promotion import register as register_promotion
from services.tools.retrain import register as register_retrain
from services.tools.status import register as register_status
from services.tools.terminal import JsonOption, print_json, stdout
from services.tools.trace import register as register_trace
from shared import settings as cfg
from shared.client_logs import hold_kafka_client_logs
from shared.errors import DriftlineError

app = typer.Typer(no_args_is_help=True, help="Driftline: real-time MLOps on Kafka.")
kafka_app = typer.Typer(no_args_is_help=True, help="A local single-node Kafka for development.")
topics_app = typer.Typer(no_args_is_help=True, help="Driftline's topics.")
mlflow_app = typer.Typer(no_args_is_help=True, help="A local MLflow server (SQLite).")
app.add_typer(kafka_app, name="kafka")
app.add_typer(mlflow_app, name="mlflow")
app.add_typer(topics_app, name="topics")
console = Console()
errors = Console(stderr=True)

_FAUST_LOGLEVEL = {"debug": "debug", "info": "info", "warning": "warn", "error": "error"}
PortOption = Annotated[int, typer.Option(help="Port of the local broker.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"driftline {importlib.metadata.version('driftline')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """The options before any command: only --version so far."""


def _run_worker(service: str) -> None:
    from threadpoolctl import threadpool_limits

    from shared.app import run_worker

    # A worker scores one event at a time: native thread pools (OpenMP in scikit-learn's
    # gradient boosting, BLAS) only add hand-off cost there, measured at 20x on a busy host.
    # Scale out with partitions and workers instead.
    threadpool_limits(limits=1)
    common = cfg.load(cfg.DriftlineSettings)
    own = cfg.load(cfg.SERVICE_SETTINGS[service])
    module = importlib.import_module(f"services.{service}.app")
    run_worker(
        module.build(common, own), _FAUST_LOGLEVEL[common.log_level], common.shutdown_grace_s
    )


def _add_service_commands(service: str) -> None:
    """`driftline <service> worker`, plus the service's own top-level commands if it has any
    (a ``services/<service>/commands.py`` with ``register(app: typer.Typer)``)."""
    service_app = typer.Typer(no_args_is_help=True, help=f"The {service} service.")
    if importlib.util.find_spec(f"services.{service}.commands") is not None:
        importlib.import_module(f"services.{service}.commands").register(app)

    @service_app.command("worker")
    def worker() -> None:
        """Run this service's Faust worker until stopped (settings from DRIFTLINE_* variables)."""
        _run_worker(service)

    app.add_typer(service_app, name=service)


for _service in cfg.SERVICE_SETTINGS:
    _add_service_commands(_service)
register_demo(app)
register_trace(app)
register_status(app)
register_promotion(app)
register_retrain(app)
register_apply(app)
register_console(app)
register_gateway(app)


SecureOption = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="TLS and SASL/SCRAM-SHA-512 only, a user per service and ACLs (shared/access.py).",
    ),
]


@kafka_app.command("start")
def kafka_start(port: PortOption = 9092, secure: SecureOption = False) -> None:
    """Fetch Kafka's jars if needed and start the broker; does nothing if one answers. With
    --secure, also grant every principal its ACLs for DRIFTLINE_TOPIC_PREFIX and print the
    settings that connect as the operator."""
    from shared.localkafka import LocalKafka

    broker = LocalKafka(port=port, secure=secure)
    if broker.is_up(timeout=1.0):
        console.print(f"Kafka already answers on {broker.bootstrap}")
    else:
        with console.status(f"starting Kafka on {broker.bootstrap}") as progress:
            seconds = broker.start(on_step=lambda step: progress.update(f"Kafka: {step}"))
        console.print(f"Kafka {broker.bootstrap} up in {seconds:.1f}s (log: {broker.log_path})")
    if secure:
        prefix = cfg.load(cfg.DriftlineSettings).topic_prefix
        granted = broker.grant(prefix)
        console.print(f"granted {granted} ACLs for topic prefix {prefix!r}")
        console.print("# connect as the operator (the CLI):", highlight=False)
        for name, value in broker.client_env("operator").items():
            console.print(f"export {name}={value}", highlight=False, soft_wrap=True)
        passwords = broker.security.passwords_path
        console.print(
            "# each service, the retrain job and producers connect as their own user "
            f"(DRIFTLINE_KAFKA_SASL_USERNAME=<service>); passwords: {passwords}",
            highlight=False,
            soft_wrap=True,
        )


@kafka_app.command("stop")
def kafka_stop(port: PortOption = 9092) -> None:
    """Stop the broker that `driftline kafka start` started on this port."""
    from shared.localkafka import LocalKafka

    stopped = LocalKafka(port=port).stop()
    console.print("Kafka stopped" if stopped else "no broker started by driftline runs here")


@kafka_app.command("status")
def kafka_status(port: PortOption = 9092, secure: SecureOption = False) -> None:
    """Say whether a broker answers; exit 1 if none does."""
    from shared.localkafka import LocalKafka

    broker = LocalKafka(port=port, secure=secure)
    if broker.is_up():
        console.print(f"Kafka answers on {broker.bootstrap} (pid {broker.pid() or 'not ours'})")
        return
    console.print(f"no broker answers on {broker.bootstrap}")
    raise typer.Exit(1)


MlflowPortOption = Annotated[int, typer.Option(help="Port of the local MLflow server.")]


@mlflow_app.command("start")
def mlflow_start(port: MlflowPortOption = 5000) -> None:
    """Start a local MLflow server (SQLite backend, basic auth); does nothing if one answers."""
    from shared.localmlflow import LocalMlflow

    server = LocalMlflow(port=port)
    with console.status(f"starting MLflow on {server.uri}"):
        seconds = server.start()
    console.print(f"MLflow {server.uri} up in {seconds:.1f}s (log: {server.log_path})")
    password = (
        f"$(cat {server.password_path})"
        if server.credentials.password is None
        else "<your MLFLOW_TRACKING_PASSWORD>"
    )
    console.print(
        "basic auth is on; clients need: export "
        f"MLFLOW_TRACKING_USERNAME={server.username} MLFLOW_TRACKING_PASSWORD={password}",
        highlight=False,
        soft_wrap=True,
    )


@mlflow_app.command("stop")
def mlflow_stop(port: MlflowPortOption = 5000) -> None:
    """Stop the MLflow server that `driftline mlflow start` started on this port."""
    from shared.localmlflow import LocalMlflow

    stopped = LocalMlflow(port=port).stop()
    console.print("MLflow stopped" if stopped else "no MLflow server of ours runs here")


@topics_app.command("create")
def topics_create() -> None:
    """Create Driftline's topics with their partitions and cleanup policies."""
    from shared.admin import create_topics

    created = asyncio.run(create_topics(cfg.load(cfg.DriftlineSettings)))
    console.print(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))


@app.command("settings")
def settings_list(as_json: JsonOption = False) -> None:
    """List every environment variable Driftline reads, with type, default, value and meaning.

    The value is as set in this environment (secrets masked).
    --json: an array of {"variable", "type", "default", "value", "description"}."""
    docs = cfg.setting_docs(os.environ)
    if as_json:
        print_json(docs)
        return
    table = Table("variable", "type", "default", "value", "meaning")
    for doc in docs:
        default = doc.default if isinstance(doc.default, str) else json.dumps(doc.default)
        table.add_row(doc.variable, doc.type, default, doc.value or "-", doc.description)
    stdout().print(table, highlight=False)


def _kafka_failure(exc: Exception) -> DriftlineError | None:
    """What a Kafka client's error means to the user, None for any other error (aiokafka is
    imported here, on failure only, to keep start-up light)."""
    from aiokafka.errors import KafkaError

    from shared.kafka_clients import kafka_failure

    if not isinstance(exc, KafkaError):
        return None
    return kafka_failure(exc, cfg.load(cfg.DriftlineSettings))


def main() -> None:
    """Entry point: run the command; a `DriftlineError` becomes one line on stderr and its exit
    code (2 for a mistake, 3 for "try again later"), and so does a Kafka client's error: a
    broker out of reach is 3, a refusal (wrong credentials or CA, a denied ACL) is 2. aiokafka
    prints nothing of its own: the command's one line says what failed."""
    hold_kafka_client_logs()
    try:
        app()
    except DriftlineError as exc:
        _fail(exc)
    except Exception as exc:
        failure = _kafka_failure(exc)
        if failure is None:
            raise
        _fail(failure)


def _fail(exc: DriftlineError) -> NoReturn:
    errors.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
