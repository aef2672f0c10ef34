"""`driftline deploy`, `driftline deployments list|delete` and `driftline models list`.

A deployment is checked before it is published (its model URIs, its stream, its models in
MLflow): a bad one is refused in one line and nothing reaches the routers. Deleting one writes
a tombstone under its name on the compacted ``deployments`` topic, which every reader of the
topic (routers, learners, the drift service) takes as "no such deployment".
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from services.tools.terminal import (
    DryRunOption,
    JsonOption,
    YesOption,
    bound_mlflow_requests,
    confirm,
    print_empty,
    print_json,
    print_listing,
    quiet_logging,
    stdout,
)
from shared import settings as cfg
from shared.deploying import check_deployable, deployment_from_file, deployment_from_options
from shared.errors import DriftlineError, UnknownDeploymentError
from shared.events import Deployment

deployments_app = typer.Typer(no_args_is_help=True, help="Deployments the routers serve.")
models_app = typer.Typer(no_args_is_help=True, help="Models in the MLflow registry.")


def register(app: typer.Typer) -> None:
    """Add `driftline deploy`, `driftline deployments ...` and `driftline models ...`."""
    app.command("deploy")(deploy)
    app.add_typer(deployments_app, name="deployments")
    app.add_typer(models_app, name="models")


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
    print_listing(
        found, "deployments", lambda d: f"{d.name}  stream={d.stream}  {variants_line(d)}", as_json
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
