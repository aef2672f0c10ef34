"""The learner worker: ``predictions.labeled`` in (keyed by deployment), ``model-snapshots`` out.

The deployments come from ``deployments`` through the global table every service keeps
(`shared.global_tables.deployment_table`).
`route_labeled_prediction` looks up a labeled prediction's deployment there and re-keys it by
model, one training example per online model, through an internal topic: per-entity models
spread over its partitions.
`learn_from_examples` learns in batches: per model, one unpickle, predict-then-learn on each
example, one changelog write of the pickled learner (model, metrics, applied offsets) before
the batch's offsets are committed, and after the batch's snapshots are delivered. A crash
replays uncommitted examples, and the learner skips the ones it has already applied (by the
lineage of the labeled prediction, `shared.replays`, so a labeled record that feedback re-sent
after a crash is skipped too): no example is learned twice or lost.
"""

from __future__ import annotations

import asyncio
import pickle
from collections import OrderedDict
from collections.abc import Sequence

import faust
from faust.types import EventT

from services.learner.logic import (
    OnlineLearner,
    TrainingExample,
    learner_for,
    training_examples,
)
from shared import metrics
from shared import settings as cfg
from shared.app import (
    DeadLetters,
    DriftlineApp,
    as_current_event,
    consume,
    consume_batches,
    create_app,
    declare_topic,
    outputs_delivered,
    send_event,
)
from shared.errors import DriftlineError, InternalError
from shared.events import LabeledPrediction, decode
from shared.global_tables import deployment_table
from shared.logging import get_logger
from shared.sealing import PICKLE, SealedState, sealed_table
from shared.topics import MODEL_SNAPSHOTS, PREDICTIONS_LABELED

SERVICE = "learner"
log = get_logger(__name__)


class UnknownDeploymentError(DriftlineError):
    """A labeled prediction names a deployment the learner does not know (never published, or
    deleted since)."""

    code = "unknown_deployment"

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown deployment {name!r}: publish it on the deployments topic first")


