"""`driftline deploy`, `driftline deployments list` and `driftline models list`."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from shared import settings as cfg
from shared.admin import live_deployments, publish
from shared.errors import DriftlineError
from shared.events import Deployment, RoutingRule, Variant, describe_problem, encode
from shared.logging import configure_logging
from shared.topics import DEPLOYMENTS

deployments_app = typer.Typer(no_args_is_help=True, help="Deployments the routers serve.")
models_app = typer.Typer(no_args_is_help=True, help="Models in the MLflow registry.")
console = Console()
_CONDITION = re.compile(r"^\s*(?P<field>[\w.-]+)\s*(?P<op>==|!=|<=|>=|<|>|\sin\s)\s*(?P<value>.+)$")


def register(app: typer.Typer) -> None:
    """Add `driftline deploy`, `driftline deployments ...` and `driftline models ...`."""
    app.command("deploy")(deploy)
    app.add_typer(deployments_app, name="deployments")
    app.add_typer(models_app, name="models")


def parse_rule(text: str) -> tuple[RoutingRule, str]:
    """``tier==premium=models:/fraud@premium`` as (rule, model URI); the value is read as JSON
    when it is JSON (numbers, true, lists), else as text."""
    condition, _, uri = text.rpartition("=")
    match = _CONDITION.match(condition)
    if not uri or match is None:
        raise DriftlineError(
            f"rule {text!r}: expected <field><op><value>=<model uri>, e.g. tier==premium=online:m"
        )
    raw_value = match["value"].strip()
    try:
        value: Any = json.loads(raw_value)
    except ValueError:
        value = raw_value
    return RoutingRule(field=match["field"], op=match["op"].strip(), value=value), uri


def deployment_from_options(
    name: str,
    stream: str,
    champion: str,
    canary: str | None = None,
    canary_weight: float = 0.0,
    rules: list[str] | None = None,
    shadows: list[str] | None = None,
) -> Deployment:
    """The deployment the `deploy` options describe; a mistake raises one readable line."""
    try:
        variants = [Variant(name="champion", role="champion", model_uri=champion)]
        if canary is not None:
            variants.append(
                Variant(name="canary", role="canary", model_uri=canary, weight=canary_weight)
            )
        for i, text in enumerate(rules or [], start=1):
            rule, uri = parse_rule(text)
            variants.append(Variant(name=f"rule-{i}", role="rule", model_uri=uri, rule=rule))
        for i, uri in enumerate(shadows or [], start=1):
            variants.append(Variant(name=f"shadow-{i}", role="shadow", model_uri=uri))
        return Deployment(name=name, stream=stream, variants=variants)
    except ValidationError as exc:
        raise DriftlineError(f"deployment {name!r}: {describe_problem(exc)}") from None


def deployment_from_file(path: Path) -> Deployment:
    """A deployment from a JSON file."""
    try:
        return Deployment.model_validate_json(path.read_text())
    except OSError as exc:
        raise DriftlineError(f"cannot read {path}: {exc.strerror}") from None
    except ValidationError as exc:
        raise DriftlineError(f"{path} is not a deployment: {describe_problem(exc)}") from None


def deploy(
    name: Annotated[str | None, typer.Argument(help="Deployment name.")] = None,
    stream: Annotated[str | None, typer.Option(help="Stream whose events it answers.")] = None,
    champion: Annotated[str | None, typer.Option(help="Model URI serving by default.")] = None,
    canary: Annotated[str | None, typer.Option(help="Model URI of a canary.")] = None,
    canary_weight: Annotated[float, typer.Option(help="Share of entities on the canary.")] = 0.1,
    rule: Annotated[
        list[str] | None, typer.Option(help="'<field><op><value>=<model uri>', repeatable.")
    ] = None,
    shadow: Annotated[list[str] | None, typer.Option(help="Shadow model URI, repeatable.")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Deployment JSON.")] = None,
) -> None:
    """Create or replace a deployment; routers apply it without a restart."""
    if file is not None:
        deployment = deployment_from_file(file)
    elif name is None or stream is None or champion is None:
        raise DriftlineError("deploy needs NAME, --stream and --champion (or --file)")
    else:
        deployment = deployment_from_options(
            name, stream, champion, canary, canary_weight, rule, shadow
        )
    settings = cfg.load(cfg.DriftlineSettings)
    asyncio.run(publish(settings, DEPLOYMENTS, deployment.name, encode(deployment)))
    roles = ", ".join(f"{v.name}={v.model_uri}" for v in deployment.variants)
    console.print(f"deployed {deployment.name} on stream {deployment.stream}: {roles}")


@deployments_app.command("list")
def list_deployments() -> None:
    """List live deployments (the compacted topic read to its end)."""
    settings = cfg.load(cfg.DriftlineSettings)
    configure_logging("cli", settings.log_level, settings.log_format)  # skipped records, on stderr
    for deployment in asyncio.run(live_deployments(settings)).values():
        variants = ", ".join(
            f"{v.name}({v.role}{f' {v.weight:.0%}' if v.role == 'canary' else ''})={v.model_uri}"
            for v in deployment.variants
        )
        console.print(f"{deployment.name}  stream={deployment.stream}  {variants}", highlight=False)


@models_app.command("list")
def list_models() -> None:
    """List registered models with their versions and aliases."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from shared.registry import UnsearchableError, filter_value

    uri = cfg.load(cfg.DriftlineSettings).mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        for model in client.search_registered_models():
            aliases = ", ".join(f"@{a}={v}" for a, v in sorted(model.aliases.items()))
            try:
                of_model = f"name = {filter_value('model name', model.name)}"
            except UnsearchableError as exc:
                console.print(f"{model.name!r}  versions=?  {aliases}  ({exc})", highlight=False)
                continue
            versions = sorted(int(v.version) for v in client.search_model_versions(of_model))
            shown = ",".join(map(str, versions))
            console.print(f"{model.name}  versions={shown}  {aliases}", highlight=False)
    except MlflowException as exc:
        raise DriftlineError(f"MLflow at {uri}: {exc.message.splitlines()[0]}") from None
