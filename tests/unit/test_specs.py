"""Specs (shared/specs.py): reading YAML files into records, refusing bad ones with the file and
document named, planning an apply against live records, and the JSON Schema under schemas/."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from shared.deploying import deployment_from_options
from shared.events import StreamSchema
from shared.specs import (
    SpecError,
    load_documents,
    parse_specs,
    plan,
    read_specs,
    spec_files,
    spec_schema,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = {
    "spec": None,
    "deployment": "Deployment",
    "stream": "Stream",
}
STREAM = "kind: Stream\nname: payments\nfeatures: [{name: amount}]\n"
DEPLOYMENT = """\
kind: Deployment
name: fraud
stream: payments
variants: [{name: champion, role: champion, model_uri: "online:fraud-lr"}]
"""


def test_a_file_holds_several_specs_and_empty_documents_are_skipped() -> None:
    specs = parse_specs(f"---\n{STREAM}---\n# nothing here\n---\n{DEPLOYMENT}", "a.yaml")
    assert [(s.kind, s.record.name, s.source) for s in specs] == [
        ("Stream", "payments", "a.yaml document 1"),  # a leading --- starts no document
        ("Deployment", "fraud", "a.yaml document 3"),
    ]
    assert specs[1].record == deployment_from_options(
        "fraud", "payments", "online:fraud-lr"
    ).model_copy(update={"updated_at": specs[1].record.updated_at})


def test_yes_no_on_and_off_stay_text_as_in_yaml_1_2() -> None:
    [spec] = parse_specs(
        DEPLOYMENT.replace(
            "}]",
            "}, {name: r, role: rule, model_uri: 'online:x', rule: "
            "{field: country, op: in, value: [NO, yes, on, off, true, False]}}]",
        ),
        "a.yaml",
    )
    [rule] = [v.rule for v in spec.record.variants if v.rule is not None]
    assert rule.value == ["NO", "yes", "on", "off", True, False]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("- a list\n", "a.yaml document 1: expected a mapping with a kind, got list"),
        ("name: x\n", "a.yaml document 1: kind must be one of Stream, Deployment, got None"),
        (
            "kind: Service\n",
            "a.yaml document 1: kind must be one of Stream, Deployment, got 'Service'",
        ),
        (
            DEPLOYMENT + "promtion: {alpha: 0.01}\n",
            "a.yaml document 1: Deployment has no field 'promtion'",
        ),
        (
            STREAM + "updated_at: 2026-01-01T00:00:00Z\n",
            "a.yaml document 1: Stream has no field 'updated_at'",
        ),
        (DEPLOYMENT + "deleted: true\n", "a.yaml document 1: Deployment has no field 'deleted'"),
        (
            f"{STREAM}---\n" + DEPLOYMENT.replace("role: champion", "role: shadow"),
            "a.yaml document 2: Deployment 'fraud': Value error, needs exactly one champion "
            "variant, has 0",
        ),
        (
            "kind: Stream\nname: payments\nfeatures: [{name: amount, type: text}]\n",
            "a.yaml document 1: Stream 'payments': features.0.type: Input should be 'numeric', "
            "'categorical' or 'boolean'",
        ),
        ("kind: Stream\nname: [unclosed\n", "a.yaml: not valid YAML: "),
    ],
)
def test_a_bad_spec_is_one_error_naming_file_and_document(text: str, problem: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_specs(text, "a.yaml")
    assert str(caught.value).startswith(problem)
    assert "\n" not in str(caught.value)


def test_a_directory_gives_its_spec_files_only(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(DEPLOYMENT)
    (tmp_path / "a.yaml").write_text(STREAM)
    (tmp_path / "notes.md").write_text("not a spec")
    (tmp_path / ".hidden.yaml").write_text("kind: nonsense")
    # a mounted ConfigMap: files are links into a hidden directory of the current version
    (tmp_path / "..2026_12_07").mkdir()
    (tmp_path / "..2026_12_07" / "c.yaml").write_text(STREAM.replace("payments", "loans"))
    (tmp_path / "..data").symlink_to("..2026_12_07")
    (tmp_path / "c.yaml").symlink_to(tmp_path / "..data" / "c.yaml")
    assert [p.name for p in spec_files([tmp_path])] == ["a.yaml", "b.yml", "c.yaml"]
    assert [s.record.name for s in read_specs([tmp_path])] == ["payments", "fraud", "loans"]
    with pytest.raises(SpecError, match=r"missing\.yaml: no such file or directory"):
        spec_files([tmp_path / "missing.yaml"])


def test_two_specs_of_one_name_are_refused_naming_both(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(DEPLOYMENT)
    (tmp_path / "b.yaml").write_text(f"{STREAM}---\n{DEPLOYMENT}")
    with pytest.raises(SpecError) as caught:
        read_specs([tmp_path])
    assert str(caught.value) == (
        f"{tmp_path / 'b.yaml'} document 2: Deployment 'fraud' is also in "
        f"{tmp_path / 'a.yaml'} document 1"
    )


def test_plan_creates_changes_keeps_and_prunes_only_when_asked() -> None:
    specs = parse_specs(
        f"{DEPLOYMENT}---\n{STREAM}---\n"
        + DEPLOYMENT.replace("fraud-lr", "loans-hat").replace("fraud", "loans"),
        "a.yaml",
    )
    stream = StreamSchema.model_validate_json(
        '{"name": "payments", "features": [{"name": "amount"}], "updated_at": 0}'
    )
    live_fraud = deployment_from_options("fraud", "payments", "online:fraud-lr")
    live_loans = deployment_from_options("loans", "payments", "online:loans-lr")
    gone = deployment_from_options("old", "payments", "online:old")
    live = {"fraud": live_fraud, "loans": live_loans, "old": gone}

    kept = plan(specs, {"payments": stream}, live, prune=False)
    assert [(c.kind, c.name, c.action) for c in kept.changes] == [
        ("Stream", "payments", "unchanged"),  # another updated_at is no change
        ("Deployment", "fraud", "unchanged"),
        ("Deployment", "loans", "change"),
    ]
    assert kept.unmanaged == ["old"]
    assert '+      "model_uri": "online:loans-hat",' in kept.of("change")[0].diff
    assert [c.name for c in kept.to_publish] == ["loans"]

    pruned = plan(specs, {}, live, prune=True)
    assert [(c.kind, c.name, c.action) for c in pruned.to_publish] == [
        ("Stream", "payments", "create"),
        ("Deployment", "loans", "change"),
        ("Deployment", "old", "prune"),
    ]
    [prune] = pruned.of("prune")
    assert prune.record is None and prune.diff[3:] and prune.diff[3].startswith("-")
    assert pruned.unmanaged == []


@pytest.mark.parametrize(("name", "kind"), SCHEMAS.items())
def test_the_committed_schemas_are_the_records_schemas(name: str, kind: str | None) -> None:
    committed = json.loads((ROOT / "schemas" / f"{name}.schema.json").read_text())
    assert committed == spec_schema(kind), (  # type: ignore[arg-type]
        f"schemas/{name}.schema.json is stale: `make schemas` writes it anew"
    )


def test_the_example_specs_pass_the_schema_and_the_parser() -> None:
    schema = spec_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    examples = sorted((ROOT / "deploy" / "specs").glob("*.yaml"))
    assert examples
    for path in examples:
        for document in load_documents(path.read_text(), str(path)):
            assert list(validator.iter_errors(document)) == [], path
    assert {s.kind for s in read_specs(examples)} == {"Stream", "Deployment"}


@pytest.mark.parametrize(
    "document",
    [
        {"kind": "Deployment", "name": "x", "stream": "s", "variants": [], "promtion": {}},
        {"kind": "Stream", "name": "s", "features": [], "updated_at": "2026-01-01T00:00:00Z"},
        {"kind": "Stream", "name": "s", "features": [{"name": "a", "type": "text"}]},
        {"kind": "Service", "name": "s"},
        {"name": "s", "features": []},
    ],
)
def test_the_schema_refuses_what_the_parser_refuses(document: dict[str, object]) -> None:
    assert not jsonschema.Draft202012Validator(spec_schema()).is_valid(document)
    with pytest.raises(SpecError):
        parse_specs(yaml.safe_dump(document), "a.yaml")
