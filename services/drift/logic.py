"""Drift monitoring without Kafka: which detector watches what, what it found, which finding
becomes an alert.

A :class:`Monitor` owns one detector over one key's stream of values (a (stream, feature) pair,
or a model version's errors). It reports the value at which the detector fires, with its 1-based
position, so the service reports drift at exactly the indices River gives in plain Python. It
reports a warning once when the detector enters its warning zone (River's ``warning_detected``
stays true for every value inside it). Its :class:`AlertGate` then decides which findings are
sent: a cooldown per key and level in event time, and the escalation rule "N drifts within T".
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from river import stats

from services.drift.detectors import Detector
from shared.errors import DriftlineError
from shared.events import DriftAlert, FeatureEvent, Label, VariantOutput

Level = Literal["warning", "drift"]
Task = Literal["classification", "regression"]
_RANK: dict[Level, int] = {"warning": 0, "drift": 1}
DEFAULT_DATA = {"kind": "adwin"}
DEFAULT_CATEGORICAL = {"kind": "psi"}
DEFAULT_CONCEPT: dict[Task, dict[str, Any]] = {
    "classification": {"kind": "ddm"},
    "regression": {"kind": "adwin"},
}


class TaskMismatchError(DriftlineError):
    """A regression model answered with something that is not a number."""

    def __init__(self, model: str, output: object) -> None:
        self.model = model
        self.output = output
        super().__init__(
            f"model {model!r} answered {output!r} for a numeric label: regression needs numbers"
        )


def feature_values(event: FeatureEvent) -> dict[str, float | str]:
    """The values data-drift detectors watch: numbers as floats, categories and flags as text."""
    return {name: _watched(value) for name, value in event.features.items()}


def _watched(value: float | int | str | bool) -> float | str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else float(value)


def task_of(label: Label) -> Task:
    """A float label is a regression target; ints, flags and text are classes."""
    return "regression" if isinstance(label, float) else "classification"


def error_of(outcome: VariantOutput, label: Label, task: Task) -> float:
    """1.0 for a wrong class, 0.0 for a right one; the absolute error for regression."""
    if task == "classification":
        return float(outcome.output != label)
    if isinstance(outcome.output, bool) or not isinstance(outcome.output, int | float):
        raise TaskMismatchError(outcome.model_name, outcome.output)
    return abs(float(outcome.output) - float(label))


def _setting(
    mapping: dict[str, dict[str, Any]], keys: list[str], default: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    for key in keys:
        if key in mapping:
            return key, mapping[key]
    return keys[-1], mapping.get(keys[-1], default)


def data_detector(
    mapping: dict[str, dict[str, Any]], stream: str, feature: str, categorical: bool
) -> Detector:
    """The detector settings give a feature: ``stream:feature``, then ``stream`` and ``default``
    for numbers, ``categorical`` for categories."""
    if categorical:
        where, spec = _setting(mapping, [f"{stream}:{feature}", "categorical"], DEFAULT_CATEGORICAL)
        return Detector.from_setting(where, spec, accepts=("category",))
    where, spec = _setting(mapping, [f"{stream}:{feature}", stream, "default"], DEFAULT_DATA)
    return Detector.from_setting(where, spec, accepts=("value",))


def concept_detector(
    mapping: dict[str, dict[str, Any]], model: str, version: str, task: Task
) -> Detector:
    """The detector settings give a model version: ``model:version``, ``model``, then the task."""
    where, spec = _setting(mapping, [f"{model}:{version}", model, task], DEFAULT_CONCEPT[task])
    accepts = ("error",) if task == "classification" else ("value",)
    return Detector.from_setting(where, spec, accepts=accepts)


def check_settings(data: dict[str, dict[str, Any]], concept: dict[str, dict[str, Any]]) -> None:
    """Build every configured detector once, so a bad setting stops the worker at start."""
    for mapping in (data, concept):
        for where, spec in mapping.items():
            Detector.from_setting(where, spec, accepts=("value", "error", "category"))


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a finding is sent, and how the escalation rule counts it."""

    send: bool
    escalated: bool = False
    recent_drifts: int = 0


