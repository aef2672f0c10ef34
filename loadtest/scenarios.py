"""The benchmark scenarios: two references, then the pipeline in the shapes the issue names.

Every scenario runs on the bench broker in its own `Run` and returns JSON-ready figures. A
pipeline scenario first measures its maximum sustained rate (a backlog sent as fast as the
producer allows, once every worker is ready) and then its end-to-end latency at half that rate.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.generator import FeedbackPlan, generate
from loadtest.harness import Phase, Run, create_plain_topics, load_average, run_phase
from loadtest.measure import (
    event_latencies_ms,
    latency_summary,
    read_records,
    sustained_rate,
    topic_end,
    wait_for_records,
)
from loadtest.workload import MODEL_ID, Workload
from shared.topics import (
    ALERTS,
    EVENTS_RAW,
    FEATURES,
    FEEDBACK,
    MODEL_SNAPSHOTS,
    PREDICTIONS,
    PREDICTIONS_LABELED,
)


@dataclass(frozen=True)
class Sizes:
    """How much each scenario sends; `QUICK` runs every scenario tiny."""

    relay_events: int = 100_000
    forward_events: int = 30_000
    backlog: int = 10_000
    """Events of each maximum-rate phase."""
    loop_events: int = 3_000
    """Events of the full loop's maximum-rate phase (every event costs all five services)."""
    latency_seconds: float = 10.0
    """Length of each fixed-rate (latency) phase."""
    deployments: tuple[int, ...] = (1, 100, 1_000, 10_000)
    entities: int = 10_000
    """Entities, each with its own online model, in the per-entity scenario."""
    partitions: int = 4


QUICK = Sizes(
    relay_events=2_000,
    forward_events=500,
    backlog=300,
    loop_events=200,
    latency_seconds=2.0,
    deployments=(1, 10),
    entities=20,
)


@dataclass
class Context:
    """What every scenario needs: the broker, a scratch folder, the sizes."""

    bootstrap: str
    workdir: Path
    sizes: Sizes

    def run(self, name: str) -> Run:
        """A fresh private Driftline for one scenario."""
        return Run(self.bootstrap, self.workdir, name, self.sizes.partitions)


def relay_ceiling(ctx: Context) -> dict[str, Any]:
    """Plain aiokafka consume → transform → produce, started after its backlog is written."""
    run = ctx.run("relay")
    workload = Workload(run=run.prefix)
    source, target = run.prefix + "source", run.prefix + "target"
    count = ctx.sizes.relay_events
    try:
        asyncio.run(create_plain_topics(ctx.bootstrap, [source, target], ctx.sizes.partitions))
        asyncio.run(generate(ctx.bootstrap, source, workload.raw_event, count, linger_ms=5))
        load = load_average()
        cpu_before = _children_cpu_s()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtest.relay",
                *("--bootstrap", ctx.bootstrap, "--source", source, "--target", target),
                *("--count", str(count), "--group", run.prefix + "relay"),
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )
        cpu_s = round(_children_cpu_s() - cpu_before, 2)
        records = asyncio.run(read_records(ctx.bootstrap, target))
        return {
            "name": "relay",
            "load_average": load,
            "events": count,
            "outputs": len(records),
            "rate": sustained_rate([r.timestamp_ms for r in records]),
            "cpu_s": {"relay-0": cpu_s},
        }
    finally:
        run.close()


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def forward_ceiling(ctx: Context) -> dict[str, Any]:
    """A bare Faust agent forwarding each event unchanged, one worker: the framework's rate
    and one hop's latency."""
    return _forward_chain(ctx, hops=1)


def forward_chain(ctx: Context) -> dict[str, Any]:
    """Two bare Faust forwarders in a row, one worker each: the framework's floor for a path of
    two services (ingestion, router) on this machine."""
    return _forward_chain(ctx, hops=2)


