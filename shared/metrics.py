"""Prometheus metrics every service shares; served with Faust's own on the worker's ``/metrics``.

Service-specific metrics are declared here too, so names and labels stay one consistent family
(``driftline_*``) that the Grafana dashboard can rely on.
"""

from __future__ import annotations

import functools
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
    "Messages sent to the dead-letter topic, by why.",
    ["service", "source_topic", "reason"],
)
PROCESSING_SECONDS = Histogram(
    "driftline_processing_seconds",
    "Time a service spent on one message, from receipt to its outputs being sent (a "
    "micro-batch's time divided by its size, observed once per batch).",
    ["service"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
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
    "Predictions the router produced, by deployment, variant and whether they were served.",
    ["deployment", "variant", "served"],
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
    "Model snapshots refused (unsigned, badly signed or undecodable).",
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
    "A model version's error rate (mean absolute error for regression) in its latest "
    "event-time window.",
    ["deployment", "model", "version", "window"],
)
WEBHOOK_DELIVERIES = Counter(
    "driftline_webhook_deliveries_total",
    "Webhook delivery attempts, by outcome (delivered, retried, failed, dropped).",
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
MODEL_METRIC = Gauge(
    "driftline_model_metric",
    "An online model's prequential metric (accuracy, log_loss, mae), cumulative or rolling.",
    ["model_id", "metric", "window"],
)
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
PROMOTION_DECISIONS = Counter(
    "driftline_promotion_decisions_total",
    "Looks of a deployment's promotion policy at a challenger, by what it decided.",
    ["deployment", "action"],
)
