"""Deployments and stream declarations as YAML files (specs), for review in git and GitOps.

A spec is one YAML document: ``kind`` (``Deployment`` or ``Stream``) and the fields of the record
as it stands on its topic (`shared.events.Deployment`, `shared.events.StreamSchema`), less what a
publisher stamps (``updated_at``, ``updated_by``) and ``deleted`` (a deployment the files stop
naming is deleted by ``driftline apply --prune``). A file holds one spec or several, ``---``
between them. The records are the schema: `spec_schema` exports it as JSON Schema for editors and
CI, and `plan` says what publishing the specs would change, by `describe_change`'s diff.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError
from pydantic.json_schema import models_json_schema

from shared.deploying import BOOKKEEPING, describe_change
from shared.errors import DriftlineError
from shared.events import Deployment, StreamSchema, describe_problem

SpecKind = Literal["Deployment", "Stream"]
Record = Deployment | StreamSchema
RECORDS: dict[SpecKind, type[Deployment] | type[StreamSchema]] = {
    "Stream": StreamSchema,
    "Deployment": Deployment,
}
"""What each kind of spec stands for; streams first, the order they are published in (a
deployment may answer a stream declared by the same apply)."""
LEFT_OUT = (*sorted(BOOKKEEPING), "deleted")
"""Record fields a spec does not carry: the publisher stamps when and who, pruning deletes."""
SPEC_SUFFIXES = (".yaml", ".yml", ".json")
SCHEMA_ID = "https://driftline.dev/schemas/{name}.schema.json"


class SpecError(DriftlineError):
    """A spec that cannot be published as written; names the file and the document."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading booleans as YAML 1.2 (and JSON, and editors' schema
    checks) do: only ``true``/``false``. YAML 1.1 also takes ``yes``, ``no``, ``on``, ``off``,
    so a rule on country ``NO`` or a category ``yes`` would silently become a boolean."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True)
class Spec:
    """One spec read from a file: its record, and where it was written (for errors)."""

    kind: SpecKind
    record: Record
    source: str


def spec_from_document(document: object, source: str) -> Spec:
    """The spec one YAML document holds; `SpecError` for anything else, naming the first problem
    (an unknown field included: a typo must not fall back to a default unseen)."""
    if not isinstance(document, Mapping):
        raise SpecError(source, f"expected a mapping with a kind, got {type(document).__name__}")
    kind = document.get("kind")
    if kind not in RECORDS:
        raise SpecError(source, f"kind must be one of {', '.join(RECORDS)}, got {kind!r}")
    fields = {key: value for key, value in document.items() if key != "kind"}
    schema = RECORDS[kind]
    allowed = set(schema.model_fields) - set(LEFT_OUT)
    unknown = sorted(str(key) for key in fields if key not in allowed)
    if unknown:
        raise SpecError(source, f"{kind} has no field {', '.join(map(repr, unknown))}")
    try:
        record = schema.model_validate(fields)
    except ValidationError as exc:
        name = fields.get("name")
        shown = f"{kind} {name!r}" if isinstance(name, str) else kind
        raise SpecError(source, f"{shown}: {describe_problem(exc)}") from None
    return Spec(kind, record, source)


def load_documents(text: str, path: str) -> list[object]:
    """The YAML documents of one file's text, as `_Loader` reads them (None for an empty one)."""
    try:
        return list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        raise SpecError(path, f"not valid YAML: {' '.join(str(exc).split())}") from None


def parse_specs(text: str, path: str) -> list[Spec]:
    """Every spec of one file's text (empty documents skipped), numbered from 1 in errors."""
    return [
        spec_from_document(document, f"{path} document {n}")
        for n, document in enumerate(load_documents(text, path), start=1)
        if document is not None
    ]