def _forward_chain(ctx: Context, hops: int) -> dict[str, Any]:
    run = ctx.run("forward" if hops == 1 else f"forward-x{hops}")
    workload = Workload(run=run.prefix)
    topics = [f"{run.prefix}hop-{i}" for i in range(hops + 1)]
    names = ["forward"] + [f"forward-{i}" for i in range(1, hops)]
    try:
        asyncio.run(create_plain_topics(ctx.bootstrap, topics, ctx.sizes.partitions))
        for name, source, target in zip(names, topics, topics[1:], strict=False):
            run.spawn(
                "forward",
                argv=["-m", "loadtest.forward_app"],
                DRIFTLINE_FORWARD_NAME=name,
                DRIFTLINE_FORWARD_SOURCE=source,
                DRIFTLINE_FORWARD_TARGET=target,
            )
        run.wait_ready()
        phase = Phase(
            topics[0],
            workload.raw_event,
            ctx.sizes.forward_events,
            topics[-1],
            groups={run.group(name): [source] for name, source in zip(names, topics, strict=False)},
        )
        return {
            "name": "forward" if hops == 1 else f"bare Faust forward, {hops} in a chain",
            "workers": {"forward": hops},
            "startup_s": run.startup_s,
            **_max_then_latency(ctx, run, phase),
        }
    finally:
        run.close()


def _max_then_latency(ctx: Context, run: Run, phase: Phase) -> dict[str, Any]:
    """The maximum sustained rate, then latency at half of it with fresh events."""
    fastest = run_phase(run, phase, None)
    rate = (fastest["rate"] or 10.0) / 2
    count = max(10, int(rate * ctx.sizes.latency_seconds))
    steady = Phase(
        phase.input_topic,
        phase.make,
        count,
        phase.output_topic,
        phase.outputs_per_event,
        phase.groups,
        phase.feedback,
    )
    return {"max": fastest, "half_rate": run_phase(run, steady, rate, first=phase.count)}


def router_deployments(ctx: Context, n_deployments: int, workers: int = 1) -> dict[str, Any]:
    """The router alone (``features`` in) with `n_deployments` deployments on as many streams,
    each with its own online model; start-up reads every deployment and snapshot."""
    run = ctx.run(f"router-{n_deployments}-x{workers}")
    workload = Workload(run=run.prefix, streams=n_deployments)
    models = {f"deployment-{i}": f"{MODEL_ID}-{i}" for i in range(n_deployments)}
    try:
        snapshots = run.publish_setup(workload, models, per_entity=False)
        run.start_services({"router": workers}, n_deployments, n_deployments, snapshots)
        idle = run.usage()
        phase = Phase(
            run.topic(FEATURES),
            workload.feature_event,
            ctx.sizes.backlog,
            run.topic(PREDICTIONS),
            groups={run.group("router"): [run.topic(FEATURES)]},
        )
        return {
            "name": f"router, {n_deployments} deployments"
            + (f", {workers} workers" * (workers > 1)),
            "deployments": n_deployments,
            "workers": {"router": workers},
            "startup_s": run.startup_s,
            "ready_s": run.ready_s,
            "idle_rss_mb": {k: u.rss_mb for k, u in idle.items()},
            **_max_then_latency(ctx, run, phase),
        }
    finally:
        run.close()


def router_per_entity(ctx: Context) -> dict[str, Any]:
    """The router alone with one deployment whose online model is trained per entity: every
    entity has its own snapshot, so each prediction asks a different model."""
    run = ctx.run("per-entity")
    workload = Workload(run=run.prefix, entities=ctx.sizes.entities)
    try:
        snapshots = run.publish_setup(workload, {"deployment-0": MODEL_ID}, True, True)
        run.start_services({"router": 1}, 1, 1, snapshots)
        idle = run.usage()
        phase = Phase(
            run.topic(FEATURES),
            workload.feature_event,
            max(ctx.sizes.backlog, ctx.sizes.entities),
            run.topic(PREDICTIONS),
            groups={run.group("router"): [run.topic(FEATURES)]},
        )
        return {
            "name": f"router, per-entity models, {ctx.sizes.entities} entities",
            "entities": ctx.sizes.entities,
            "workers": {"router": 1},
            "startup_s": run.startup_s,
            "ready_s": run.ready_s,
            "idle_rss_mb": {k: u.rss_mb for k, u in idle.items()},
            **_max_then_latency(ctx, run, phase),
        }
    finally:
        run.close()


def ingestion_alone(ctx: Context) -> dict[str, Any]:
    """Ingestion alone: validation, dedup and one windowed aggregate per event."""
    run = ctx.run("ingestion")
    workload = Workload(run=run.prefix)
    try:
        run.publish_setup(workload, {"deployment-0": MODEL_ID}, per_entity=False)
        run.start_services({"ingestion": 1}, 1, 1, 1)
        phase = Phase(
            run.topic(EVENTS_RAW),
            workload.raw_event,
            ctx.sizes.backlog,
            run.topic(FEATURES),
            groups={run.group("ingestion"): [run.topic(EVENTS_RAW)]},
        )
        return {
            "name": "ingestion alone",
            "workers": {"ingestion": 1},
            "startup_s": run.startup_s,
            "ready_s": run.ready_s,
            **_max_then_latency(ctx, run, phase),
        }
    finally:
        run.close()


