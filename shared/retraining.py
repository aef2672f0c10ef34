"""Retraining on a drift alert's fresh data: read exactly its window of labeled predictions,
train the deployment's batch trainer, register a ``challenger`` version and deploy it.

`retrain` is the library call behind ``driftline retrain --alert`` and the webhook job. It is
idempotent per alert: the MLflow run of a retrain carries the alert id as a tag (set when the run
starts, before its model is registered), so a second call finds that run's version and returns
it instead of training again. Two retrains of one alert started at the same moment can still
both train; the webhook job runs one retrain at a time.

The window is `DriftAlert.window`: on ``predictions.labeled``, from its offset per partition
(exact: the concept detector reads that topic) to the partition's end when reading starts,
keeping the records of the alert's deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from pydantic import TypeAdapter, ValidationError

from shared.admin import live_deployments, partition_counts, publish, read_topic, start_reader
from shared.errors import DriftlineError, EventDecodeError
from shared.events import (
    DataWindow,
    Deployment,
    DriftAlert,
    LabeledPrediction,
    Variant,
    decode,
    describe_problem,
    encode,
    utc_now,
)
from shared.logging import get_logger, message_fields
from shared.model_uris import RegistryUri, pinned_uri
from shared.registry import filter_value, register_sklearn_model, registry_failure, set_alias
from shared.rollout import CHALLENGER_ALIAS, CHAMPION_ALIAS, REJECTED_TAG, champion_model
from shared.settings import DriftlineSettings
from shared.topics import ALERTS, DEPLOYMENTS, PREDICTIONS_LABELED
from shared.trainers import Trainer, load_trainer

log = get_logger(__name__)

CHALLENGER = CHALLENGER_ALIAS
"""A retrained version's alias, and the name of its variant in the deployment."""
HOLDOUT_SHARE = 0.2
"""Share of the window, its latest events, that scores the model before it is fit on all."""
READ_STALL_S = 60.0
"""A window read that gets no record for this long (broker gone) fails instead of hanging."""
ALERT_TAG = "driftline.alert_id"
DEPLOYMENT_TAG = "driftline.deployment"


class UnknownAlertError(DriftlineError):
    """No alert with this id is on the alerts topic."""

    def __init__(self, alert_id: str, topic: str) -> None:
        self.alert_id = alert_id
        super().__init__(f"no alert {alert_id!r} on {topic}: see `driftline alerts list`")


class NotRetrainableError(DriftlineError):
    """The alert says nothing a retrain could act on (kind, level, window, deployment)."""

    def __init__(self, alert_id: str, reason: str) -> None:
        self.alert_id = alert_id
        self.reason = reason
        super().__init__(f"alert {alert_id!r} cannot be retrained on: {reason}")


class NotEnoughLabelsError(DriftlineError):
    """The window holds fewer labeled events than the deployment's `retrain.min_samples`."""

    exit_code = 3
    """Not a mistake: labels are still arriving, so `driftline retrain` says "try again later"."""

    def __init__(self, alert_id: str, deployment: str, have: int, need: int, since: datetime):
        self.alert_id = alert_id
        self.deployment = deployment
        self.have = have
        self.need = need
        self.since = since
        super().__init__(
            f"not enough labels to retrain {deployment!r} on alert {alert_id!r}: {have} labeled "
            f"events since {since.isoformat(timespec='seconds')}, {need} needed "
            "(retrain.min_samples); retry when more labels have arrived"
        )


class TrainerError(DriftlineError):
    """The deployment's trainer raised on the window's data."""

    def __init__(self, trainer: str, rows: int, problem: str) -> None:
        self.trainer = trainer
        super().__init__(f"trainer {trainer!r} failed on {rows} rows: {problem}")


@dataclass(frozen=True)
class Window:
    """What was read of an alert's window: the deployment's labeled events in event-time order."""

    topic: str
    rows: list[LabeledPrediction]
    start_offsets: dict[int, int]
    """First offset read per partition (the window's, or the log's start if that was deleted)."""
    end_offsets: dict[int, int]
    """Offset after the last one read per partition: the partition's end when reading began."""


