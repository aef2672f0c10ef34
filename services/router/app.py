"""The router worker: ``features`` in, ``predictions`` (keyed by event id) out.

Deployments and model snapshots come from compacted topics: the worker that owns a partition
checks each record and stores it in a global table, which every replica reads through the table's
changelog, at start (before it reports healthy) and live afterwards, so a new deployment or
snapshot applies without a restart. A bad deployment or an unsigned or badly signed snapshot is
dead-lettered, an older snapshot ignored; neither is stored. A snapshot read back from the table's
changelog is verified again (`SnapshotStore.apply`): one written there directly is refused and the
previous one keeps serving.
"""

from __future__ import annotations

from collections.abc import Sequence

import faust
from faust.types import EventT

from shared import metrics
from shared import settings as cfg
from shared.app import (
    DeadLetters,
    DriftlineApp,
    consume,
    consume_batches,
    create_app,
    declare_topic,
    send_records,
)
from shared.backends import ModelBackend, SnapshotStore, model_cache
from shared.errors import DriftlineError, ModelError
from shared.events import FeatureEvent, decode, encode
from shared.global_tables import deployment_table, watched_global_table
from shared.logging import get_logger
from shared.routing import (
    DeploymentIndex,
    VariantsFailedError,
    answer_calls,
    count_answers,
    plan_calls,
)
from shared.topics import FEATURES, MODEL_SNAPSHOTS, PREDICTIONS

SERVICE = "router"
log = get_logger(__name__)


def build(common: cfg.DriftlineSettings, own: cfg.RouterSettings) -> DriftlineApp:
    """The router Faust app: its agent, the deployments and snapshots tables, the refresh timer."""
    app = create_app(SERVICE, common, own)
    features_topic = declare_topic(app, FEATURES, common)
    predictions_topic = declare_topic(app, PREDICTIONS, common)
    snapshots_topic = declare_topic(app, MODEL_SNAPSHOTS, common)
    dead_letters = DeadLetters(app, SERVICE, common)
    index = DeploymentIndex.empty()
    deployment_table(app, common, dead_letters, on_change=index.apply)
    snapshots = SnapshotStore(common.snapshot_keys, own.online_model_cache_size)
    snapshot_records = watched_global_table(
        app, snapshots.table, MODEL_SNAPSHOTS.partitions(common), snapshots.apply
    )
    models = model_cache(own, common.mlflow_tracking_uri, snapshots)

    async def store_snapshot(event: EventT) -> None:
        message = event.message
        try:
            snapshot = snapshots.accept(message.value, message.topic)
        except DriftlineError as exc:
            metrics.REFUSED_SNAPSHOTS.labels(exc.code).inc()
            raise
        if snapshot is not None:
            snapshot_records[snapshot.model_id.encode()] = message.value

    async def backend(uri: str) -> ModelBackend | ModelError:
        try:
            return await models.get(uri)
        except ModelError as exc:
            return exc

    async def route(events: Sequence[EventT]) -> list[tuple[EventT, DriftlineError]]:
        """Decode, route, ask each model once and send the predictions of a micro-batch."""
        reasons: dict[int, DriftlineError] = {}
        decoded: list[tuple[int, FeatureEvent]] = []
        for position, event in enumerate(events):
            try:
                decoded.append(
                    (position, decode(FeatureEvent, event.message.value, event.message.topic))
                )
            except DriftlineError as exc:
                reasons[position] = exc
        calls, unrouted = plan_calls(decoded, index)
        reasons.update(unrouted)
        backends = {uri: await backend(uri) for uri in {c.variant.model_uri for c in calls}}
        predictions, failures = await answer_calls(calls, backends)
        await send_records(
            predictions_topic,
            SERVICE,
            [(p.event_id.encode(), encode(p)) for p in predictions],
        )
        metrics.observe_end_to_end(SERVICE, (p.event_time.timestamp() for p in predictions))
        count_answers(predictions, failures)
        for position, failed in failures.items():
            reasons[position] = VariantsFailedError(failed)
        return [(events[position], reasons[position]) for position in sorted(reasons)]

    @app.agent(snapshots_topic, name="store_model_snapshot")
    async def store_model_snapshot(stream: faust.Stream) -> None:
        await consume(stream, SERVICE, dead_letters, store_snapshot)

    @app.agent(features_topic, name="route_feature_event")
    async def route_feature_event(stream: faust.Stream) -> None:
        await consume_batches(
            stream, SERVICE, dead_letters, route, own.batch_max_events, own.batch_within_s
        )

    @app.timer(own.model_refresh_seconds, name="refresh_models")
    async def refresh_models() -> None:
        """Unload models no deployment uses; reload those whose MLflow alias moved."""
        await models.refresh(index.model_uris())

    return app