def prediction_path(ctx: Context, workers: int = 1) -> dict[str, Any]:
    """Ingestion and router: raw events in, predictions out."""
    run = ctx.run(f"path-x{workers}")
    workload = Workload(run=run.prefix)
    try:
        run.publish_setup(workload, {"deployment-0": MODEL_ID}, per_entity=False)
        run.start_services({"router": workers, "ingestion": workers}, 1, 1, 1)
        phase = Phase(
            run.topic(EVENTS_RAW),
            workload.raw_event,
            ctx.sizes.backlog,
            run.topic(PREDICTIONS),
            groups={
                run.group("ingestion"): [run.topic(EVENTS_RAW)],
                run.group("router"): [run.topic(FEATURES)],
            },
        )
        return {
            "name": "prediction path" + (f", {workers} workers per service" * (workers > 1)),
            "workers": {"ingestion": workers, "router": workers},
            "startup_s": run.startup_s,
            "ready_s": run.ready_s,
            **_max_then_latency(ctx, run, phase),
        }
    finally:
        run.close()


def full_loop(ctx: Context, per_entity: bool = False) -> dict[str, Any]:
    """All five services, a label for every event one second later: predictions, labeled
    predictions, model snapshots and drift detection all under load. With `per_entity`, the
    learner trains one model per entity (`Sizes.entities` of them), starting cold; the router
    answers with the shared model until an entity's own snapshot arrives."""
    entities = ctx.sizes.entities if per_entity else 1000
    run = ctx.run("full-loop-entities" if per_entity else "full-loop")
    workload = Workload(run=run.prefix, entities=entities)
    services = ("router", "feedback", "learner", "drift", "ingestion")
    try:
        run.publish_setup(workload, {"deployment-0": MODEL_ID}, per_entity)
        run.start_services(dict.fromkeys(services, 1), 1, 1, 1)
        phase = Phase(
            run.topic(EVENTS_RAW),
            workload.raw_event,
            ctx.sizes.loop_events,
            run.topic(PREDICTIONS),
            groups={
                run.group("ingestion"): [run.topic(EVENTS_RAW)],
                run.group("router"): [run.topic(FEATURES)],
                run.group("feedback"): [run.topic(PREDICTIONS), run.topic(FEEDBACK)],
                run.group("learner"): [run.topic(PREDICTIONS_LABELED)],
                run.group("drift"): [run.topic(FEATURES), run.topic(PREDICTIONS_LABELED)],
            },
            feedback=FeedbackPlan(run.topic(FEEDBACK), workload.feedback, delay_s=1.0),
        )
        began_ms = time.time() * 1000
        figures = _max_then_latency(ctx, run, phase)
        labeled_expected = sum(figures[p]["generator"]["feedback_sent"] for p in figures)
        asyncio.run(
            wait_for_records(
                run.bootstrap, run.topic(PREDICTIONS_LABELED), labeled_expected, timeout=120
            )
        )
        labeled = asyncio.run(
            read_records(run.bootstrap, run.topic(PREDICTIONS_LABELED), since_ms=began_ms)
        )
        return {
            "name": "full loop (5 services, every event labeled 1 s later)"
            + (f", per-entity models, {entities} entities" * per_entity),
            "entities": entities,
            "workers": dict.fromkeys(services, 1),
            "startup_s": run.startup_s,
            "ready_s": run.ready_s,
            **figures,
            "labeled": {
                "expected": labeled_expected,
                "outputs": len(labeled),
                "rate": sustained_rate([r.timestamp_ms for r in labeled]),
                "latency_ms_from_event": latency_summary(event_latencies_ms(labeled))
                if labeled
                else None,
            },
            "snapshots": asyncio.run(topic_end(run.bootstrap, run.topic(MODEL_SNAPSHOTS))),
            "alerts": asyncio.run(topic_end(run.bootstrap, run.topic(ALERTS))),
            "rss_mb": {k: u.rss_mb for k, u in run.usage().items()},
        }
    finally:
        run.close()
