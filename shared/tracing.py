"""One event's journey through the topics, for debugging without code: what `driftline trace`
and the console's trace page show.

It reads the topics as an outside consumer (no consumer group) and keeps the records that name
the event: its raw event, features, every variant's prediction, its feedback, the labeled record,
any dead letter, and the alerts that followed on the models and stream it touched.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.settings import DriftlineSettings
from shared.topics import (
    ALERTS,
    DEADLETTER,
    EVENTS_RAW,
    FEATURES,
    FEEDBACK,
    PREDICTIONS,
    PREDICTIONS_LABELED,
    Topic,
)

JOURNEY = (EVENTS_RAW, FEATURES, PREDICTIONS, FEEDBACK, PREDICTIONS_LABELED, DEADLETTER)
MAX_ALERTS = 5


@dataclass(frozen=True)
class Step:
    """One record of the journey."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    value: dict[str, Any]

    @property
    def where(self) -> str:
        """``topic[partition]@offset``."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


def names_event(topic: Topic, value: bytes | None, event_id: str) -> dict[str, Any] | None:
    """The record as JSON if it is about `event_id` (a dead letter: if its original bytes are)."""
    if value is None:
        return None
    if topic is not DEADLETTER and event_id.encode() not in value:
        return None
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    if topic is DEADLETTER:
        original = base64.b64decode(record.get("value") or "")
        return record if f'"{event_id}"'.encode() in original else None
    return record if record.get("event_id") == event_id else None


def summary(topic: Topic, value: dict[str, Any]) -> str:
    """What a step says, in a line."""
    if topic is PREDICTIONS:
        outcome = value.get("outcome", {})
        served = "served" if outcome.get("served") else "shadow"
        return (
            f"{outcome.get('variant')} ({served}): {outcome.get('model_name')} "
            f"v{outcome.get('model_version')} -> {outcome.get('output')!r} "
            f"in {value.get('latency_ms', 0):.2f} ms"
        )
    if topic is FEEDBACK:
        return f"label {value.get('label')!r}"
    if topic is PREDICTIONS_LABELED:
        outputs = ", ".join(f"{o['variant']}={o['output']!r}" for o in value.get("outcomes", []))
        return (
            f"label {value.get('label')!r} after {value.get('feedback_delay_s', 0):.1f} s; "
            f"{outputs}"
        )
    if topic is DEADLETTER:
        return f"by {value.get('service')}: {value.get('reason')}"
    if topic is FEATURES:
        return ", ".join(f"{k}={v!r}" for k, v in list(value.get("features", {}).items())[:6])
    return f"stream {value.get('stream')}, entity {value.get('entity_id')}"


def related_alert(alert: dict[str, Any], steps: list[tuple[Topic, Step]]) -> bool:
    """Whether an alert concerns a model version or the stream this event went through."""
    models = {
        (o["model_name"], o["model_version"])
        for topic, step in steps
        if topic is PREDICTIONS
        for o in [step.value["outcome"]]
    }
    streams = {step.value.get("stream") for _, step in steps}
    return (alert.get("model_name"), alert.get("model_version")) in models or (
        alert.get("kind") == "data" and alert.get("stream") in streams
    )


async def trace(common: DriftlineSettings, event_id: str) -> list[tuple[Topic, Step]]:
    """Every record about `event_id`, topic by topic, then the alerts that followed it."""
    from shared.admin import read_topic

    steps: list[tuple[Topic, Step]] = []
    for topic in JOURNEY:
        async for message in read_topic(common, topic.full_name(common)):
            record = names_event(topic, message.value, event_id)
            if record is not None:
                step = Step(
                    message.topic, message.partition, message.offset, message.timestamp, record
                )
                steps.append((topic, step))
    if not steps:
        return steps
    first_ms = min(step.timestamp_ms for _, step in steps)
    alerts: list[tuple[Topic, Step]] = []
    async for message in read_topic(common, ALERTS.full_name(common)):
        if message.timestamp < first_ms or message.value is None:
            continue
        alert = orjson.loads(message.value)
        if related_alert(alert, steps) and len(alerts) < MAX_ALERTS:
            step = Step(message.topic, message.partition, message.offset, message.timestamp, alert)
            alerts.append((ALERTS, step))
    return steps + alerts


def as_dict(topic: Topic, step: Step) -> dict[str, Any]:
    """A step for ``--json``: the topic's name without the prefix, where the record lies, when
    it was written and the record itself."""
    return {
        "topic": topic.name,
        "partition": step.partition,
        "offset": step.offset,
        "written_at": datetime.fromtimestamp(step.timestamp_ms / 1000, UTC),
        "record": step.value,
    }


def what(topic: Topic, step: Step) -> str:
    """What a step of the journey says, in a line (an alert: its kind, level and key)."""
    if topic is ALERTS:
        return f"{step.value['kind']} {step.value['level']} on {step.value['key']}"
    return summary(topic, step.value)
