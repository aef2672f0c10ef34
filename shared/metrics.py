"""Prometheus metrics every service shares; served with Faust's own on the worker's ``/metrics``.

Service-specific metrics are declared here too, so names and labels stay one consistent family
(``driftline_*``) that the Grafana dashboard can rely on.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Iterable
from importlib.metadata import version
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase


@functools.cache
def child(metric: MetricWrapperBase, *labels: str) -> Any:
    """`metric.labels(*labels)`, kept: `labels()` validates, joins and locks on every call, a
    cost on per-event paths, while label sets are few (services, topics, deployments, variants)."""
    return metric.labels(*labels)


EVENTS_IN = Counter(
    "driftline_events_in_total", "Messages a service consumed.", ["service", "topic"]
)
EVENTS_OUT = Counter(
    "driftline_events_out_total", "Messages a service produced.", ["service", "topic"]
)
DEAD_LETTERS = Counter(
    "driftline_dead_letters_total",
    "Messages sent to the dead-letter topic, by the reason's code (a fixed category, "
    "`shared.errors.DriftlineError.code`; the full reason is in the dead letter).",
    ["service", "source_topic", "reason"],
)
PROCESSING_SECONDS = Histogram(
    "driftline_processing_seconds",
    "Time one message spent in a worker, from its receipt by the consumer to its outputs being "
    "given to the producer (its wait for its micro-batch included), observed once per message.",
    ["service"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
END_TO_END_SECONDS = Histogram(
    "driftline_end_to_end_seconds",
    "Time from an event's own event time to this worker giving the output it caused to the "
    "producer (ingestion: feature event, router: prediction, feedback: labeled record, its "
    "wait for the label included) or, in the drift worker, to its detector counting it.",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
WORKER_READY = Gauge(
    "driftline_worker_ready",
    "1 while the worker serves its partitions (what /health answers 200 for), 0 while a "
    "rebalance or table recovery runs; read when scraped.",
    ["service"],
)
BUILD_INFO = Gauge(
    "driftline_build_info",
    "Always 1, labeled with the versions this worker runs (Driftline, Python, Faust, River).",
    ["service", "version", "python", "faust", "river"],
)
TABLE_ENTRIES = Gauge(
    "driftline_table_entries",
    "Entries in a service's table (this worker's partitions).",
    ["service", "table"],
)
DUPLICATE_EVENTS = Counter(
    "driftline_duplicate_events_total",
    "Raw events dropped because their event id was already seen in their stream.",
    ["stream"],
)
PREDICTIONS = Counter(
    "driftline_predictions_total",
    "Predictions the router (or the V2 gateway) produced, by deployment, variant and whether "
    "they were served.",
    ["deployment", "variant", "served"],
)
MODEL_INFERENCE_SECONDS = Histogram(
    "driftline_model_inference_seconds",
    "A variant's model time per prediction: each batched model call's time divided by the "
    "rows it scored, observed once per prediction.",
    ["deployment", "variant"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5),
)
MODEL_FAILURES = Counter(
    "driftline_model_failures_total",
    "Variants that could not answer an event, by why (unknown model, failing model, features).",
    ["deployment", "variant", "reason"],
)
COLD_ONLINE_MODELS = Counter(
    "driftline_cold_online_models_total",
    "Events an online variant answered with no output because no snapshot of its model exists.",
    ["model_id"],
)
REFUSED_SNAPSHOTS = Counter(
    "driftline_refused_snapshots_total",
    "Model snapshots refused, by the reason's code (unsigned, bad_signature, wrong_key, "
    "tombstone, bad_event).",
    ["reason"],
)
REFUSED_STATE = Counter(
    "driftline_refused_state_total",
    "Table values read back without a valid MAC for their table and key: never loaded.",
    ["service", "table"],
)
MODEL_LOADS = Counter(
    "driftline_model_loads_total",
    "Models the router loaded (again after an MLflow alias moved), by model URI.",
    ["uri"],
)
ALERTS = Counter(
    "driftline_alerts_total",
    "Drift alerts sent to the alerts topic.",
    ["kind", "level"],
)
ALERTS_SUPPRESSED = Counter(
    "driftline_alerts_suppressed_total",
    "Detector findings not sent as alerts, by why (cooldown).",
    ["kind", "level", "reason"],
)
MODEL_ERROR_RATE = Gauge(
    "driftline_model_error_rate",
    "A classifier version's share of wrong answers (0 to 1) in its latest full event-time "
    "window; dropped once the version had no labeled answer for two windows (replaced).",
    ["deployment", "model", "version", "window"],
)
MODEL_MAE = Gauge(
    "driftline_model_mean_absolute_error",
    "A regression model version's mean absolute error (in its target's unit) in its latest full "
    "event-time window; dropped like `driftline_model_error_rate`.",
    ["deployment", "model", "version", "window"],
)
WEBHOOK_DELIVERIES = Counter(
    "driftline_webhook_deliveries_total",
    "Webhook delivery attempts, by outcome (delivered, retried, failed).",
    ["outcome"],
)
EXPIRED_PREDICTIONS = Counter(
    "driftline_expired_predictions_total",
    "Predictions whose feedback never came within the expiry, by deployment and model.",
    ["deployment", "model"],
)
DUPLICATE_FEEDBACK = Counter(
    "driftline_duplicate_feedback_total",
    "Feedback for an event that was already labeled: applied once, the repeat dropped.",
)
DUPLICATE_PREDICTIONS = Counter(
    "driftline_duplicate_predictions_total",
    "Predictions for a variant the join already holds for their event (a router replay re-sends"
    " the same prediction id): applied once, the repeat dropped.",
)
LABELED_PREDICTIONS = Counter(
    "driftline_labeled_predictions_total",
    "Labeled predictions the feedback joiner produced, by deployment.",
    ["deployment"],
)
MODEL_UPDATES = Counter(
    "driftline_model_updates_total",
    "Labeled examples an online model learned (redelivered ones are skipped, not counted).",
    ["model_id"],
)
REDELIVERED_EXAMPLES = Counter(
    "driftline_redelivered_examples_total",
    "Examples the learner had already learned and skipped (redelivery after a crash or rebalance).",
    ["model_id"],
)
ONLINE_MODEL_METRICS = {
    "accuracy": Gauge(
        "driftline_online_model_accuracy",
        "An online model's prequential accuracy (0 to 1), cumulative or rolling.",
        ["model_id", "window"],
    ),
    "log_loss": Gauge(
        "driftline_online_model_log_loss",
        "An online classifier's prequential log loss (cross-entropy, nats), cumulative or rolling.",
        ["model_id", "window"],
    ),
    "mae": Gauge(
        "driftline_online_model_mean_absolute_error",
        "An online regression model's prequential mean absolute error (in its target's unit), "
        "cumulative or rolling.",
        ["model_id", "window"],
    ),
}
"""The learner's prequential metrics by their name in `OnlineLearner.metrics`: one gauge per
unit, so no query averages an accuracy with a loss."""
ENTITY_MODELS = Gauge(
    "driftline_entity_models",
    "Per-entity online models this learner holds, by the model id they belong to.",
    ["model_id"],
)
MLFLOW_FAILURES = Counter(
    "driftline_mlflow_failures_total",
    "MLflow logging or registration attempts that failed (retried on the next round).",
    ["service"],
)
RETRAIN_ATTEMPTS = Counter(
    "driftline_retrain_attempts_total",
    "Retrains the retrain job attempted, by how each ended: retrained, retry (too few labels "
    "yet), given_up (still too few at the deadline), failed (a Driftline error), crashed.",
    ["outcome"],
)
RETRAIN_SECONDS = Histogram(
    "driftline_retrain_seconds",
    "How long one retrain attempt of the retrain job took (reading, training, registering).",
    buckets=(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0),
)
RETRAIN_PENDING = Gauge(
    "driftline_retrain_pending",
    "Alerts the retrain job accepted and has not finished (queued, retraining or waiting to "
    "retry); read when scraped.",
)
GATEWAY_REQUESTS = Counter(
    "driftline_gateway_requests_total",
    "V2 inference requests the gateway answered, by deployment (the URL's model name; ``-`` "
    "for a name no deployment has) and HTTP status.",
    ["model", "status"],
)
GATEWAY_REQUEST_SECONDS = Histogram(
    "driftline_gateway_request_seconds",
    "Time from a V2 inference request's receipt to its answer, its records' acknowledgement by "
    "Kafka included, by deployment (answered requests only).",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
PROMOTION_DECISIONS = Counter(
    "driftline_promotion_decisions_total",
    "Looks of a deployment's promotion policy at a challenger, by what it decided.",
    ["deployment", "action"],
)


def show_build_info(service: str) -> None:
    """Set `BUILD_INFO` for this worker: which versions a dashboard or an alert is looking at."""
    BUILD_INFO.labels(
        service,
        version("driftline"),
        platform.python_version(),
        version("faust-streaming"),
        version("river"),
    ).set(1)


def observe_end_to_end(service: str, event_times: Iterable[float]) -> None:
    """Observe `END_TO_END_SECONDS` now for outputs of events at `event_times` (epoch seconds);
    an event time ahead of this clock counts as 0, not as a negative latency."""
    histogram = child(END_TO_END_SECONDS, service)
    now = time.time()
    for event_time in event_times:
        histogram.observe(max(0.0, now - event_time))
