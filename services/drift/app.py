"""The drift worker: ``features`` and ``predictions.labeled`` in, ``alerts`` (and webhooks) out.

Data drift. Feature events are keyed by entity, but one detector must see one (stream,
feature)'s values in order, so `fan_out_feature_values` re-keys each value by ``stream:feature``
through an internal topic and `detect_data_drift` runs the detectors, whose state lives in a
table partitioned the same way. The cost: a (stream, feature) pair is a hot key, all its values
go through one partition and one detector, one after another. A busy stream with few features
spreads over only as many partitions as it has features, however many partitions exist, and
every value of the stream crosses the broker once more (one message per feature).

Concept drift. ``predictions.labeled`` is keyed by deployment, so each model version's errors
arrive in order on one partition; `detect_concept_drift` keeps one detector per (deployment,
model, version) in a table, and the error rate per model version in tumbling and hopping
event-time windows (windowed tables), exposed as ``driftline_model_error_rate``: for hopping
windows the oldest one still open, so the gauge always covers a full window's span.

Both detector agents take micro-batches: a batch reads each detector it touches from its table
once, feeds it every value of the batch in order, sends its alerts, then writes each detector
back once (a pickle per batch, not per value) before its offsets are acked. Alerts are
delivered before the state that records them is written (`shared.app.outputs_delivered`): a
crash in between leaves the detectors unsaved, and the replay fires the same alerts with the
same ids (`shared.events.alert_id_for`), which receivers drop if they had them already. Each
detector remembers the last input offset it counted per lineage (`shared.replays`: the raw
event or the join message a value derives from, by way of the partition it was read from), so
a value redelivered after a crash does not feed it twice, even when `fan_out_feature_values`,
ingestion or feedback re-sent it under a new offset.

A drift alert's window knows the exact source partition and offset of its first value; before
it is sent, the offsets of the other partitions and topics a retrain reads (``features``, and
``predictions.labeled`` for data drift) are looked up by the window's start time.

Webhooks. With ``DRIFTLINE_DRIFT_WEBHOOK_URLS`` set, `deliver_webhooks` reads ``alerts`` back
and posts each alert of the configured levels to every URL: the topic is the outbox, so an alert
is announced at least once whatever crashes (its offset commits after every URL took it or it
was dead-lettered for the URL that never did), and receivers drop repeats by ``webhook-id``. A
receiver that is down holds back only the announcements, never detection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import mode
import orjson
from aiokafka.errors import KafkaError
from faust.types import EventT

from services.drift.logic import (
    Finding,
    Monitor,
    ShownVersions,
    Task,
    check_settings,
    concept_key,
    concept_monitor,
    data_monitor,
    error_of,
    feature_values,
    notifies,
    task_of,
    with_offsets,
)
from services.drift.promotion import add_promotion
from shared import metrics
from shared import settings as cfg
from shared.admin import offsets_at_time
from shared.app import (
    BatchHandler,
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
from shared.errors import DriftlineError, WebhookFailedError
from shared.events import DriftAlert, FeatureEvent, LabeledPrediction, decode
from shared.logging import get_logger
from shared.replays import lineage_of
from shared.sealing import PICKLE, SealedState, sealed_table
from shared.topics import ALERTS, FEATURES, PREDICTIONS_LABELED
from shared.webhooks import WebhookSender

SERVICE = "drift"
log = get_logger(__name__)


def _add_error(total: list[float], new: list[float]) -> list[float]:
    """Sum (error, count) pairs; Faust applies it to every window the event falls in."""
    return [total[0] + new[0], total[1] + new[1]]


class MonitorBatch:
    """What one micro-batch changes, written back once at its end: the detectors it touches
    (each read from its table at most once and pickled back once) and, for concept drift, each
    model version's errors summed per event-time window (one write per window, not per
    outcome). Each write runs under an event of its key's partition, where its changelog record
    belongs."""

    def __init__(
        self, table: Any, sealed: SealedState[Monitor], error_windows: dict[str, Any] | None = None
    ) -> None:
        self.table = table
        self.sealed = sealed
        self.error_windows = error_windows or {}
        self._touched: dict[bytes, tuple[Monitor, EventT]] = {}
        self._errors: dict[tuple[str, bytes, tuple[Any, ...]], list[Any]] = {}
        self.latest: dict[bytes, tuple[float, Task]] = {}
        """Each model version the batch counted: its latest outcome's event time, its task."""

    def get(self, key: bytes) -> Monitor | None:
        """The batch's monitor for `key`, else the stored one, else None."""
        if key in self._touched:
            return self._touched[key][0]
        return self.sealed.loads(key, self.table.get(key))

    def updated(self, key: bytes, monitor: Monitor, event: EventT) -> None:
        """Mark `monitor` to be written back, in the partition of `event`."""
        self._touched[key] = (monitor, event)

    def add_error(self, key: bytes, time: float, error: float, task: Task, event: EventT) -> None:
        """Count one outcome's `error` at event time `time` in each error-rate table."""
        for name, table in self.error_windows.items():
            ranges = tuple(table.table.window.ranges(time))
            tally = self._errors.setdefault((name, key, ranges), [0.0, 0.0, time, event])
            tally[0] += error
            tally[1] += 1.0
            tally[2:] = [time, event]
        self.latest[key] = (time, task)

    def write(self) -> None:
        """Write every updated monitor and every window's summed errors to their tables."""
        for key, (monitor, event) in self._touched.items():
            with as_current_event(event):
                self.table[key] = self.sealed.dumps(key, monitor, event.message.offset)
        for (name, key, _), (total, n, time, event) in self._errors.items():
            with as_current_event(event):
                self.error_windows[name].relative_to(time)[key.decode()].apply(
                    _add_error, [total, n]
                )

    def error_rates(self) -> Iterator[tuple[bytes, str, float]]:
        """(key, table name, error rate) of each model version the batch counted: in the oldest
        window still open at its latest outcome, so the rate always covers a full window."""
        for key, (time, _) in self.latest.items():
            for name, table in self.error_windows.items():
                total, n = table.relative_to(time)[key.decode()][table.table.window.earliest(time)]
                yield key, name, total / n