@dataclass(frozen=True)
class RetrainResult:
    """What a retrain did: the version it registered (or found) and the data it learned from."""

    alert_id: str
    deployment: str
    model_name: str
    version: str
    rows: int
    window: DataWindow
    start_offsets: dict[int, int]
    end_offsets: dict[int, int]
    metrics: dict[str, float]
    new: bool
    """False when an earlier retrain of this alert had registered the version."""
    deployed: bool
    """Whether this call published the deployment with the challenger variant."""

    def to_json(self) -> bytes:
        """The result as JSON, e.g. for CI (`driftline retrain --json`)."""
        return _RESULT.dump_json(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> RetrainResult:
        """A result `to_json` wrote."""
        return _RESULT.validate_json(data)

    @property
    def model_uri(self) -> str:
        """The version, pinned, as the deployment's challenger variant names it."""
        return pinned_uri(self.model_name, self.version)


_RESULT = TypeAdapter(RetrainResult)


def check_retrainable(alert: DriftAlert) -> DataWindow:
    """The alert's window if a retrain can act on it; else `NotRetrainableError` saying why."""
    if alert.kind != "concept":
        raise NotRetrainableError(alert.alert_id, "only concept-drift alerts are retrained on")
    if alert.level != "drift":
        raise NotRetrainableError(alert.alert_id, f"its level is {alert.level!r}, not 'drift'")
    if alert.deployment is None:
        raise NotRetrainableError(alert.alert_id, "it names no deployment")
    if alert.window is None:
        raise NotRetrainableError(alert.alert_id, "it carries no data window")
    return alert.window


def registered_model_name(deployment: Deployment) -> str:
    """The registered model a retrained version joins: `retrain.model_name`, else the
    champion's."""
    if deployment.retrain.model_name is not None:
        return deployment.retrain.model_name
    champion = champion_model(deployment)
    if champion is None:
        raise DriftlineError(
            f"deployment {deployment.name!r}: its champion is no MLflow registry model, so set "
            "retrain.model_name to name the model to register"
        )
    return champion.name


def _names_model(uri: str, model_name: str) -> bool:
    parsed = RegistryUri.parse(uri)
    return parsed is not None and parsed.name == model_name


def with_challenger(deployment: Deployment, model_name: str, version: str) -> Deployment:
    """`deployment` with `version` of `model_name`, pinned, as its challenger variant (as
    `retrain.deploy_as` says), in place of earlier challengers: the variant of that name and any
    canary or shadow of the same registered model (one challenger per deployment is what the
    promotion policy judges)."""
    spec = deployment.retrain
    challenger = Variant(
        name=CHALLENGER,
        role=spec.deploy_as,
        model_uri=pinned_uri(model_name, version),
        weight=spec.canary_weight if spec.deploy_as == "canary" else 0.0,
    )
    kept = [
        v
        for v in deployment.variants
        if v.name != CHALLENGER
        and not (v.role in ("canary", "shadow") and _names_model(v.model_uri, model_name))
    ]
    try:
        return Deployment.model_validate(
            {
                **deployment.model_dump(),
                "variants": [*kept, challenger],
                "updated_at": utc_now(),
                "updated_by": None,
            }
        )
    except ValidationError as exc:
        raise DriftlineError(
            f"deployment {deployment.name!r} cannot take the challenger: {describe_problem(exc)}"
        ) from None


def build_frame(rows: Sequence[LabeledPrediction]) -> tuple[pd.DataFrame, pd.Series]:
    """Features and labels in the rows' order. Columns are the features that every row has as a
    number or flag (sorted by name, as floats): the router scores batch models on a float array
    of an event's features, so text features and ones some events lack could not be served."""
    numeric = [
        {name for name, value in row.features.items() if not isinstance(value, str)} for row in rows
    ]
    columns = sorted(set.intersection(*numeric)) if numeric else []
    features = pd.DataFrame(
        [[float(row.features[name]) for name in columns] for row in rows],
        columns=columns,
        dtype=float,
    )
    return features, pd.Series([row.label for row in rows], name="label")


def fit_and_evaluate(
    trainer: Trainer, features: pd.DataFrame, labels: pd.Series
) -> tuple[Any, dict[str, float]]:
    """Score a model fit on the window's head against its tail (the latest `HOLDOUT_SHARE`, so
    the score says how it does on data it has not seen, in time order), then fit on everything.

    Classifiers (``classes_``) are scored by accuracy and error rate, others by mean absolute
    error. A window too small to split is fit without a score.
    """
    held_out = math.floor(len(features) * HOLDOUT_SHARE)
    metrics: dict[str, float] = {"fit_rows": float(len(features)), "holdout_rows": float(held_out)}
    if held_out >= 1:
        split = len(features) - held_out
        model = trainer(features.iloc[:split], labels.iloc[:split])
        predicted = np.asarray(model.predict(features.iloc[split:]))
        actual = labels.iloc[split:].to_numpy()
        if hasattr(model, "classes_"):
            accuracy = float(np.mean(predicted == actual))
            metrics |= {"holdout_accuracy": accuracy, "holdout_error_rate": 1.0 - accuracy}
        else:
            metrics["holdout_mae"] = float(np.mean(np.abs(predicted - actual.astype(float))))
    return trainer(features, labels), metrics


async def find_alert(settings: DriftlineSettings, alert_id: str) -> DriftAlert:
    """The alert with `alert_id` on the alerts topic (read to its current end)."""
    topic = ALERTS.full_name(settings)
    async with contextlib.aclosing(read_topic(settings, topic)) as records:
        async for message in records:
            if message.value is None or alert_id.encode() not in message.value:
                continue
            try:
                alert = decode(DriftAlert, message.value, topic)
            except EventDecodeError:
                continue
            if alert.alert_id == alert_id:
                return alert
    raise UnknownAlertError(alert_id, topic)


async def read_window(settings: DriftlineSettings, alert: DriftAlert) -> Window:
    """The labeled events of the alert's deployment in its window, once per event, read outside
    any consumer group, sorted by event time."""
    window = check_retrainable(alert)
    topic = PREDICTIONS_LABELED.full_name(settings)
    starts = window.offsets.get(topic)
    if not starts:
        raise NotRetrainableError(alert.alert_id, f"its window has no offsets on {topic}")
    count = (await partition_counts(settings, PREDICTIONS_LABELED))[topic]
    missing = sorted(p for p in starts if not 0 <= p < count)
    if missing:
        raise NotRetrainableError(
            alert.alert_id, f"its window names partitions {missing} that {topic} does not have"
        )
    consumer = await start_reader(settings, topic, subscribe=False)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(starts)]
        ends = await consumer.end_offsets(partitions)
        begins = await consumer.beginning_offsets(partitions)
        first = {tp: max(starts[tp.partition], begins[tp]) for tp in partitions}
        found = await _read_ranges(consumer, first, ends, alert.deployment or "")
    finally:
        await consumer.stop()
    return Window(
        topic=topic,
        rows=sorted(one_per_event(found), key=lambda row: row.event_time),
        start_offsets={tp.partition: first[tp] for tp in partitions},
        end_offsets={tp.partition: ends[tp] for tp in partitions},
    )


