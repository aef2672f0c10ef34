"""The load generator and measurer, tiny, against a real prediction path (ingestion + router):
every event sent is measured once and the figures are consistent. No timing thresholds."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from loadtest.generator import generate
from loadtest.harness import publish_all
from loadtest.measure import (
    LagSampler,
    event_latencies_ms,
    lag_summary,
    latency_summary,
    read_records,
    sustained_rate,
    wait_for_records,
    worker_latency_ms,
)
from loadtest.workload import MODEL_ID, Workload, setup_records
from shared.topics import EVENTS_RAW, FEATURES, PREDICTIONS
from tests.support.pipeline import Pipeline
from tests.support.workers import Worker

pytestmark = pytest.mark.integration

EVENTS = 200


async def test_quick_load_run_measures_every_event(pipeline: Pipeline) -> None:
    workload = Workload(run=pipeline.prefix, entities=20, features=4, payload_bytes=300)
    records = setup_records(
        workload, {"bench-deployment": MODEL_ID}, pipeline.settings.snapshot_keys
    )
    for topic, values in records.items():
        await publish_all(pipeline.bootstrap, pipeline.topic(topic), values)
    workers = [
        Worker(service, pipeline.env, pipeline.workdir / f"{service}.log")
        for service in ("router", "ingestion")
    ]
    pipeline.workers += workers
    for worker in workers:
        worker.spawn()
    for worker in workers:
        worker.wait_ready()
    router_group = f"{pipeline.prefix}driftline-router"
    await wait_for_records(pipeline.bootstrap, f"{router_group}-model_snapshots-changelog", 1, 60)
    await wait_for_records(pipeline.bootstrap, f"{router_group}-deployments-changelog", 1, 60)
    ingestion_group = f"{pipeline.prefix}driftline-ingestion"
    await wait_for_records(
        pipeline.bootstrap, f"{ingestion_group}-stream_to_schema-changelog", 1, 60
    )
    groups = {
        ingestion_group: [pipeline.topic(EVENTS_RAW)],
        router_group: [pipeline.topic(FEATURES)],
    }
    sampler = LagSampler(pipeline.bootstrap, groups, 0.5)
    sampling = asyncio.create_task(sampler.run(max_seconds=90))

    router_metrics = workers[0].metrics()
    sent = await generate(
        pipeline.bootstrap, pipeline.topic(EVENTS_RAW), workload.raw_event, EVENTS, rate=200.0
    )
    held = await wait_for_records(pipeline.bootstrap, pipeline.topic(PREDICTIONS), EVENTS, 60)
    own_view = worker_latency_ms(router_metrics, workers[0].metrics())
    sampler.stop()
    await sampling
    predictions = await read_records(pipeline.bootstrap, pipeline.topic(PREDICTIONS))

    assert sent.sent == EVENTS and held == EVENTS
    ids = {orjson.loads(r.value)["event_id"] for r in predictions}
    assert ids == {workload.event_id(i) for i in range(EVENTS)}
    latency = latency_summary(event_latencies_ms(predictions))
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    for histogram in ("processing", "end_to_end"):  # p99 is None past the last bucket's bound
        p50, p99 = own_view[histogram]["p50"], own_view[histogram]["p99"]
        assert p50 is not None and (p99 is None or p50 <= p99), (histogram, own_view)
    rate = sustained_rate([r.timestamp_ms for r in predictions])
    assert rate is not None and rate > 0
    lags = lag_summary(sampler.samples)
    assert set(lags) == set(groups)
    assert all(value >= 0 for lag in lags.values() for _, value in lag["series"])
