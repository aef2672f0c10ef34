"""`driftline apply` against the real broker and MLflow: a directory of specs is applied, changed,
diffed in a dry run, applied again, applied once more as a no-op, and pruned; a refused spec
publishes nothing. Each step is one `driftline` process (about 1 s of CPU, 3 s when a spec names
an MLflow model: importing MLflow's client), so the steps are as few as the round trip needs and
only the first and the last name one."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from shared.admin import live_deployments, partition_counts
from shared.topics import DEPLOYMENTS, STREAMS
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.integration

STREAM = """\
kind: Stream
name: payments
features:
  - name: amount
  - {name: country, type: categorical, categories: ["NO", "SE"]}
"""
FRAUD = """\
kind: Deployment
name: fraud
stream: payments
variants:
  - {name: champion, role: champion, model_uri: "online:fraud-lr"}
  - name: nordics
    role: rule
    model_uri: online:fraud-nordics
    rule: {field: country, op: in, value: [NO, SE]}
"""
LOANS = """\
kind: Deployment
name: loans
stream: payments
variants:
  - {{name: champion, role: champion, model_uri: "models:/{model}@champion"}}
---
# an empty document: skipped
"""


def _records_on_topics_of_record(pipeline: Pipeline) -> int:
    """How many records `deployments` and `streams` hold: what a publish adds to."""
    from aiokafka.structs import TopicPartition

    from shared.kafka_clients import consumer

    async def count() -> int:
        counts = await partition_counts(pipeline.settings, DEPLOYMENTS, STREAMS)
        reader = consumer(pipeline.settings, enable_auto_commit=False, group_id=None)
        await reader.start()
        try:
            ends = await reader.end_offsets(
                [TopicPartition(name, p) for name, n in counts.items() for p in range(n)]
            )
        finally:
            await reader.stop()
        return sum(ends.values())

    return asyncio.run(count())


def _register_champion(mlflow_uri: str) -> str:
    """A registered model whose version 1 has the alias ``champion``. check_deployable asks
    MLflow for the alias only and loads nothing, so the version's source is a bare location."""
    name = f"apply-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    client.create_registered_model(name)
    version = client.create_model_version(name, source="s3://driftline-tests/apply/model")
    client.set_registered_model_alias(name, "champion", version.version)
    return name


def test_apply_round_trips_a_directory_of_specs(
    pipeline: Pipeline, mlflow_uri: str, tmp_path: Path
) -> None:
    model = _register_champion(mlflow_uri)
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "payments.yaml").write_text(STREAM)
    (specs / "fraud.yaml").write_text(FRAUD)
    (specs / "loans.yml").write_text(LOANS.format(model=model))

    def apply(*args: str, **env: str) -> tuple[int, str]:
        result = pipeline.driftline(
            "apply", "-f", str(specs), *args, **{"DRIFTLINE_MLFLOW_TRACKING_URI": mlflow_uri, **env}
        )
        assert "Traceback" not in result.stderr
        return result.returncode, (result.stderr if result.returncode else result.stdout).strip()

    def names(report: dict[str, list[dict[str, str]]], action: str) -> list[str]:
        return [f"{entry['kind']} {entry['name']}" for entry in report[action]]

    # apply: everything is created, the stream first (the deployments answer it)
    code, out = apply("--json")
    assert code == 0, out
    created = json.loads(out)
    assert names(created, "created") == ["Stream payments", "Deployment fraud", "Deployment loans"]
    assert created["changed"] == created["unchanged"] == created["pruned"] == []
    live = asyncio.run(live_deployments(pipeline.settings))
    assert sorted(live) == ["fraud", "loans"]
    [rule] = [v.rule for v in live["fraud"].variants if v.rule is not None]
    assert rule.value == ["NO", "SE"], "YAML 1.1 would have read NO as false"
    published = _records_on_topics_of_record(pipeline)

    # change a file and delete another: the dry run shows the diff and publishes nothing; the
    # deployment no spec names stays until --prune. No spec left names an MLflow model, so the
    # following applies neither import MLflow's client nor ask MLflow.
    changed = FRAUD + (
        "  - {name: canary, role: canary, model_uri: 'online:fraud-hat', weight: 0.25}\n"
    )
    (specs / "fraud.yaml").write_text(changed)
    (specs / "loans.yml").unlink()
    code, out = apply("--dry-run")
    assert code == 0, out
    lines = out.splitlines()
    assert "would change Deployment fraud" in lines
    assert '  +      "model_uri": "online:fraud-hat",' in lines
    assert "unchanged Stream payments" in lines
    assert lines[-2:] == [
        "not in the specs, kept: Deployment loans (--prune deletes them)",
        "dry run, nothing published: 1 to change, 1 unchanged",
    ]
    assert _records_on_topics_of_record(pipeline) == published
    assert asyncio.run(live_deployments(pipeline.settings)) == live

    # apply again: only the changed deployment is published
    code, out = apply()
    assert code == 0, out
    assert out.splitlines()[-1] == "applied: 1 changed, 1 unchanged"
    assert _records_on_topics_of_record(pipeline) == published + 1
    now = asyncio.run(live_deployments(pipeline.settings))
    assert [(v.name, v.weight) for v in now["fraud"].variants if v.role == "canary"] == [
        ("canary", 0.25)
    ]
    assert now["loans"] == live["loans"]

    # and once more: a no-op that publishes nothing and says so
    code, out = apply()
    assert code == 0, out
    assert out.splitlines()[-1] == "nothing to apply: 2 unchanged; nothing published"
    assert _records_on_topics_of_record(pipeline) == published + 1

    # --prune deletes the deployment whose file was deleted, once confirmed: without a terminal
    # to ask on, it shows what it would delete and refuses unless given --yes
    asked = pipeline.driftline("apply", "-f", str(specs), "--prune")
    assert (asked.returncode, asked.stderr) == (
        2,
        "error: prune (delete) deployments loans? needs confirmation: pass --yes "
        "(no terminal to ask on)\n",
    )
    assert "would prune Deployment loans" in asked.stdout.splitlines()
    assert "loans" in asyncio.run(live_deployments(pipeline.settings))
    code, out = apply("--prune", "--yes", "--json")
    assert code == 0, out
    pruned = json.loads(out)
    assert names(pruned, "pruned") == ["Deployment loans"]
    assert names(pruned, "unchanged") == ["Stream payments", "Deployment fraud"]
    assert pruned["unmanaged"] == []
    assert sorted(asyncio.run(live_deployments(pipeline.settings))) == ["fraud"]

    # a spec MLflow refuses: one line naming its file and document, nothing published
    (specs / "fraud.yaml").write_text(changed.replace("online:fraud-lr", "models:/nosuch@champion"))
    published = _records_on_topics_of_record(pipeline)
    code, out = apply()
    assert code == 2
    [line] = out.splitlines()
    assert line.startswith(
        f"error: {specs / 'fraud.yaml'} document 1: unknown model: models:/nosuch@champion: "
    )
    assert _records_on_topics_of_record(pipeline) == published