Detect = Callable[[EventT, MonitorBatch], Iterable[Finding]]
"""Feeds one event's values to the batch's monitors; the findings."""


def build(common: cfg.DriftlineSettings, own: cfg.DriftSettings) -> DriftlineApp:
    """The drift Faust app with its agents, detector tables and webhook sender."""
    check_settings(own.detectors, own.concept_detectors)
    app = create_app(SERVICE, common, own)
    features_topic = declare_topic(app, FEATURES, common)
    labeled_topic = declare_topic(app, PREDICTIONS_LABELED, common)
    alerts_topic = declare_topic(app, ALERTS, common)
    features_name, labeled_name = features_topic.get_topic_name(), labeled_topic.get_topic_name()
    feature_values_topic = app.topic(
        f"{app.conf.id}-feature-values",
        partitions=common.topic_partitions,
        key_serializer="raw",
        value_serializer="raw",
        internal=True,
    )
    dead_letters = DeadLetters(app, SERVICE, common)
    add_promotion(app, common, own, dead_letters)
    sealed = {
        name: SealedState[Monitor](SERVICE, name, common.state_keys, PICKLE)
        for name in ("feature_to_monitor", "model_to_monitor")
    }
    feature_to_monitor = sealed_table(app, sealed["feature_to_monitor"])
    model_to_monitor = sealed_table(app, sealed["model_to_monitor"])
    expires = timedelta(seconds=2 * max(own.error_window_s, own.error_hop_window_s))
    error_windows = {
        f"tumbling_{own.error_window_s:g}s": app.Table(
            "model_errors_tumbling",
            default=lambda: [0.0, 0.0],
        ).tumbling(own.error_window_s, expires=expires),
        f"hopping_{own.error_hop_window_s:g}s": app.Table(
            "model_errors_hopping",
            default=lambda: [0.0, 0.0],
        ).hopping(own.error_hop_window_s, own.error_window_s, expires=expires),
    }
    shown = ShownVersions(stale_after_s=expires.total_seconds())

    def show_error_rates(monitors: MonitorBatch) -> None:
        """Set each counted version's gauge (error rate for classes, mean absolute error for
        regression: two units, two metrics) and drop the versions that went stale."""
        for key, window, rate in monitors.error_rates():
            task = monitors.latest[key][1]
            gauge = metrics.MODEL_ERROR_RATE if task == "classification" else metrics.MODEL_MAE
            gauge.labels(*orjson.loads(key), window).set(rate)
        for key, (time, _) in monitors.latest.items():
            deployment, model, version = orjson.loads(key)
            for gone in shown.saw((deployment, model, version), time):
                labels = dict(zip(("deployment", "model", "version"), gone, strict=True))
                metrics.MODEL_ERROR_RATE.remove_by_labels(labels)
                metrics.MODEL_MAE.remove_by_labels(labels)

    webhooks = (
        WebhookSender(
            own.webhook_urls,
            common.webhook_hmac_key,
            attempts=own.webhook_attempts,
            backoff_s=own.webhook_backoff_s,
            timeout_s=own.webhook_timeout_s,
        )
        if own.webhook_urls
        else None
    )

    async def completed(alert: DriftAlert) -> DriftAlert:
        """`alert` with the offsets its window lacks, looked up by its start time; without them
        (broker unreachable, or any failure of the look-up, logged) the alert still goes out:
        its window gives the start time to read from, and the exact offsets of its own topic."""
        if alert.window is None:
            return alert
        topics = (FEATURES, PREDICTIONS_LABELED) if alert.kind == "data" else (FEATURES,)
        try:
            looked_up = await offsets_at_time(common, alert.window.start_time, *topics)
        except KafkaError as exc:
            log.warning("window offsets not looked up", alert_id=alert.alert_id, error=str(exc))
            return alert
        except Exception:
            log.exception("window offsets not looked up", alert_id=alert.alert_id)
            return alert
        return with_offsets(alert, looked_up)

    async def report(finding: Finding) -> None:
        alert = finding.alert
        if not finding.sent:
            metrics.ALERTS_SUPPRESSED.labels(alert.kind, alert.level, "cooldown").inc()
            return
        alert = await completed(alert)
        await send_event(alerts_topic, SERVICE, alert.key, alert)
        window = alert.window
        log.info(
            "alert sent",
            alert_id=alert.alert_id,
            key=alert.key,
            stream=alert.stream,
            detector=alert.detector,
            alert_level=alert.level,  # `level` is the log record's own
            position=alert.position,
            window_start=None if window is None else window.start_time.isoformat(),
            window_start_position=None if window is None else window.start_position,
            window_estimated_by=None if window is None else window.estimated_by,
        )
        metrics.ALERTS.labels(alert.kind, alert.level).inc()

    def in_batches(
        table: Any, detect: Detect, windows: dict[str, Any] | None = None
    ) -> BatchHandler:
        """A micro-batch handler: `detect` on each event (a `DriftlineError` rejects that event
        only), the findings reported, then what the batch changed written once.

        Outputs before the state that records them: if reporting raises, no detector is saved,
        so the events handled again one by one recompute the same findings (with the same
        alert ids) instead of finding them `already_seen` and dropping every alert."""

        async def handle(events: Sequence[EventT]) -> list[tuple[EventT, DriftlineError]]:
            monitors = MonitorBatch(table, sealed[table.name], windows)
            findings: list[Finding] = []
            rejected: list[tuple[EventT, DriftlineError]] = []
            for event in events:
                try:
                    with as_current_event(event):
                        findings.extend(detect(event, monitors))
                except DriftlineError as exc:
                    rejected.append((event, exc))
            for finding in findings:
                await report(finding)
            if findings:
                await outputs_delivered(app)
            monitors.write()
            show_error_rates(monitors)
            return rejected

        return handle

    async def fan_out(event: EventT) -> None:
        features = decode(FeatureEvent, event.message.value, event.message.topic)
        time = features.event_time.timestamp()
        message = event.message
        lineage, lineage_offset = lineage_of(
            features.provenance, message.topic, message.partition, message.offset
        )
        source = {
            "partition": message.partition,
            "offset": message.offset,
            "lineage": lineage,
            "lineage_offset": lineage_offset,
        }
        for name, value in feature_values(features).items():
            item = {"stream": features.stream, "feature": name, "value": value, "time": time}
            item.update(source)
            key = f"{features.stream}:{name}".encode()
            await feature_values_topic.send(key=key, value=orjson.dumps(item))

    def detect_data(event: EventT, monitors: MonitorBatch) -> Iterable[Finding]:
        item = orjson.loads(event.message.value)
        key = event.message.key
        stream, feature, value = item["stream"], item["feature"], item["value"]
        monitor = monitors.get(key) or data_monitor(
            own, stream, feature, isinstance(value, str), features_name
        )
        if monitor.already_seen(item["lineage"], item["lineage_offset"]):
            return []
        time = datetime.fromtimestamp(item["time"], UTC)
        finding = monitor.update(value, time, item["partition"], item["offset"])
        monitors.updated(key, monitor, event)
        metrics.observe_end_to_end(SERVICE, [item["time"]])
        return [finding] if finding is not None else []

    def detect_concept(event: EventT, monitors: MonitorBatch) -> Iterable[Finding]:
        message = event.message
        labeled = decode(LabeledPrediction, message.value, message.topic)
        lineage, lineage_offset = lineage_of(
            labeled.provenance, message.topic, message.partition, message.offset
        )
        task = task_of(labeled.label)
        time = labeled.event_time.timestamp()
        metrics.observe_end_to_end(SERVICE, [time])
        findings = []
        for outcome in labeled.outcomes:
            if outcome.output is None:
                continue
            error = error_of(outcome, labeled.label, task)
            key = concept_key(labeled.deployment, outcome)
            monitor = monitors.get(key) or concept_monitor(
                own, labeled.deployment, labeled.stream, outcome, task, labeled_name
            )
            if monitor.already_seen(lineage, lineage_offset):
                continue
            finding = monitor.update(error, labeled.event_time, message.partition, message.offset)
            monitors.updated(key, monitor, event)
            monitors.add_error(key, time, error, task, event)
            if finding is not None:
                findings.append(finding)
        return findings

    @app.agent(features_topic, name="fan_out_feature_values")
    async def fan_out_feature_values(stream: faust.Stream) -> None:
        await consume(stream, SERVICE, dead_letters, fan_out)

    @app.agent(feature_values_topic, name="detect_data_drift")
    async def detect_data_drift(stream: faust.Stream) -> None:
        await consume_batches(
            stream,
            SERVICE,
            dead_letters,
            in_batches(feature_to_monitor, detect_data),
            own.batch_max_events,
            own.batch_within_s,
        )

    @app.agent(labeled_topic, name="detect_concept_drift")
    async def detect_concept_drift(stream: faust.Stream) -> None:
        await consume_batches(
            stream,
            SERVICE,
            dead_letters,
            in_batches(model_to_monitor, detect_concept, error_windows),
            own.batch_max_events,
            own.batch_within_s,
        )

    if webhooks is not None:

        async def announce(event: EventT) -> None:
            """Post one alert of ``alerts`` to every webhook URL; an URL that failed every
            attempt gets the alert dead-lettered for it (its offset then commits: retrying for
            ever would hold back every later alert)."""
            message = event.message
            alert = decode(DriftAlert, message.value, message.topic)
            if not notifies(alert, own.webhook_levels):
                return
            for problem in await webhooks.deliver(alert.key, message.value, alert.alert_id):
                await dead_letters.send(event, WebhookFailedError(problem))

        @app.agent(alerts_topic, name="deliver_webhooks")
        async def deliver_webhooks(stream: faust.Stream) -> None:
            await consume(stream, SERVICE, dead_letters, announce)

        @app.service
        class WebhookClient(mode.Service):
            """The webhook sender's HTTP client, open for as long as the worker runs."""

            async def on_start(self) -> None:
                await webhooks.start()

            async def on_stop(self) -> None:
                await webhooks.stop()

    return app
