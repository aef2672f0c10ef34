"""The load test's pure parts: workload records, statistics, the report."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from loadtest.measure import (
    LagSample,
    OutputRecord,
    bucket_quantile,
    event_latencies_ms,
    histogram_buckets,
    lag_summary,
    latency_summary,
    percentile,
    sustained_rate,
    worker_latency_ms,
)
from loadtest.relay import transform
from loadtest.report import BLOCK_END, BLOCK_START, render, table, write_block
from loadtest.workload import MODEL_ID, Workload, setup_records
from shared.events import Deployment, FeatureEvent, ModelSnapshot, RawEvent, StreamSchema
from shared.signing import KeyRing, verify_snapshot
from shared.topics import DEPLOYMENTS, MODEL_SNAPSHOTS, STREAMS

KEY = KeyRing(SecretStr("bench-key"))


def test_raw_events_are_valid_padded_and_keyed_by_entity() -> None:
    workload = Workload(run="r", entities=3, features=5, payload_bytes=400)
    key, value = workload.raw_event(4, event_time=1_700_000_000.0)
    raw = RawEvent.model_validate_json(value)
    assert key == b"entity-1" == raw.entity_id.encode()
    assert raw.event_id == "r-4" and len(value) >= 400
    assert {f"f{j}" for j in range(5)} <= set(raw.data)
    assert workload.schema(raw.stream).name == raw.stream


def test_feature_events_spread_over_streams_and_labels_are_deterministic() -> None:
    workload = Workload(run="r", streams=3)
    streams = {
        FeatureEvent.model_validate_json(workload.feature_event(i)[1]).stream for i in range(6)
    }
    assert streams == set(workload.stream_names()) == {"bench-0", "bench-1", "bench-2"}
    assert [workload.label(i) for i in range(50)] == [workload.label(i) for i in range(50)]
    assert len({workload.label(i) for i in range(50)}) == 2
    assert orjson.loads(workload.feedback(7)[1])["event_id"] == "r-7"


def test_setup_records_declare_deploy_and_sign_every_model() -> None:
    workload = Workload(run="r", streams=2, entities=4)
    records = setup_records(
        workload, {"d0": "m0", "d1": "m1"}, KEY, per_entity=True, entity_snapshots=True
    )
    assert [StreamSchema.model_validate_json(v).name for _, v in records[STREAMS]] == [
        "bench-0",
        "bench-1",
    ]
    deployments = [Deployment.model_validate_json(v) for _, v in records[DEPLOYMENTS]]
    assert [(d.name, d.stream) for d in deployments] == [("d0", "bench-0"), ("d1", "bench-1")]
    assert deployments[0].variants[0].model_uri == "online:m0"
    assert deployments[0].online_models[0].per_entity
    snapshots = [ModelSnapshot.model_validate_json(v) for _, v in records[MODEL_SNAPSHOTS]]
    assert [s.model_id for s in snapshots] == [
        "m0",
        "m1",
        *(f"{MODEL_ID}/entity-{i}" for i in range(4)),
    ]
    assert all(verify_snapshot(s, KEY) for s in snapshots)


def test_percentiles_use_the_nearest_rank() -> None:
    values = list(range(1, 101))
    assert [percentile(values, q) for q in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_summary_is_ordered() -> None:
    summary = latency_summary([5.0, 1.0, 3.0, 100.0, 2.0])
    assert summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"] == 100.0
    assert summary["mean"] == 22.2


def test_sustained_rate_skips_start_up_and_stragglers() -> None:
    steady = list(range(0, 1000, 10))
    assert sustained_rate(steady) == 100.0
    assert sustained_rate([0, 5000, *steady[10:90], 99_999]) == pytest.approx(100.0, rel=0.05)
    assert sustained_rate([0, 1000]) == 1.0
    assert sustained_rate([3]) is None and sustained_rate([4, 4]) is None


def test_event_latency_is_record_time_minus_event_time() -> None:
    records = [
        OutputRecord(1_700_000_000_250, orjson.dumps({"event_time": "2023-11-14T22:13:20Z"})),
        OutputRecord(1_700_000_000_100, orjson.dumps({"event_time": 1_700_000_000.05})),
    ]
    assert event_latencies_ms(records) == pytest.approx([250.0, 50.0])


def test_lag_summary_per_group() -> None:
    samples = [LagSample(0.0, "a", 10), LagSample(0.0, "b", 0), LagSample(1.0, "a", 3)]
    summary = lag_summary(samples)
    assert summary["a"] == {"max": 10, "last": 3, "series": [[0.0, 10], [1.0, 3]]}
    assert summary["b"]["max"] == 0


def test_relay_transform_adds_a_field() -> None:
    document = orjson.loads(transform(b'{"event_id": "x"}'))
    assert document["event_id"] == "x" and document["relayed_at"] > 0


def _phase(rate: float, cpu: float) -> dict:
    return {
        "load_average": 0.5,
        "generator": {"sent": 1000, "feedback_sent": 0},
        "complete": True,
        "rate": rate,
        "cpu_s": {"router-0": cpu},
        "rss_mb": {"router-0": 300.0},
        "latency_ms": {"p50": 5.0, "p95": 9.0, "p99": 12.0, "max": 20.0, "mean": 6.0},
        "lag": {"g.driftline-router": {"max": 40, "last": 0, "series": [[0.0, 40]]}},
    }


RESULTS = [
    {"name": "relay", "load_average": 0.4, "events": 1000, "rate": 100_000.0,
     "cpu_s": {"relay-0": 0.01}},
    {"name": "forward", "max": _phase(10_000.0, 0.1), "startup_s": {"forward-0": 3.0}},
    {"name": "router, 1 deployments", "max": _phase(5_000.0, 0.5),
     "half_rate": _phase(2_500.0, 0.4), "ready_s": 9.0},
    {"name": "broken", "error": "AssertionError: no"},
]  # fmt: skip


def test_table_gives_ratios_to_both_references() -> None:
    rows = table(RESULTS).splitlines()
    router = next(r for r in rows if r.startswith("| router"))
    cells = [c.strip() for c in router.split("|")[1:-1]]
    assert cells[1:4] == ["5,000", "0.050", "0.50"]
    assert cells[4] == "router-0 2,000"
    assert cells[5] == "5.0 / 9.0 / 12.0 / 20.0"
    assert any("failed: AssertionError" in r for r in rows)


def test_write_block_keeps_the_hand_written_text(tmp_path: Path) -> None:
    page = tmp_path / "bench.md"
    page.write_text(f"# Title\n\nintro\n\n{BLOCK_START}\nold\n{BLOCK_END}\n\nfindings\n")
    meta = {
        "started": "2026-01-01T00:00:00+00:00",
        "mode": "full",
        "seconds": 60.0,
        "machine": {"cpu": "cpu", "cores": 2, "memory_gb": 8, "platform": "linux"},
        "load_average_start": 0.3,
        "versions": {"faust-streaming": "0.15.3"},
        "sizes": {"backlog": 10},
    }
    write_block(page, render(meta, RESULTS))
    text = page.read_text()
    assert text.startswith("# Title\n\nintro\n\n" + BLOCK_START)
    assert text.endswith(BLOCK_END + "\n\nfindings\n")
    assert "old" not in text and "router, 1 deployments" in text and "highest lag" in text


def _exposition(counts: list[int]) -> str:
    """A worker's /metrics text with `counts` cumulative observations per end-to-end bucket."""
    bounds = ["0.01", "0.1", "1.0", "+Inf"]
    lines = [
        f'driftline_end_to_end_seconds_bucket{{le="{b}",service="router"}} {c}'
        for b, c in zip(bounds, counts, strict=True)
    ]
    return "# TYPE driftline_end_to_end_seconds histogram\n" + "\n".join(lines) + "\n"


def test_worker_latency_comes_from_the_buckets_observed_between_two_readings() -> None:
    before, after = _exposition([10, 10, 10, 10]), _exposition([10, 60, 109, 110])
    assert histogram_buckets(after, "driftline_end_to_end_seconds") == {
        0.01: 10, 0.1: 60, 1.0: 109, float("inf"): 110
    }  # fmt: skip
    latency = worker_latency_ms(before, after)
    assert latency["end_to_end"] == {"p50": 100.0, "p99": 1000.0}, "the 10 before do not count"
    assert latency["processing"] == {"p50": None, "p99": None}, "nothing observed"
    start = histogram_buckets(before, "driftline_end_to_end_seconds")
    end = histogram_buckets(after, "driftline_end_to_end_seconds")
    assert bucket_quantile(start, end, 100) is None, "past the last finite bound"
    assert bucket_quantile(end, end, 50) is None
