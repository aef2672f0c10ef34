"""Drift detectors over value streams, without Kafka."""

from __future__ import annotations

from datetime import datetime

from river.drift import ADWIN

from shared.events import DriftAlert, FeatureEvent


def numeric_values(event: FeatureEvent) -> dict[str, float]:
    """The features a value detector watches: numbers, not categories or flags."""
    return {
        name: float(value)
        for name, value in event.features.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


class FeatureDriftMonitor:
    """ADWIN over one (stream, feature)'s values; reports the value at which it fires."""

    def __init__(self, stream: str, feature: str, delta: float) -> None:
        self.stream = stream
        self.feature = feature
        self.detector = ADWIN(delta=delta)
        self.n_seen = 0

    @property
    def key(self) -> str:
        """What drifted, as the alert's key."""
        return f"data:{self.stream}:{self.feature}"

    def update(self, value: float, event_time: datetime) -> DriftAlert | None:
        """Feed one value; an alert when ADWIN cuts its window here."""
        before = self.detector.estimation
        self.detector.update(value)
        self.n_seen += 1
        if not self.detector.drift_detected:
            return None
        return DriftAlert(
            kind="data",
            level="drift",
            key=self.key,
            stream=self.stream,
            feature=self.feature,
            detector="ADWIN",
            params={"delta": self.detector.delta},
            position=self.n_seen,
            event_time=event_time,
            stats_before={"mean": before},
            stats_after={"mean": self.detector.estimation},
        )
