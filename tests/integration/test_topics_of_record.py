"""Readers of the topics of record on the real broker: one undecodable record is skipped with a
warning naming where it lies, and every other record, and the last good one of its key, is
still read (it used to make every reader of live deployments raise)."""

from __future__ import annotations

import asyncio
import json

import pytest

from shared.admin import live_deployments, publish, read_checked
from shared.events import Deployment, FeatureSpec, StreamSchema, Variant, encode
from shared.records import check_declaration
from shared.topics import DEPLOYMENTS, STREAMS
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.integration


def _deployment(name: str, model: str) -> Deployment:
    champion = Variant(name="champion", role="champion", model_uri=f"models:/{model}@champion")
    return Deployment(name=name, stream="payments", variants=[champion])


def test_an_undecodable_deployment_is_skipped_and_its_last_good_one_kept(
    pipeline: Pipeline,
) -> None:
    fraud, loans = _deployment("fraud", "fraud-model"), _deployment("loans", "loans-model")
    records = [
        ("fraud", encode(fraud)),
        ("loans", encode(loans)),
        ("fraud", b'{"name": "fraud", "stream": '),
        ("ghost", b"\xff not json"),
    ]

    async def write_then_read() -> dict[str, Deployment]:
        for key, value in records:
            await publish(pipeline.settings, DEPLOYMENTS, key, value)
        return await live_deployments(pipeline.settings)

    assert asyncio.run(write_then_read()) == {"fraud": fraud, "loans": loans}

    listed = pipeline.driftline("deployments", "list")
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    assert sorted(names) == ["fraud", "loans"]
    skipped = [json.loads(line) for line in listed.stderr.splitlines()]
    topic = pipeline.topic(DEPLOYMENTS)
    assert sorted((s["event"], s["key"]) for s in skipped) == [
        ("record skipped", "b'fraud'"),
        ("record skipped", "b'ghost'"),
    ]
    for entry in skipped:
        assert (entry["topic"], entry["level"]) == (topic, "warning")
        assert isinstance(entry["partition"], int) and isinstance(entry["offset"], int)
        assert entry["reason"].startswith(f"bad event on {topic}: not valid JSON")


def test_an_undecodable_stream_declaration_does_not_hide_the_others(pipeline: Pipeline) -> None:
    payments = StreamSchema(name="payments", features=[FeatureSpec(name="amount")])

    async def write_then_read() -> dict[str, StreamSchema]:
        await publish(pipeline.settings, STREAMS, "payments", encode(payments))
        await publish(pipeline.settings, STREAMS, "broken", b'{"name": "broken", "features": 1}')
        return await read_checked(pipeline.settings, STREAMS, check_declaration)

    assert asyncio.run(write_then_read()) == {"payments": payments}
    listed = pipeline.driftline("streams", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["payments", "amount:numeric"]
