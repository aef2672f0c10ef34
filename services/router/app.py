"""The router worker: ``features`` in, ``predictions`` (keyed by event id) out.

Deployments and model snapshots come from compacted topics into global tables: every replica
reads all of both, at start (before it reports healthy) and live afterwards, so a new deployment
or snapshot applies without a restart. Each record is checked as it arrives: a bad deployment or
an unsigned, badly signed or older snapshot is refused (and dead-lettered), never stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import faust
from faust.types import EventT, TopicT

from services.router.logic import (
    DeploymentIndex,
    VariantsFailedError,
    choose_variants,
    prediction_for,
)
from shared import metrics
from shared import settings as cfg
from shared.app import DeadLetters, consume, create_app, declare_topic, send_event
from shared.backends import ModelCache, SnapshotStore, backend_for
from shared.errors import DriftlineError, ModelError
from shared.events import FeatureEvent, decode
from shared.topics import DEPLOYMENTS, FEATURES, MODEL_SNAPSHOTS, PREDICTIONS

SERVICE = "router"


class CheckedGlobalTable(faust.GlobalTable):
    """A global table fed by a compacted topic that admits a record only if `admit` says so."""

    def __init__(self, *args: Any, admit: Callable[[EventT], bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.admit = admit

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        """Apply the admitted records of a batch read from the topic."""
        super().apply_changelog_batch([event for event in batch if self.admit(event)])


def _checked_table(
    app: faust.App, name: str, topic: TopicT, partitions: int, admit: Callable[[EventT], bool]
) -> CheckedGlobalTable:
    table = CheckedGlobalTable(
        app,
        name=name,
        admit=admit,
        beacon=app.tables.beacon,
        key_type=bytes,
        value_type=bytes,
        changelog_topic=topic,
        partitions=partitions,
        is_global=True,
        standby_buffer_size=1,
        recovery_buffer_size=1,
    )
    return app.tables.add(table)


def build(common: cfg.DriftlineSettings, own: cfg.RouterSettings) -> faust.App:
    """The router Faust app: its agent, the deployments and snapshots tables, the refresh timer."""
    app = create_app(SERVICE, common, own)
    features_topic = declare_topic(app, FEATURES, common)
    predictions_topic = declare_topic(app, PREDICTIONS, common)
    deployments_topic = declare_topic(app, DEPLOYMENTS, common)
    snapshots_topic = declare_topic(app, MODEL_SNAPSHOTS, common)
    dead_letters = DeadLetters(app, SERVICE, common)
    index = DeploymentIndex.empty()
    reports: set[asyncio.Task[None]] = set()

    def report(event: EventT, reason: str) -> None:
        """Dead-letter a refused table record (tables apply records synchronously)."""
        task = asyncio.ensure_future(dead_letters.send(event, reason))
        reports.add(task)
        task.add_done_callback(reports.discard)

    def admit_deployment(event: EventT) -> bool:
        message = event.message
        try:
            if message.key is None:
                raise DriftlineError("no key: a deployment record is keyed by its name")
            index.apply(message.key.decode(), message.value, message.topic)
        except DriftlineError as exc:
            report(event, str(exc))
            return False
        metrics.TABLE_ENTRIES.labels(SERVICE, "deployments").set(len(index))
        return True

    def admit_snapshot(event: EventT) -> bool:
        if event.message.value is None:
            return True
        try:
            return snapshots.accept(event.message.value, event.message.topic) is not None
        except DriftlineError as exc:
            metrics.REFUSED_SNAPSHOTS.labels(str(exc).split(":", 1)[0]).inc()
            report(event, str(exc))
            return False

    _checked_table(app, "deployments", deployments_topic, 1, admit_deployment)
    snapshot_table = _checked_table(
        app,
        "model_snapshots",
        snapshots_topic,
        MODEL_SNAPSHOTS.partitions(common),
        admit_snapshot,
    )
    snapshots = SnapshotStore(snapshot_table, common.snapshot_hmac_key, own.online_model_cache_size)
    models = ModelCache(
        lambda uri: backend_for(uri, common.mlflow_tracking_uri, snapshots),
        retry_seconds=own.model_refresh_seconds,
    )

    async def route(event: EventT) -> None:
        features = decode(FeatureEvent, event.message.value, event.message.topic)
        failures: list[tuple[str, str, ModelError]] = []
        for deployment in index.for_stream(features.stream):
            for variant, served in choose_variants(deployment, features):
                started = time.perf_counter()
                try:
                    backend = await models.get(variant.model_uri)
                    answer = backend.predict(features.features, features.entity_id)
                except ModelError as exc:
                    metrics.MODEL_FAILURES.labels(deployment.name, variant.name, exc.kind).inc()
                    failures.append((deployment.name, variant.name, exc))
                    continue
                latency_ms = (time.perf_counter() - started) * 1000
                prediction = prediction_for(
                    features, deployment, variant, served, answer, latency_ms
                )
                await send_event(predictions_topic, SERVICE, prediction.event_id, prediction)
                metrics.PREDICTIONS.labels(deployment.name, variant.name, str(served)).inc()
        if failures:
            raise VariantsFailedError(failures)

    @app.agent(features_topic, name="route_feature_event")
    async def route_feature_event(stream: faust.Stream) -> None:
        await consume(stream, SERVICE, dead_letters, route)

    @app.timer(own.model_refresh_seconds, name="refresh_models")
    async def refresh_models() -> None:
        """Unload models no deployment uses; reload those whose MLflow alias moved."""
        await models.refresh(index.model_uris())

    return app