def one_per_event(found: list[tuple[int, int, LabeledPrediction]]) -> list[LabeledPrediction]:
    """The first record (by partition and offset) of each event: the feedback join writes one
    labeled record per answering variant, all with the event's features and label, and a
    training set must hold each event once (or the holdout would score rows it trained on)."""
    seen: dict[str, LabeledPrediction] = {}
    for _, _, row in sorted(found, key=lambda f: (f[0], f[1])):
        seen.setdefault(row.event_id, row)
    return list(seen.values())


async def _read_ranges(
    consumer: AIOKafkaConsumer,
    first: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    deployment: str,
) -> list[tuple[int, int, LabeledPrediction]]:
    """(partition, offset, record) of `deployment`'s records in [first, end) of each partition;
    an undecodable record is logged and skipped."""
    remaining = {tp for tp in first if first[tp] < ends[tp]}
    consumer.assign(sorted(remaining, key=lambda tp: tp.partition))
    for tp in remaining:
        consumer.seek(tp, first[tp])
    found: list[tuple[int, int, LabeledPrediction]] = []
    loop = asyncio.get_running_loop()
    stalled_at = loop.time() + READ_STALL_S
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=500)
        if batch:
            stalled_at = loop.time() + READ_STALL_S
        elif loop.time() > stalled_at:
            where = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(remaining))
            raise DriftlineError(f"reading {where} got nothing for {READ_STALL_S:g}s")
        for tp, messages in batch.items():
            for message in messages:
                if message.offset >= ends[tp]:
                    continue
                try:
                    record = decode(LabeledPrediction, message.value, tp.topic)
                except EventDecodeError as exc:
                    fields = message_fields(tp.topic, tp.partition, message.offset, message.value)
                    log.warning("skipped undecodable labeled record", reason=str(exc), **fields)
                    continue
                if record.deployment == deployment:
                    found.append((tp.partition, message.offset, record))
        for tp in list(remaining):
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
                consumer.pause(tp)
    return found