class AlertGate:
    """Cooldown and escalation for one alert key, in event time.

    A finding is dropped when an alert of the same or a higher level went out less than
    `cooldown_s` before it. A drift that makes `escalate_after` drifts (sent or not) within
    `escalate_within_s` is escalated and always sent; the count then starts again.

    Examples
    --------
    >>> gate = AlertGate(cooldown_s=60, escalate_after=3, escalate_within_s=600)
    >>> gate.admit("drift", 0).send, gate.admit("drift", 30).send
    (True, False)
    >>> gate.admit("drift", 90)
    Verdict(send=True, escalated=True, recent_drifts=3)

    """

    def __init__(self, cooldown_s: float, escalate_after: int, escalate_within_s: float) -> None:
        self.cooldown_s = cooldown_s
        self.escalate_after = escalate_after
        self.escalate_within_s = escalate_within_s
        self._last_sent: dict[Level, float] = {}
        self._drifts: deque[float] = deque()

    def admit(self, level: Level, time: float) -> Verdict:
        """Decide about a finding of `level` at event time `time` (seconds)."""
        recent = 0
        if level == "drift":
            self._drifts.append(time)
            while self._drifts and self._drifts[0] <= time - self.escalate_within_s:
                self._drifts.popleft()
            recent = len(self._drifts)
            if recent >= self.escalate_after:
                self._drifts.clear()
                self._last_sent[level] = time
                return Verdict(send=True, escalated=True, recent_drifts=recent)
        cooling = any(
            time - sent < self.cooldown_s
            for sent_level, sent in self._last_sent.items()
            if _RANK[sent_level] >= _RANK[level]
        )
        if cooling:
            return Verdict(send=False, recent_drifts=recent)
        self._last_sent[level] = time
        return Verdict(send=True, recent_drifts=recent)


def _summary(var: stats.Var) -> dict[str, float]:
    n = var.mean.n
    return {"n": n, "mean": var.mean.get(), "std": math.sqrt(var.get()) if n > 1 else 0.0}


@dataclass(frozen=True, slots=True)
class Finding:
    """What a detector found at one value: the alert, and whether the gate lets it out."""

    alert: DriftAlert
    sent: bool


class Monitor:
    """One detector over one key's values, with the statistics and gate its alerts need.

    Parameters
    ----------
    detector
        What watches the values.
    gate
        Cooldown and escalation for this key.
    subject
        The alert fields that say what drifted (kind, key, stream, feature, model...).
    recent
        How many latest values the "after" statistics of an alert describe.

    """

    def __init__(
        self, detector: Detector, gate: AlertGate, subject: dict[str, Any], recent: int = 50
    ) -> None:
        self.detector = detector
        self.gate = gate
        self.subject = subject
        self.recent = recent
        self.n_seen = 0
        self.last_offsets: dict[int, int] = {}
        self._in_warning = False
        self._segment = stats.Var()
        self._latest_values: deque[float] = deque(maxlen=recent)

    def already_seen(self, partition: int, offset: int) -> bool:
        """Whether the source message at `partition` and `offset` was counted before: a message
        redelivered after a crash must not feed the detector twice."""
        if offset <= self.last_offsets.get(partition, -1):
            return True
        self.last_offsets[partition] = offset
        return False

    def update(self, x: float | str, event_time: datetime) -> Finding | None:
        """Feed one value; a finding when the detector fires or enters its warning zone."""
        before = self._stats()
        self.detector.update(x)
        self.n_seen += 1
        if isinstance(x, float | int):
            self._segment.update(x)
            self._latest_values.append(float(x))
        level: Level | None = None
        if self.detector.drift_detected:
            level, self._in_warning = "drift", False
        elif self.detector.warning_detected and not self._in_warning:
            level, self._in_warning = "warning", True
        elif not self.detector.warning_detected:
            self._in_warning = False
        if level is None:
            return None
        finding = self._finding(level, event_time, before)
        if level == "drift":
            self._segment = stats.Var()
        return finding

    def _stats(self) -> dict[str, float]:
        return {**_summary(self._segment), **self.detector.stats()} if self._segment.mean.n else {}

    def _finding(self, level: Level, event_time: datetime, before: dict[str, float]) -> Finding:
        verdict = self.gate.admit(level, event_time.timestamp())
        latest = stats.Var()
        for value in self._latest_values:
            latest.update(value)
        after = {**(_summary(latest) if latest.mean.n else {}), **self.detector.stats()}
        alert = DriftAlert(
            **self.subject,
            level=level,
            detector=self.detector.name,
            params=self.detector.params,
            position=self.n_seen,
            event_time=event_time,
            stats_before=before,
            stats_after=after,
            escalated=verdict.escalated,
            recent_drifts=verdict.recent_drifts,
        )
        return Finding(alert, verdict.send)


def feature_subject(stream: str, feature: str) -> dict[str, Any]:
    """Alert fields for data drift of one (stream, feature)."""
    return {"kind": "data", "key": f"data:{stream}:{feature}", "stream": stream, "feature": feature}


def model_subject(deployment: str, stream: str, outcome: VariantOutput) -> dict[str, Any]:
    """Alert fields for concept drift of the model version behind `outcome`."""
    return {
        "kind": "concept",
        "key": f"concept:{outcome.model_name}:{outcome.model_version}",
        "stream": stream,
        "model_name": outcome.model_name,
        "model_version": outcome.model_version,
        "deployment": deployment,
    }


def notifies(alert: DriftAlert, levels: list[str]) -> bool:
    """Whether `alert` goes to the webhooks configured for `levels` (``escalated``: any level
    once the escalation rule is met)."""
    return alert.level in levels or (alert.escalated and "escalated" in levels)
