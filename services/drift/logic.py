"""Drift monitoring without Kafka: which detector watches what, what it found, which finding
becomes an alert.

A :class:`Monitor` owns one detector over one key's stream of values (a (stream, feature) pair,
or a model version's errors). It reports the value at which the detector fires, with its 1-based
position, so the service reports drift at exactly the indices River gives in plain Python. It
reports a warning once when the detector enters its warning zone (River's ``warning_detected``
stays true for every value inside it). Its :class:`AlertGate` then decides which findings are
sent: a cooldown per key and level in event time, and the escalation rule "N drifts within T".

A drift alert carries its fresh-data window (:class:`~shared.events.DataWindow`): where the
detector places the start of the new behaviour, mapped back to the event time and source
offset of that value through the monitor's :class:`PositionHistory`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import orjson
from river import stats

from services.drift.detectors import Detector
from shared.errors import DriftlineError
from shared.events import (
    DataWindow,
    DriftAlert,
    FeatureEvent,
    Label,
    VariantOutput,
    alert_id_for,
)
from shared.replays import Applied
from shared.settings import DriftSettings

Level = Literal["warning", "drift"]
Estimate = Literal["detector_window", "warning_start", "alert_position"]
Task = Literal["classification", "regression"]
_RANK: dict[Level, int] = {"warning": 0, "drift": 1}
DEFAULT_DATA = {"kind": "adwin"}
DEFAULT_CATEGORICAL = {"kind": "psi"}
# Chosen on loadtest/drift_quality.py (docs/drift-quality.md): HDDM_A finds a 0.2 -> 0.5 error
# switch about 6x sooner than DDM at fewer false alarms, across base error rates.
DEFAULT_CONCEPT: dict[Task, dict[str, Any]] = {
    "classification": {"kind": "hddm_a"},
    "regression": {"kind": "adwin"},
}


class TaskMismatchError(DriftlineError):
    """A regression model answered with something that is not a number."""

    code = "task_mismatch"

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


class ShownVersions:
    """Which model versions' error gauges a worker shows, so a replaced version's series go.

    A version is dropped once its latest labeled answer is more than `stale_after_s` of event
    time behind the newest answer of any version this worker counted: by then every window its
    gauge reads has expired, and a version still serving would have answered (its deployment
    moved on, or its partition went to another worker).

    Examples
    --------
    >>> shown = ShownVersions(stale_after_s=100)
    >>> shown.saw(("dep", "fraud", "3"), 10.0), shown.saw(("dep", "fraud", "4"), 50.0)
    ([], [])
    >>> shown.saw(("dep", "fraud", "4"), 111.0)
    [('dep', 'fraud', '3')]

    """

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self._latest: dict[tuple[str, str, str], float] = {}
        self._newest = -math.inf

    def saw(self, version: tuple[str, str, str], time: float) -> list[tuple[str, str, str]]:
        """Note an answer of `version` (deployment, model, version) at event time `time`; the
        versions that became stale, no longer tracked."""
        self._latest[version] = max(time, self._latest.get(version, -math.inf))
        self._newest = max(self._newest, time)
        stale = [v for v, t in self._latest.items() if t < self._newest - self.stale_after_s]
        for gone in stale:
            del self._latest[gone]
        return stale


def _summary(var: stats.Var) -> dict[str, float]:
    n = var.mean.n
    return {"n": n, "mean": var.mean.get(), "std": math.sqrt(var.get()) if n > 1 else 0.0}


class Checkpoint(NamedTuple):
    """Where one value of a monitored stream came from."""

    position: int
    """1-based index of the value in the monitor's stream."""
    time: float
    """Its event time, in epoch seconds."""
    partition: int
    """Partition of the source topic (``features`` or ``predictions.labeled``) it came from."""
    offset: int
    """Its offset in that partition."""