def spec_files(paths: Iterable[Path]) -> list[Path]:
    """The files `paths` name: a file as given, a directory's ``*.yaml``, ``*.yml`` and
    ``*.json`` files (not its subdirectories or hidden files, such as the ``..data`` links of a
    mounted ConfigMap), sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                child
                for child in path.iterdir()
                if child.suffix in SPEC_SUFFIXES
                and not child.name.startswith(".")
                and child.is_file()
            )
        elif path.is_file():
            found.append(path)
        else:
            raise SpecError(str(path), "no such file or directory")
    return found


def read_specs(paths: Iterable[Path]) -> list[Spec]:
    """Every spec of the files `paths` name; `SpecError` at the first bad one, or for two
    specs of one kind and name (which one would win is not for file order to decide)."""
    specs: list[Spec] = []
    seen: dict[tuple[str, str], str] = {}
    for path in spec_files(paths):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError(str(path), f"cannot read it: {exc}") from None
        for spec in parse_specs(text, str(path)):
            key = (spec.kind, spec.record.name)
            if key in seen:
                raise SpecError(
                    spec.source, f"{spec.kind} {spec.record.name!r} is also in {seen[key]}"
                )
            seen[key] = spec.source
            specs.append(spec)
    return specs


Action = Literal["create", "change", "unchanged", "prune"]


@dataclass(frozen=True)
class Change:
    """What applying does to one record: `diff` is `describe_change`'s, live against new;
    `record` is what gets published (None: a tombstone)."""

    kind: SpecKind
    name: str
    action: Action
    diff: list[str]
    record: Record | None


@dataclass(frozen=True)
class Plan:
    """Every change one apply makes, in publishing order (streams, deployments, prunes), and
    the live deployments the specs do not name and that stay (without ``--prune``)."""

    changes: list[Change]
    unmanaged: list[str] = field(default_factory=list)

    def of(self, action: Action) -> list[Change]:
        """The changes of one action."""
        return [change for change in self.changes if change.action == action]

    @property
    def to_publish(self) -> list[Change]:
        """What goes on the topics: everything but the unchanged records."""
        return [change for change in self.changes if change.action != "unchanged"]


def plan(
    specs: Iterable[Spec],
    live_streams: Mapping[str, StreamSchema],
    live_deployments: Mapping[str, Deployment],
    *,
    prune: bool,
) -> Plan:
    """Compare the specs with the live records: a record is created, changed or unchanged
    (bookkeeping aside); with `prune`, live deployments no spec names are deleted."""
    live: dict[SpecKind, Mapping[str, Record]] = {
        "Stream": live_streams,
        "Deployment": live_deployments,
    }
    ordered = sorted(specs, key=lambda s: (list(RECORDS).index(s.kind), s.record.name))
    changes: list[Change] = []
    for spec in ordered:
        before = live[spec.kind].get(spec.record.name)
        diff = describe_change(before, spec.record)
        action: Action = "create" if before is None else "change" if diff else "unchanged"
        changes.append(Change(spec.kind, spec.record.name, action, diff, spec.record))
    named = {spec.record.name for spec in ordered if spec.kind == "Deployment"}
    left = sorted(set(live_deployments) - named)
    if not prune:
        return Plan(changes, unmanaged=left)
    for name in left:
        diff = describe_change(live_deployments[name], None)
        changes.append(Change("Deployment", name, "prune", diff, None))
    return Plan(changes)


def spec_schema(kind: SpecKind | None = None) -> dict[str, Any]:
    """The JSON Schema of a spec of `kind`, or of any spec when None: the record's own schema
    as pydantic generates it, with ``kind`` added and the fields specs leave out removed."""
    kinds = list(RECORDS) if kind is None else [kind]
    _, generated = models_json_schema([(RECORDS[k], "validation") for k in kinds])
    definitions = generated["$defs"]
    for k in kinds:
        record = definitions[RECORDS[k].__name__]
        for name in LEFT_OUT:
            record["properties"].pop(name, None)
        record["properties"] = {
            "kind": {"const": k, "title": "Kind", "description": "What the spec declares."},
            **record["properties"],
        }
        record["required"] = ["kind", *record.get("required", [])]
        record["additionalProperties"] = False
    references = [{"$ref": f"#/$defs/{RECORDS[k].__name__}"} for k in kinds]
    name = "spec" if kind is None else kind.lower()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID.format(name=name),
        "title": f"Driftline {'spec' if kind is None else kind}",
        **({"oneOf": references} if kind is None else references[0]),
        "$defs": definitions,
    }
