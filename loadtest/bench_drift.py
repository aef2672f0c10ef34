"""Drain rate of one drift worker on a real broker: a backlog of labeled predictions (one
deployment, one model version: concept drift with the default HDDM_A and the error-rate
windows) and of feature events (two numeric features each: data drift with ADWIN through the
fan-out topic) is written
first, then the worker starts and the time until its consumer group has committed every input
is measured. Rates count detector values: one per labeled event, two per feature event.

The broker must answer at --bootstrap (e.g. ``driftline kafka start --port 19192``); each run
uses fresh topics under a random prefix.

    .venv/bin/python -m loadtest.bench_drift --bootstrap 127.0.0.1:19192 --events 6000
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from shared import kafka_clients
from shared.events import FeatureEvent, LabeledPrediction, VariantOutput
from shared.kafka_clients import KafkaAccess
from shared.topics import FEATURES, PREDICTIONS_LABELED
from tests.support.kafka import produce
from tests.support.pipeline import Pipeline

ENTITIES = 50


def labeled_event(i: int, t0: float, rng: random.Random) -> LabeledPrediction:
    """A labeled prediction of deployment ``d``, wrong 10 % of the time."""
    label = rng.random() < 0.5
    outcome = VariantOutput(
        variant="champion",
        role="champion",
        served=True,
        model_name="m",
        model_version="1",
        output=label != (rng.random() < 0.1),
    )
    return LabeledPrediction(
        event_id=f"e{i}",
        entity_id=f"u{i % ENTITIES}",
        stream="s",
        deployment="d",
        features={},
        outcomes=[outcome],
        label=label,
        event_time=t0 + i,
        label_time=t0 + i,
        feedback_delay_s=0.0,
    )


def feature_event(i: int, t0: float, rng: random.Random) -> FeatureEvent:
    """A feature event of stream ``s`` with two stable numeric features."""
    return FeatureEvent(
        event_id=f"f{i}",
        stream="s",
        entity_id=f"u{i % ENTITIES}",
        event_time=t0 + i,
        features={"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)},
    )


async def committed(bootstrap: str, group: str) -> dict[str, int]:
    """Offsets the group has committed, summed per topic."""
    admin = kafka_clients.admin_client(KafkaAccess(bootstrap))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    totals: dict[str, int] = {}
    for partition, meta in offsets.items():
        totals[partition.topic] = totals.get(partition.topic, 0) + max(meta.offset, 0)
    return totals


async def drain(pipe: Pipeline, labeled: int, features: int) -> tuple[float, float]:
    """(start-up seconds, drain seconds after start-up) of one worker on the backlog."""
    rng = random.Random(1)
    t0 = time.time() - 3600
    labeled_topic, features_topic = pipe.topic(PREDICTIONS_LABELED), pipe.topic(FEATURES)
    await produce(
        pipe.bootstrap, labeled_topic, [("d", labeled_event(i, t0, rng)) for i in range(labeled)]
    )
    await produce(
        pipe.bootstrap,
        features_topic,
        [(f"u{i % ENTITIES}", feature_event(i, t0, rng)) for i in range(features)],
    )
    wanted = {
        labeled_topic: labeled,
        features_topic: features,
        f"{pipe.prefix}driftline-drift-feature-values": 2 * features,
    }
    began = time.monotonic()
    pipe.start("drift", DRIFTLINE_DRIFT_COOLDOWN_S="0")
    started = time.monotonic()
    while True:
        done = await committed(pipe.bootstrap, f"{pipe.prefix}driftline-drift")
        if all(done.get(topic, 0) >= n for topic, n in wanted.items()):
            return started - began, time.monotonic() - started
        await asyncio.sleep(0.2)


def main(
    bootstrap: Annotated[str, typer.Option(help="A running broker.")] = "127.0.0.1:19192",
    events: Annotated[int, typer.Option(help="Labeled events, and as many feature events.")] = 6000,
    only: Annotated[str, typer.Option(help="both, labeled or features")] = "both",
) -> None:
    """Print the worker's start-up time and drain rate."""
    labeled = events if only in ("both", "labeled") else 0
    features = events if only in ("both", "features") else 0
    with tempfile.TemporaryDirectory() as workdir:
        pipe = Pipeline(bootstrap, Path(workdir))
        try:
            startup, seconds = asyncio.run(drain(pipe, labeled, features))
        finally:
            pipe.close()
    values = labeled + 2 * features
    typer.echo(
        f"{labeled} labeled + {features} feature events ({values} detector values): "
        f"start-up {startup:.1f} s, drained in {seconds:.1f} s, {values / seconds:.0f} values/s"
    )


if __name__ == "__main__":
    typer.run(main)
