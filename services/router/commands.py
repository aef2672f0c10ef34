"""`driftline deploy`, `driftline deployments list|delete` and `driftline models list`.

A deployment is checked before it is published (its model URIs, its stream, its models in
MLflow): a bad one is refused in one line and nothing reaches the routers. Deleting one writes
a tombstone under its name on the compacted ``deployments`` topic, which every reader of the
topic (routers, learners, the drift service) takes as "no such deployment".
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from services.tools.terminal import (
    DryRunOption,
    JsonOption,
    YesOption,
    bound_mlflow_requests,
    confirm,
    print_empty,
    print_json,
    quiet_logging,
    stdout,
)
from shared import settings as cfg
from shared.errors import DriftlineError, UnknownDeploymentError
from shared.events import Deployment, RoutingRule, Variant, describe_problem

deployments_app = typer.Typer(no_args_is_help=True, help="Deployments the routers serve.")
models_app = typer.Typer(no_args_is_help=True, help="Models in the MLflow registry.")
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


class UndeclaredStreamError(DriftlineError):
    """A deployment answers a stream nobody declared: ingestion would dead-letter its events."""

    def __init__(self, deployment: str, stream: str) -> None:
        self.deployment = deployment
        self.stream = stream
        super().__init__(
            f"deployment {deployment!r}: stream {stream!r} is not declared "
            "(`driftline streams declare --file ...` first; `driftline streams list` shows them)"
        )


async def check_deployable(settings: cfg.DriftlineSettings, deployment: Deployment) -> None:
    """Refuse a deployment the routers could not serve: a model URI of no known form, a stream
    that is not declared, an MLflow model, version or alias that does not exist. Cheapest
    first: the URIs, then Kafka, then MLflow."""
    from shared.admin import live_streams
    from shared.model_uris import RegistryUri, check_model_uri

    for variant in deployment.variants:
        check_model_uri(variant.model_uri)
    if deployment.stream not in await live_streams(settings):
        raise UndeclaredStreamError(deployment.name, deployment.stream)
    from shared.registry import MlflowRegistry  # MLflow only once the cheaper checks passed

    registry = MlflowRegistry(settings.mlflow_tracking_uri)
    for variant in deployment.variants:
        parts = RegistryUri.parse(variant.model_uri)
        if parts is not None:
            await asyncio.to_thread(
                registry.resolve, variant.model_uri, parts.name, parts.alias, parts.version
            )


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
    """Create or replace a deployment; routers apply it without a restart.

    Its model URIs, its stream and its MLflow models are checked first: exit 2 if one is
    wrong, 3 if Kafka or MLflow cannot be reached, and nothing is published."""
    from shared.admin import publish
    from shared.events import encode
    from shared.topics import DEPLOYMENTS

    if file is not None:
        deployment = deployment_from_file(file)
    elif name is None or stream is None or champion is None:
        raise DriftlineError("deploy needs NAME, --stream and --champion (or --file)")
    else:
        deployment = deployment_from_options(
            name, stream, champion, canary, canary_weight, rule, shadow
        )
    settings = cfg.load(cfg.DriftlineSettings)
    bound_mlflow_requests()

    async def check_and_publish() -> None:
        if not deployment.deleted:
            await check_deployable(settings, deployment)
        await publish(settings, DEPLOYMENTS, deployment.name, encode(deployment))

    asyncio.run(check_and_publish())
    roles = ", ".join(f"{v.name}={v.model_uri}" for v in deployment.variants)
    stdout().print(
        f"deployed {deployment.name} on stream {deployment.stream}: {roles}", highlight=False
    )


def variants_line(deployment: Deployment) -> str:
    """A deployment's variants on one line, ``name(role[ weight])=uri`` each."""
    return ", ".join(
        f"{v.name}({v.role}{f' {v.weight:.0%}' if v.role == 'canary' else ''})={v.model_uri}"
        for v in deployment.variants
    )


@deployments_app.command("list")
def list_deployments(as_json: JsonOption = False) -> None:
    """List live deployments (the compacted topic read to its end).

    --json: an array of deployment records as on the topic."""
    from shared.admin import live_deployments

    settings = cfg.load(cfg.DriftlineSettings)
    quiet_logging(settings)  # skipped records, on stderr
    found = sorted(asyncio.run(live_deployments(settings)).values(), key=lambda d: d.name)
    if as_json:
        print_json(found)
        return
    console = stdout()
    if not found:
        print_empty(console, "deployments")
    for deployment in found:
        console.print(
            f"{deployment.name}  stream={deployment.stream}  {variants_line(deployment)}",
            highlight=False,
        )


@deployments_app.command("delete")
def delete_deployment(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    yes: YesOption = False,
    dry_run: DryRunOption = False,
) -> None:
    """Stop serving a deployment: routers dead-letter its stream's events from then on."""
    from shared.admin import live_deployments, publish
    from shared.topics import DEPLOYMENTS

    settings = cfg.load(cfg.DriftlineSettings)
    quiet_logging(settings)
    deployment = asyncio.run(live_deployments(settings)).get(name)
    if deployment is None:
        raise UnknownDeploymentError(name)
    console = stdout()
    if dry_run:
        console.print(
            f"would delete {name} (stream {deployment.stream}: {variants_line(deployment)})",
            highlight=False,
        )
        return
    confirm(f"delete deployment {name} (stream {deployment.stream})?", yes)
    asyncio.run(publish(settings, DEPLOYMENTS, name, None))
    console.print(f"deleted {name}", highlight=False)


@models_app.command("list")
def list_models(as_json: JsonOption = False) -> None:
    """List registered models with their versions and aliases.

    --json: an array of {"name", "versions", "aliases"} (versions as strings, aliases by name)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from shared.registry import UnsearchableError, filter_value, registry_failure

    bound_mlflow_requests()
    uri = cfg.load(cfg.DriftlineSettings).mlflow_tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found: list[dict[str, Any]] = []
    problems: dict[str, str] = {}
    try:
        for model in client.search_registered_models():
            entry: dict[str, Any] = {
                "name": model.name,
                "versions": None,
                "aliases": {a: str(v) for a, v in sorted(model.aliases.items())},
            }
            found.append(entry)
            try:
                of_model = f"name = {filter_value('model name', model.name)}"
            except UnsearchableError as exc:
                problems[model.name] = str(exc)
                continue
            versions = sorted(int(v.version) for v in client.search_model_versions(of_model))
            entry["versions"] = [str(v) for v in versions]
    except MlflowException as exc:
        raise registry_failure(uri, "list models", exc) from None
    if as_json:
        print_json(found)
        return
    console = stdout()
    if not found:
        print_empty(console, f"registered models in MLflow at {uri}")
    for entry in found:
        aliases = ", ".join(f"@{a}={v}" for a, v in entry["aliases"].items())
        if entry["versions"] is None:
            shown = f"{entry['name']!r}  versions=?  {aliases}  ({problems[entry['name']]})"
        else:
            shown = f"{entry['name']}  versions={','.join(entry['versions'])}  {aliases}"
        console.print(shown, highlight=False)