class PositionHistory:
    """Where past values came from, kept for a number of positions logarithmic in the stream's
    length, densest for the latest ones.

    Level 0 holds the latest `per_level` positions. A position pushed out of level j moves up to
    level j + 1 if its zero-based index is a multiple of 2**(j + 1), else it is forgotten: level
    j holds positions 2**j apart, each level older than the ones below, and the first position
    is always kept. A stream of n values keeps about ``per_level * log2(n / per_level)``
    checkpoints (about 250 after a million values with the default 16), appended and carried in
    O(1) amortised time, so the whole history pickles cheaply with its monitor.

    Precision: `at_or_before` a position `age` values back from the latest returns a checkpoint
    at most ``age / (per_level - 1)`` positions earlier: exact for the latest `per_level`
    positions, and a window of any length starts at most about 7 % of that length early (never
    late, so a reader misses none of its values).

    Examples
    --------
    >>> history = PositionHistory(per_level=4)
    >>> for position in range(1, 101):
    ...     history.record(position, time=float(position), partition=0, offset=position - 1)
    >>> history.at_or_before(98).position, history.at_or_before(60).position
    (98, 57)
    >>> history.at_or_before(1)
    Checkpoint(position=1, time=1.0, partition=0, offset=0)

    """

    def __init__(self, per_level: int = 16) -> None:
        if per_level < 2:
            raise ValueError("'per_level' must be at least 2")
        self.per_level = per_level
        self._levels: list[list[tuple[int, float, int, int]]] = []

    def __len__(self) -> int:
        return sum(len(level) for level in self._levels)

    def record(self, position: int, time: float, partition: int, offset: int) -> None:
        """Remember value `position` (one more than the last recorded) and where it came from."""
        entry = (position, time, partition, offset)
        for j, level in enumerate(self._levels):
            level.append(entry)
            if len(level) <= self.per_level:
                return
            entry = level.pop(0)
            if (entry[0] - 1) % 2 ** (j + 1):
                return
        self._levels.append([entry])

    def at_or_before(self, position: int) -> Checkpoint:
        """The latest checkpoint at or before `position` (the first one if none is)."""
        if not self._levels:
            raise LookupError("no position recorded yet")
        for level in self._levels:
            if level[0][0] <= position:
                return Checkpoint(*level[bisect_right(level, position, key=_position) - 1])
        return Checkpoint(*self._levels[-1][0])


def _position(entry: tuple[int, float, int, int]) -> int:
    return entry[0]


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
    source_topic
        Full name of the topic the values come from, for the offsets of a drift's window.
    recent
        How many latest values the "after" statistics of an alert describe.

    """

    def __init__(
        self,
        detector: Detector,
        gate: AlertGate,
        subject: dict[str, Any],
        source_topic: str,
        recent: int = 50,
    ) -> None:
        self.detector = detector
        self.gate = gate
        self.subject = subject
        self.source_topic = source_topic
        self.recent = recent
        self.n_seen = 0
        self.applied = Applied()
        self.history = PositionHistory()
        self._warning_start: int | None = None
        self._segment = stats.Var()
        self._latest_values: deque[float] = deque(maxlen=recent)

    def already_seen(self, lineage: str, offset: int) -> bool:
        """Whether the value at `offset` of `lineage` (`shared.replays.lineage_of`) was counted
        before: a message redelivered, or re-sent by a replay upstream, after a crash must not
        feed the detector twice."""
        return not self.applied.first_time(lineage, offset)

    def update(
        self, x: float | str, event_time: datetime, partition: int, offset: int
    ) -> Finding | None:
        """Feed one value, read from `partition` and `offset` of the source topic; a finding
        when the detector fires or enters its warning zone."""
        before = self._stats()
        self.detector.update(x)
        self.n_seen += 1
        self.history.record(self.n_seen, event_time.timestamp(), partition, offset)
        if isinstance(x, float | int):
            self._segment.update(x)
            self._latest_values.append(float(x))
        if self.detector.drift_detected:
            finding = self._finding("drift", event_time, before, self._window())
            self._warning_start, self._segment = None, stats.Var()
            return finding
        if not self.detector.warning_detected:
            self._warning_start = None
        elif self._warning_start is None:
            self._warning_start = self.n_seen
            return self._finding("warning", event_time, before, None)
        return None

    def _window(self) -> DataWindow:
        """Where the new behaviour starts, by the best estimate the detector allows."""
        width = self.detector.window_width
        start: int
        estimated_by: Estimate
        if width:
            start, estimated_by = max(1, self.n_seen - width + 1), "detector_window"
        elif self._warning_start is not None:
            start, estimated_by = self._warning_start, "warning_start"
        else:
            start, estimated_by = self.n_seen, "alert_position"
        checkpoint = self.history.at_or_before(start)
        return DataWindow(
            start_time=datetime.fromtimestamp(checkpoint.time, UTC),
            start_position=checkpoint.position,
            estimated_by=estimated_by,
            offsets={self.source_topic: {checkpoint.partition: checkpoint.offset}},
        )

    def _stats(self) -> dict[str, float]:
        return {**_summary(self._segment), **self.detector.stats()} if self._segment.mean.n else {}

    def _finding(
        self,
        level: Level,
        event_time: datetime,
        before: dict[str, float],
        window: DataWindow | None,
    ) -> Finding:
        verdict = self.gate.admit(level, event_time.timestamp())
        latest = stats.Var()
        for value in self._latest_values:
            latest.update(value)
        after = {**(_summary(latest) if latest.mean.n else {}), **self.detector.stats()}
        alert = DriftAlert(
            alert_id=alert_id_for(
                self.subject["key"],
                self.subject.get("deployment"),
                self.detector.name,
                level,
                self.n_seen,
            ),
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
            window=window,
        )
        return Finding(alert, verdict.send)


def feature_subject(stream: str, feature: str) -> dict[str, Any]:
    """Alert fields for data drift of one (stream, feature)."""
    return {"kind": "data", "key": f"data:{stream}:{feature}", "stream": stream, "feature": feature}


ONLINE_VERSION = "online"


def watched_version(outcome: VariantOutput) -> str:
    """The version a concept detector follows: a registry version (a new one is a new model and
    starts a fresh detector), or ``online`` for an online model, whose snapshots are one model
    learning on (a detector per snapshot would restart every few hundred events)."""
    return ONLINE_VERSION if outcome.online else outcome.model_version


def concept_key(deployment: str, outcome: VariantOutput) -> bytes:
    """The table key of the concept monitor that watches `outcome`'s model version."""
    return orjson.dumps([deployment, outcome.model_name, watched_version(outcome)])


