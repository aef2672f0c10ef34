"""What a deployment or a stream declaration must be before it is published: read from options
or a file, and checked against the live topics and MLflow. The CLI, the console and `driftline
apply` publish through these same checks, so a change refused in one is refused in all.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from shared import settings as cfg
from shared.errors import DriftlineError
from shared.events import Deployment, RoutingRule, StreamSchema, Variant, describe_problem

_CONDITION = re.compile(r"^\s*(?P<field>[\w.-]+)\s*(?P<op>==|!=|<=|>=|<|>|\sin\s)\s*(?P<value>.+)$")


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
    retrain: Mapping[str, Any] | None = None,
    promotion: Mapping[str, Any] | None = None,
) -> Deployment:
    """The deployment the `deploy` options describe; a mistake raises one readable line.
    `retrain` and `promotion`: fields of its `RetrainSpec` and `PromotionPolicy` (numbers may
    be text, as a form sends them); a field left out keeps its default."""
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
        return Deployment.model_validate(
            {
                "name": name,
                "stream": stream,
                "variants": variants,
                "retrain": dict(retrain or {}),
                "promotion": dict(promotion or {}),
            }
        )
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


async def check_deployable(
    settings: cfg.DriftlineSettings,
    deployment: Deployment,
    streams: Mapping[str, StreamSchema] | None = None,
) -> None:
    """Refuse a deployment the routers could not serve: a model URI of no known form, a stream
    that is not declared, an MLflow model, version or alias that does not exist, a V2 endpoint
    that is not ready or whose model takes inputs the stream's events do not hold. Cheapest
    first: the URIs, then Kafka, then the V2 endpoints, then MLflow. `streams`: the declared
    streams by name, when the caller has read them (and adds those it publishes first, as
    `driftline apply` does); None reads them from the topic."""
    from shared.admin import live_streams
    from shared.model_uris import V2_PREFIXES, RegistryUri, check_model_uri
    from shared.v2 import V2Backend, V2Options

    for variant in deployment.variants:
        check_model_uri(variant.model_uri)
    if streams is None:
        streams = await live_streams(settings)
    stream = streams.get(deployment.stream)
    if stream is None:
        raise UndeclaredStreamError(deployment.name, deployment.stream)
    for uri in sorted({v.model_uri for v in deployment.variants}):
        if uri.startswith(V2_PREFIXES):
            await V2Backend(uri, V2Options(metadata_attempts=1)).check_serves(stream)
    in_registry = [
        (variant.model_uri, parts)
        for variant in deployment.variants
        if (parts := RegistryUri.parse(variant.model_uri)) is not None
    ]
    if not in_registry:
        return  # no registry model: MLflow is neither imported (seconds) nor asked
    from shared.registry import MlflowRegistry  # MLflow only once the cheaper checks passed

    registry = MlflowRegistry(settings.mlflow_tracking_uri)
    for uri, parts in in_registry:
        await asyncio.to_thread(registry.resolve, uri, parts.name, parts.alias, parts.version)


def stream_from_file(path: Path) -> StreamSchema:
    """A stream declaration from a JSON file; a mistake raises one readable error."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DriftlineError(f"cannot read {path}: {exc.strerror}") from None
    return stream_from_text(text, str(path))


def stream_from_text(text: str, where: str) -> StreamSchema:
    """A stream declaration from JSON text (a file's, a form's); a mistake raises one readable
    error naming `where` it came from."""
    try:
        return StreamSchema.model_validate_json(text)
    except ValidationError as exc:
        raise DriftlineError(
            f"{where} is not a stream declaration: {describe_problem(exc)}"
        ) from None


BOOKKEEPING = frozenset({"updated_at", "updated_by"})
"""Fields a publisher stamps anew on every record (when, and who); a change of these alone is
no change."""


def describe_change(live: BaseModel | None, new: BaseModel | None) -> list[str]:
    """The lines a reviewer reads before a record is published: a unified diff of the live record
    and the new one as indented JSON (``live`` and ``new`` headers), bookkeeping left out, empty
    when nothing changes. None stands for "no record" (a creation, or a deletion)."""

    def lines(record: BaseModel | None) -> list[str]:
        if record is None:
            return []
        fields = record.model_dump(mode="json", exclude=set(BOOKKEEPING))
        return json.dumps(fields, indent=2, sort_keys=True).splitlines()

    return list(difflib.unified_diff(lines(live), lines(new), "live", "new", lineterm=""))