@dataclass(frozen=True)
class EarlierRetrain:
    """A version an earlier retrain of the same alert registered, and where it stands now."""

    version: str
    params: dict[str, str]
    metrics: dict[str, float]
    aliases: dict[str, str]
    """Every alias of the registered model and the version it names."""
    rejected: bool
    """A rollback tagged the version rejected."""


def find_earlier(tracking_uri: str, model_name: str, alert_id: str) -> EarlierRetrain | None:
    """The version an earlier retrain of `alert_id` registered in `model_name`, if any: found
    by its run's alert tag, set when the run started (blocking: call it in a worker thread).
    An id or name that cannot be searched for safely is an `UnsearchableError`."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    of_alert = f"tags.`{ALERT_TAG}` = {filter_value('alert id', alert_id)}"
    of_model = f"name = {filter_value('model name', model_name)}"
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        experiment = client.get_experiment_by_name(model_name)
        if experiment is None:
            return None
        runs = client.search_runs([experiment.experiment_id], filter_string=of_alert)
        for run in runs:
            versions = client.search_model_versions(
                f"{of_model} and run_id = {filter_value('run id', run.info.run_id)}"
            )
            if versions:
                aliases = client.get_registered_model(model_name).aliases
                return EarlierRetrain(
                    version=str(versions[0].version),
                    params=dict(run.data.params),
                    metrics=dict(run.data.metrics),
                    aliases={alias: str(v) for alias, v in aliases.items()},
                    rejected=REJECTED_TAG in versions[0].tags,
                )
    except MlflowException as exc:
        raise registry_failure(
            tracking_uri, f"look up earlier retrains of {alert_id!r}", exc
        ) from None
    return None


def needs_redeploy(deployment: Deployment, model_name: str, earlier: EarlierRetrain) -> bool:
    """Whether an earlier retrain's version should be deployed again: the deployment lacks it
    (that retrain stopped before publishing) and it is not the champion, not rolled back and not
    superseded by a newer challenger."""
    version = earlier.version
    served = any(v.model_uri == pinned_uri(model_name, version) for v in deployment.variants)
    challenger = earlier.aliases.get(CHALLENGER)
    superseded = challenger is not None and int(challenger) > int(version)
    champion = earlier.aliases.get(CHAMPION_ALIAS) == version
    return not (served or superseded or champion or earlier.rejected)


def _offsets_param(offsets: Mapping[int, int]) -> str:
    return json.dumps({str(p): o for p, o in sorted(offsets.items())})


def _offsets_from_param(text: str) -> dict[int, int]:
    return {int(p): int(o) for p, o in json.loads(text).items()}


async def retrain(settings: DriftlineSettings, alert: DriftAlert | str) -> RetrainResult:
    """Retrain the alert's deployment on the alert's window, register the version as
    ``challenger`` and deploy it; for an alert retrained before, return that version (deploying
    it again only if `needs_redeploy` says so)."""
    if isinstance(alert, str):
        alert = await find_alert(settings, alert)
    window = check_retrainable(alert)
    deployment = (await live_deployments(settings)).get(alert.deployment or "")
    if deployment is None:
        raise NotRetrainableError(
            alert.alert_id, f"deployment {alert.deployment!r} is not on the deployments topic"
        )
    trainer = load_trainer(deployment.retrain.trainer, settings.allowed_trainers)
    name = registered_model_name(deployment)
    tracking_uri = settings.mlflow_tracking_uri
    earlier = await asyncio.to_thread(find_earlier, tracking_uri, name, alert.alert_id)
    if earlier is not None:
        return await _return_earlier(settings, alert, deployment, name, earlier)

    read = await read_window(settings, alert)
    spec = deployment.retrain
    if len(read.rows) < spec.min_samples:
        raise NotEnoughLabelsError(
            alert.alert_id, deployment.name, len(read.rows), spec.min_samples, window.start_time
        )
    features, labels = build_frame(read.rows)
    try:
        model, metrics = await asyncio.to_thread(fit_and_evaluate, trainer, features, labels)
    except Exception as exc:
        raise TrainerError(spec.trainer, len(read.rows), f"{type(exc).__name__}: {exc}") from exc
    params = {
        "trainer": spec.trainer,
        "alert_id": alert.alert_id,
        "deployment": deployment.name,
        "features": ",".join(features.columns),
        "window.topic": read.topic,
        "window.start_time": window.start_time.isoformat(),
        "window.estimated_by": window.estimated_by,
        "window.start_offsets": _offsets_param(read.start_offsets),
        "window.end_offsets": _offsets_param(read.end_offsets),
        "window.rows": len(read.rows),
    }
    tags = {ALERT_TAG: alert.alert_id, DEPLOYMENT_TAG: deployment.name}
    version = await asyncio.to_thread(
        register_sklearn_model, tracking_uri, name, model, features, params, metrics, tags
    )
    await _deploy(settings, deployment, name, version)
    log.info("retrained", alert_id=alert.alert_id, deployment=deployment.name, version=version)
    return RetrainResult(
        alert.alert_id, deployment.name, name, version, len(read.rows), window,
        read.start_offsets, read.end_offsets, metrics, new=True, deployed=True,
    )  # fmt: skip


async def _return_earlier(
    settings: DriftlineSettings,
    alert: DriftAlert,
    deployment: Deployment,
    name: str,
    earlier: EarlierRetrain,
) -> RetrainResult:
    """The result of the earlier retrain, deploying its version again if that is needed."""
    redeploy = needs_redeploy(deployment, name, earlier)
    if redeploy:
        await _deploy(settings, deployment, name, earlier.version)
    log.info(
        "already retrained", alert_id=alert.alert_id, version=earlier.version, redeployed=redeploy
    )
    params = earlier.params
    return RetrainResult(
        alert.alert_id, deployment.name, name, earlier.version, int(params["window.rows"]),
        check_retrainable(alert), _offsets_from_param(params["window.start_offsets"]),
        _offsets_from_param(params["window.end_offsets"]), earlier.metrics,
        new=False, deployed=redeploy,
    )  # fmt: skip


async def _deploy(
    settings: DriftlineSettings, deployment: Deployment, name: str, version: str
) -> None:
    """Point the challenger alias at `version` and publish the deployment serving it pinned."""
    await asyncio.to_thread(set_alias, settings.mlflow_tracking_uri, name, CHALLENGER, version)
    updated = with_challenger(deployment, name, version)
    await publish(settings, DEPLOYMENTS, updated.name, encode(updated))
