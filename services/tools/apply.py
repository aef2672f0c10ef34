"""`driftline apply -f DIR|FILE` and `driftline schema`: deployments and streams from YAML specs
(`shared.specs`), as a GitOps tool or a CI job reconciles them.

`apply` reads every spec first and refuses the lot at the first bad one (exit 2, file and
document named); checks each as `driftline deploy` and `driftline streams declare` do
(`shared.deploying`), counting the streams it declares itself; compares them with the live
records and publishes only what changed, streams first. ``--dry-run`` prints the diff and
publishes nothing; ``--prune`` also deletes the live deployments no spec names (tombstones, as
`driftline deployments delete` writes), after confirmation unless ``--yes``.
"""

from __future__ import annotations

import asyncio
import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from services.tools.terminal import (
    DryRunOption,
    JsonOption,
    YesOption,
    bound_mlflow_requests,
    confirm,
    print_json,
    quiet_logging,
    stdout,
)
from shared import settings as cfg
from shared.errors import DriftlineError

if TYPE_CHECKING:
    from rich.console import Console

    from shared.specs import Action, Plan, Spec, SpecKind

DONE: dict[Action, str] = {
    "create": "created",
    "change": "changed",
    "unchanged": "unchanged",
    "prune": "pruned",
}
"""Each action as the output names it once done; also its key in ``--json`` output."""
PENDING: dict[Action, str] = {
    "create": "to create",
    "change": "to change",
    "unchanged": "unchanged",
    "prune": "to prune",
}
"""Each action as a dry run counts it."""
_DIFF_STYLES = {"+": "green", "-": "red", "@": "cyan"}


class SchemaKind(enum.StrEnum):
    """The kinds `driftline schema` exports; none: any spec."""

    deployment = "deployment"
    stream = "stream"


SPEC_KINDS: dict[SchemaKind, SpecKind] = {
    SchemaKind.deployment: "Deployment",
    SchemaKind.stream: "Stream",
}


def register(app: typer.Typer) -> None:
    """Add `driftline apply` and `driftline schema`."""
    app.command("apply")(apply_command)
    app.command("schema")(schema_command)


async def checked_plan(settings: cfg.DriftlineSettings, specs: list[Spec], prune: bool) -> Plan:
    """The plan of `specs` against the live records, once every deployment spec passed the
    checks `driftline deploy` makes; a refused one is a `SpecError` naming its document, an
    outage stays an outage (exit 3)."""
    from shared.admin import live_deployments, live_streams
    from shared.deploying import check_deployable
    from shared.events import Deployment, StreamSchema
    from shared.specs import SpecError, plan

    streams, deployments = await asyncio.gather(live_streams(settings), live_deployments(settings))
    declared = streams | {
        s.record.name: s.record for s in specs if isinstance(s.record, StreamSchema)
    }
    for spec in specs:
        if not isinstance(spec.record, Deployment):
            continue
        try:
            await check_deployable(settings, spec.record, declared)
        except DriftlineError as exc:
            if exc.exit_code != DriftlineError.exit_code:
                raise
            raise SpecError(spec.source, str(exc)) from None
    return plan(specs, streams, deployments, prune=prune)


def report(plan: Plan, dry_run: bool) -> dict[str, Any]:
    """The ``--json`` output: ``dry_run``, then per action a list of ``{"kind", "name",
    "diff"}`` (``diff``: unified-diff lines, live against new, empty when unchanged), and the
    live deployments no spec names that stay (``unmanaged``, ``{"kind", "name"}``)."""
    shown: dict[str, Any] = {"dry_run": dry_run}
    for action, done in DONE.items():
        shown[done] = [{"kind": c.kind, "name": c.name, "diff": c.diff} for c in plan.of(action)]
    shown["unmanaged"] = [{"kind": "Deployment", "name": name} for name in plan.unmanaged]
    return shown


def _print_plan(console: Console, plan: Plan, pending: bool) -> None:
    """Each change with its diff, as done or (`pending`) as it would be done, and the live
    deployments left alone."""
    from rich.text import Text

    for change in plan.changes:
        done = f"would {change.action}" if pending and change.action != "unchanged" else None
        console.print(f"{done or DONE[change.action]} {change.kind} {change.name}", highlight=False)
        for line in change.diff:
            console.print(Text(f"  {line}", style=_DIFF_STYLES.get(line[:1], "")), highlight=False)
    if plan.unmanaged:
        console.print(
            f"not in the specs, kept: Deployment {', '.join(plan.unmanaged)} "
            "(--prune deletes them)",
            highlight=False,
        )


def _summary(plan: Plan, dry_run: bool) -> str:
    words = PENDING if dry_run else DONE
    counts = [f"{len(plan.of(action))} {words[action]}" for action in DONE if plan.of(action)]
    if not plan.to_publish:
        return f"nothing to apply: {', '.join(counts)}; nothing published"
    if dry_run:
        return f"dry run, nothing published: {', '.join(counts)}"
    return f"applied: {', '.join(counts)}"


def apply_command(
    files: Annotated[
        list[Path],
        typer.Option(
            "--file", "-f", help="A spec file, or a directory of *.yaml/*.yml/*.json; repeatable."
        ),
    ],
    dry_run: DryRunOption = False,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Delete live deployments the specs no longer name."),
    ] = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Create or change deployments and streams to match YAML specs; unchanged ones are left.

    Every spec is read and checked first (model URIs, streams, MLflow models): exit 2 naming the
    file and document of a bad one, 3 if Kafka or MLflow cannot be reached, and nothing is
    published. --json: {"dry_run", "created", "changed", "unchanged", "pruned": [{"kind",
    "name", "diff"}], "unmanaged": [{"kind", "name"}]}."""
    from shared.admin import publish_all
    from shared.events import encode
    from shared.specs import read_specs
    from shared.topics import DEPLOYMENTS, STREAMS

    specs = read_specs(files)
    if not specs:
        raise DriftlineError(f"no specs in {', '.join(map(str, files))}: nothing to apply")
    settings = cfg.load(cfg.DriftlineSettings)
    quiet_logging(settings)
    bound_mlflow_requests()
    plan = asyncio.run(checked_plan(settings, specs, prune))
    console = stdout()
    pruned = [change.name for change in plan.of("prune")]
    asks = bool(pruned) and not dry_run and not yes
    if asks and not as_json:
        _print_plan(console, plan, pending=True)  # what the question is about
    if pruned and not dry_run:
        confirm(f"prune (delete) deployments {', '.join(pruned)}?", yes)
    if plan.to_publish and not dry_run:
        topics = {"Stream": STREAMS, "Deployment": DEPLOYMENTS}
        records = [
            (topics[c.kind], c.name, None if c.record is None else encode(c.record))
            for c in plan.to_publish
        ]
        asyncio.run(publish_all(settings, records))
    if as_json:
        print_json(report(plan, dry_run))
        return
    if not asks:
        _print_plan(console, plan, pending=dry_run)
    console.print(_summary(plan, dry_run), highlight=False)


def schema_command(
    kind: Annotated[
        SchemaKind | None, typer.Argument(help="deployment or stream; none: any spec.")
    ] = None,
) -> None:
    """Print the JSON Schema of a spec, for editors and CI (the files under schemas/)."""
    from shared.specs import spec_schema

    print_json(spec_schema(None if kind is None else SPEC_KINDS[kind]))