def model_subject(deployment: str, stream: str, outcome: VariantOutput) -> dict[str, Any]:
    """Alert fields for concept drift of the model (version) behind `outcome`."""
    version = watched_version(outcome)
    return {
        "kind": "concept",
        "key": f"concept:{outcome.model_name}:{version}",
        "stream": stream,
        "model_name": outcome.model_name,
        "model_version": version,
        "deployment": deployment,
    }


def alert_gate(own: DriftSettings) -> AlertGate:
    """A fresh gate with the cooldown and escalation of `own`."""
    return AlertGate(own.cooldown_s, own.escalate_after, own.escalate_within_s)


def data_monitor(
    own: DriftSettings, stream: str, feature: str, categorical: bool, source_topic: str
) -> Monitor:
    """The monitor a (stream, feature) starts with, its values read from `source_topic`."""
    return Monitor(
        data_detector(own.detectors, stream, feature, categorical),
        alert_gate(own),
        feature_subject(stream, feature),
        source_topic,
    )


def concept_monitor(
    own: DriftSettings,
    deployment: str,
    stream: str,
    outcome: VariantOutput,
    task: Task,
    source_topic: str,
) -> Monitor:
    """The monitor a model version behind `outcome` starts with, its errors read from
    `source_topic`."""
    return Monitor(
        concept_detector(own.concept_detectors, outcome.model_name, watched_version(outcome), task),
        alert_gate(own),
        model_subject(deployment, stream, outcome),
        source_topic,
    )


def with_offsets(alert: DriftAlert, looked_up: dict[str, dict[int, int]]) -> DriftAlert:
    """`alert` with its window's offsets completed by offsets looked up by time (per topic and
    partition); the exact offsets the monitor knows win over looked-up ones."""
    if alert.window is None:
        return alert
    exact = alert.window.offsets
    offsets = {
        topic: {**looked_up.get(topic, {}), **exact.get(topic, {})}
        for topic in looked_up.keys() | exact.keys()
    }
    return alert.model_copy(update={"window": alert.window.model_copy(update={"offsets": offsets})})


def notifies(alert: DriftAlert, levels: list[str]) -> bool:
    """Whether `alert` goes to the webhooks configured for `levels` (``escalated``: any level
    once the escalation rule is met)."""
    return alert.level in levels or (alert.escalated and "escalated" in levels)