def build(common: cfg.DriftlineSettings, own: cfg.LearnerSettings) -> DriftlineApp:
    """The learner Faust app: its agents, the model table, snapshot and MLflow timers."""
    app = create_app(SERVICE, common, own)
    labeled_topic = declare_topic(app, PREDICTIONS_LABELED, common)
    snapshots_topic = declare_topic(app, MODEL_SNAPSHOTS, common)
    examples_topic = app.topic(
        f"{app.conf.id}-training-examples",
        partitions=common.topic_partitions,
        internal=True,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    dead_letters = DeadLetters(app, SERVICE, common)
    deployments = deployment_table(app, common, dead_letters)
    sealed: SealedState[OnlineLearner] = SealedState(
        SERVICE, "model_state", common.state_keys, PICKLE
    )
    model_state = sealed_table(app, sealed)
    learners: OrderedDict[bytes, tuple[bytes, OnlineLearner]] = OrderedDict()
    to_snapshot: set[bytes] = set()
    to_register: set[bytes] = set()

    async def route(event: EventT) -> None:
        message = event.message
        labeled = decode(LabeledPrediction, message.value, message.topic)
        deployment = deployments.get(labeled.deployment)
        if deployment is None:
            raise UnknownDeploymentError(labeled.deployment)
        examples = training_examples(
            labeled, deployment, message.topic, message.partition, message.offset
        )
        for example in examples:
            await send_event(examples_topic, SERVICE, example.model_key, example)

    @app.agent(labeled_topic, name="route_labeled_prediction")
    async def route_labeled_prediction(stream: faust.Stream) -> None:
        await consume(stream, SERVICE, dead_letters, route)

    def stored_learner(key: bytes) -> OnlineLearner | None:
        stored = model_state.get(key)
        if stored is None:
            return None
        cached = learners.get(key)
        if cached is not None and cached[0] is stored:
            learners.move_to_end(key)
            return cached[1]
        return sealed.loads(key, stored)

    def remember(key: bytes, learner: OnlineLearner, event: EventT) -> None:
        """Write the learner to its changelog-backed table, at the offset of `event` (the
        batch's last example for it), and keep it unpickled."""
        value = sealed.dumps(key, learner, event.message.offset)
        with as_current_event(event):
            model_state[key] = value
        learners[key] = (value, learner)
        learners.move_to_end(key)
        if len(learners) > own.model_cache_size:
            learners.popitem(last=False)

    async def publish(key: bytes, learner: OnlineLearner) -> None:
        snapshot = learner.snapshot(key.decode(), common.snapshot_keys)
        await send_event(snapshots_topic, SERVICE, snapshot.model_id, snapshot)
        to_snapshot.discard(key)
        if not learner.spec.per_entity:
            for name, value in snapshot.metrics.items():
                window = "rolling" if name.startswith("rolling_") else "cumulative"
                gauge = metrics.ONLINE_MODEL_METRICS[name.removeprefix("rolling_")]
                gauge.labels(learner.spec.model_id, window).set(value)

    async def learn_batch(batch: Sequence[EventT]) -> list[tuple[EventT, DriftlineError]]:
        rejected: list[tuple[EventT, DriftlineError]] = []
        by_model: dict[bytes, list[tuple[EventT, TrainingExample]]] = {}
        for event in batch:
            message = event.message
            try:
                example = decode(TrainingExample, message.value, message.topic)
            except DriftlineError as exc:
                rejected.append((event, exc))
                continue
            by_model.setdefault(example.model_key.encode(), []).append((event, example))
        learned_models: list[tuple[bytes, OnlineLearner, EventT]] = []
        published = False
        for key, items in by_model.items():
            learner = stored_learner(key)
            learned = 0
            for event, example in items:
                learner = learner_for(learner, example.spec, own.rolling_window)
                try:
                    if not learner.learn(example):
                        metrics.REDELIVERED_EXAMPLES.labels(example.spec.model_id).inc()
                        continue
                except DriftlineError as exc:
                    rejected.append((event, exc))
                    continue
                except Exception as exc:
                    log.exception(
                        "model failed to learn", model=example.model_key, event_id=example.event_id
                    )
                    rejected.append((event, InternalError(exc)))
                    continue
                learned += 1
                if learner.n_learned % own.snapshot_every == 0:
                    await publish(key, learner)
                    published = True
            if learned and learner is not None:
                learned_models.append((key, learner, items[-1][0]))
                metrics.MODEL_UPDATES.labels(learner.spec.model_id).inc(learned)
                if learner.n_learned % own.snapshot_every:
                    to_snapshot.add(key)
                if not learner.spec.per_entity:
                    to_register.add(key)
        if published:
            await outputs_delivered(app)
        for key, learner, event in learned_models:
            remember(key, learner, event)
        return rejected

    @app.agent(examples_topic, name="learn_from_examples")
    async def learn_from_examples(stream: faust.Stream) -> None:
        await consume_batches(
            stream, SERVICE, dead_letters, learn_batch, own.batch_size, own.batch_within_s
        )

    @app.timer(own.snapshot_every_s, name="publish_pending_snapshots")
    async def publish_pending_snapshots() -> None:
        """Snapshot every model updated since its last snapshot; count the entity models."""
        for key in list(to_snapshot):
            learner = stored_learner(key)
            if learner is not None:
                await publish(key, learner)
        entity_models: dict[str, int] = {}
        for key in model_state:
            model_id, slash, _ = key.decode().partition("/")
            if slash:
                entity_models[model_id] = entity_models.get(model_id, 0) + 1
        for model_id, count in entity_models.items():
            metrics.ENTITY_MODELS.labels(model_id).set(count)
        metrics.TABLE_ENTRIES.labels(SERVICE, "model_state").set(len(model_state))

    if own.mlflow_enabled:

        @app.timer(own.mlflow_every_s, name="register_models")
        async def register_models() -> None:
            """Log metrics and register a version of each shared model updated since the last
            round, in a thread; a failure (MLflow down) is logged, counted and retried."""
            from shared.registry import register_online_model

            for key in list(to_register):
                learner = stored_learner(key)
                if learner is None:
                    continue
                model = pickle.loads(pickle.dumps(learner.model))
                tags = {"driftline.n_learned": str(learner.n_learned)}
                try:
                    version = await asyncio.to_thread(
                        register_online_model,
                        common.mlflow_tracking_uri,
                        learner.spec.model_id,
                        model,
                        learner.metric_values(),
                        tags,
                    )
                except Exception as exc:
                    metrics.MLFLOW_FAILURES.labels(SERVICE).inc()
                    log.warning("MLflow registration failed; retrying later", reason=str(exc))
                    return
                to_register.discard(key)
                log.info("online model registered", model=learner.spec.model_id, version=version)

    return app
