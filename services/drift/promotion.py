"""Promotion on evidence in the drift worker: challengers' trials on ``predictions.labeled``.

`weigh_challengers` reads labeled predictions (keyed by deployment, so one deployment's events
arrive in order on one partition) and, for each challenger of the event's deployment (a canary
or shadow of another version of the champion's registered model, or one on another backend such
as a V2 endpoint, see `shared.rollout`), counts
both variants' outcomes in a `Trial` kept per (deployment, model, challenger version) in the
``promotion_trials`` table. Every `promotion_every` challenger outcomes it evaluates the
deployment's promotion policy and publishes the decision on ``decisions``. A promote or rollback is
remembered in the trial before it runs and marked done after, so a redelivered message never
decides or runs it twice, and one that stopped half way (MLflow down, crash) is run again,
idempotently, on the trial's next event.
"""

from __future__ import annotations

from collections.abc import Mapping

import faust
import orjson
from faust.types import EventT

from services.drift.trials import Trial
from shared import metrics
from shared import settings as cfg
from shared.app import DeadLetters, consume, declare_topic, send_event
from shared.errors import DriftlineError
from shared.events import Deployment, LabeledPrediction, decode
from shared.global_tables import deployment_table
from shared.logging import get_logger
from shared.replays import lineage_of
from shared.rollout import (
    Challenger,
    Registry,
    challenger_variants,
    execute,
    promotion_steps,
    rollback_steps,
    swap_challengers,
    swap_steps,
)
from shared.sealing import SealedState, json_codec, sealed_table
from shared.topics import DECISIONS, DEPLOYMENTS, PREDICTIONS_LABELED

log = get_logger(__name__)


def mlflow_registry(tracking_uri: str) -> Registry:
    """MLflow's registry client, imported when a decision first needs it: importing MLflow is
    about a quarter of a drift worker's start, and most deployments have no challenger."""
    from shared.registry import MlflowRegistry

    return MlflowRegistry(tracking_uri)


def add_promotion(
    app: faust.App,
    common: cfg.DriftlineSettings,
    own: cfg.DriftSettings,
    dead_letters: DeadLetters,
) -> None:
    """Add the deployments table, the trials table and `weigh_challengers` to the drift app."""
    service = dead_letters.service
    labeled_topic = declare_topic(app, PREDICTIONS_LABELED, common)
    decisions_topic = declare_topic(app, DECISIONS, common)
    deployments_topic = declare_topic(app, DEPLOYMENTS, common)
    deployments: Mapping[str, Deployment] = deployment_table(app, common, dead_letters)
    sealed = SealedState(service, "promotion_trials", common.state_keys, json_codec(Trial))
    trials = sealed_table(app, sealed)
    registry: Registry | None = None

    async def publish(deployment: Deployment) -> None:
        # Given to the app's producer, which a commit flushes first: a crash before that
        # replays the message, and the action (idempotent) runs again.
        await send_event(deployments_topic, service, deployment.name, deployment)

    async def run(trial: Trial, deployment: Deployment) -> None:
        """Run the trial's decided action; a failure is logged and retried on its next event."""
        nonlocal registry
        registry = registry or mlflow_registry(common.mlflow_tracking_uri)
        challenger = Challenger(trial.model_name, trial.version, trial.variant)
        promote = trial.decided == "promote"
        if trial.swapped:
            steps = swap_steps(publish, deployment, trial.variant, promoted=promote)
        elif promote:
            steps = promotion_steps(registry, publish, deployment, challenger)
        else:
            steps = rollback_steps(registry, publish, deployment, challenger, trial.reason)
        try:
            await execute(steps)
        except DriftlineError as exc:
            metrics.MLFLOW_FAILURES.labels(service).inc()
            log.warning(
                "promotion action stopped; retried on the next event",
                deployment=trial.deployment,
                action=trial.decided,
                reason=str(exc),
            )
            return
        trial.executed = True

    async def weigh(event: EventT) -> None:
        message = event.message
        # Keyed by deployment name: most deployments have no challenger, and their records need
        # no decoding here (the concept-drift agent decodes and dead-letters bad ones).
        deployment = deployments.get((message.key or b"").decode(errors="replace"))
        if deployment is None:
            return
        challengers = [(v, uri.name, uri.version) for v, uri in challenger_variants(deployment)]
        challengers += [(v, None, None) for v in swap_challengers(deployment)]
        if not challengers:
            return
        labeled = decode(LabeledPrediction, message.value, message.topic)
        lineage = lineage_of(labeled.provenance, message.topic, message.partition, message.offset)
        for variant, registered, pinned in challengers:
            answered = next((o for o in labeled.outcomes if o.variant == variant.name), None)
            if registered is None:
                # Swapped in by URI: its trial is the URI's, and takes the model's name and
                # version from its first answer (nothing counts before that one anyway).
                key = orjson.dumps([deployment.name, variant.model_uri])
                trial = sealed.loads(key, trials.get(key))
                if trial is None:
                    if answered is None:
                        continue
                    trial = Trial(
                        deployment.name,
                        answered.model_name,
                        variant.name,
                        answered.model_version,
                        swapped=True,
                    )
            else:
                version = pinned or (answered.model_version if answered is not None else None)
                if version is None:
                    continue
                key = orjson.dumps([deployment.name, registered, version])
                trial = sealed.loads(key, trials.get(key)) or Trial(
                    deployment.name, registered, variant.name, version
                )
            if trial.decided is not None:
                if not trial.executed:
                    await run(trial, deployment)
                    trials[key] = sealed.dumps(key, trial, message.offset)
                continue
            if trial.already_seen(*lineage):
                continue
            counted = trial.count(labeled, deployment.promotion.tier_feature)
            if counted and trial.challenger.overall.total % own.promotion_every == 0:
                decision = trial.look(deployment.promotion)
                record = trial.decision_event(decision)
                await send_event(decisions_topic, service, deployment.name, record)
                metrics.PROMOTION_DECISIONS.labels(deployment.name, decision.action).inc()
                if trial.settle(decision):
                    trials[key] = sealed.dumps(key, trial, message.offset)
                    await run(trial, deployment)
            trials[key] = sealed.dumps(key, trial, message.offset)

    @app.agent(labeled_topic, name="weigh_challengers")
    async def weigh_challengers(stream: faust.Stream) -> None:
        await consume(stream, service, dead_letters, weigh)
