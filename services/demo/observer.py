"""What the demo watches: counts, rolling accuracy per variant, alerts, the challenger, the
promotion policy's decisions and champion switches.

Pure bookkeeping fed with decoded records, so the live view, the report and the tests read one
set of numbers.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from shared.events import DriftAlert, LabeledPrediction, Prediction, PromotionDecision
from shared.retraining import RetrainResult

ROLLING_WINDOW = 300


def event_index(event_id: str) -> int:
    """The replay index encoded in a demo event id (``loan-<seed>-<index>``)."""
    return int(event_id.rsplit("-", 1)[1])


@dataclass
class VariantTrack:
    """One variant's correctness over the stream, in event order of arrival."""

    window: deque[bool] = field(default_factory=lambda: deque(maxlen=ROLLING_WINDOW))
    points: list[tuple[int, float]] = field(default_factory=list)
    """(event index, rolling accuracy) after each labeled outcome."""
    correct: int = 0
    total: int = 0

    def add(self, index: int, correct: bool) -> None:
        """Count one labeled outcome."""
        self.window.append(correct)
        self.correct += correct
        self.total += 1
        self.points.append((index, self.rolling))

    @property
    def rolling(self) -> float:
        """Accuracy over the last `ROLLING_WINDOW` labeled outcomes."""
        return sum(self.window) / len(self.window) if self.window else float("nan")


@dataclass
class ChampionSwitch:
    """The promotion policy moved the champion alias to the retrained challenger."""

    at_index: int
    version: str
    trained_on: int
    decision: PromotionDecision
    served_from: int | None = None
    """Index of the first event whose labeled champion answer came from the new version (the
    router picks up a moved alias on its refresh timer)."""


@dataclass
class DemoObserver:
    """Everything the live view and the final report show."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    predictions: int = 0
    answered: int = 0
    """Events the champion answered (predictions of the champion's role)."""
    labeled: int = 0
    malformed: int = 0
    """Malformed records the replay sent beside the events (`Scenario.malformed_every`)."""
    dead_letters: int = 0
    variants: dict[str, VariantTrack] = field(default_factory=dict)
    champion_versions: dict[str, VariantTrack] = field(default_factory=dict)
    """The champion's labeled answers by model version."""
    alerts: list[DriftAlert] = field(default_factory=list)
    alert_indices: list[int] = field(default_factory=list)
    switches: list[ChampionSwitch] = field(default_factory=list)
    challenger: RetrainResult | None = None
    """What the retrain on the drift alert's window registered and deployed."""
    decisions: list[PromotionDecision] = field(default_factory=list)
    webhook_calls: int = 0
    retrain_status: str = "waiting for a concept-drift alert"
    _rates: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=20))

    def on_prediction(self, prediction: Prediction) -> None:
        """Count a prediction, and the event as answered when it is the champion's."""
        self.predictions += 1
        if prediction.outcome.role == "champion":
            self.answered += 1

    @property
    def backlog(self) -> int:
        """Events sent that the champion has not answered yet."""
        return self.sent - self.answered

    def on_labeled(self, record: LabeledPrediction) -> None:
        """Score every variant's output against the label."""
        self.labeled += 1
        index = event_index(record.event_id)
        for outcome in record.outcomes:
            if outcome.output is None:
                continue
            correct = bool(outcome.output) == bool(record.label)
            self.variants.setdefault(outcome.variant, VariantTrack()).add(index, correct)
            if outcome.role == "champion":
                versions = self.champion_versions.setdefault(outcome.model_version, VariantTrack())
                versions.add(index, correct)
                for switch in self.switches:
                    if switch.version == outcome.model_version and switch.served_from is None:
                        switch.served_from = index

    def on_decision(self, decision: PromotionDecision) -> None:
        """Remember the policy's decision; a promotion is a champion switch."""
        self.decisions.append(decision)
        if decision.action == "promote":
            trained_on = self.challenger.rows if self.challenger is not None else 0
            self.switches.append(
                ChampionSwitch(
                    self.last_sent_index, decision.challenger_version, trained_on, decision
                )
            )

    def labeled_outcomes(self, variant: str) -> int:
        """How many of `variant`'s answers have been labeled."""
        track = self.variants.get(variant)
        return track.total if track is not None else 0

    def on_alert(self, alert: DriftAlert, index: int) -> None:
        """Remember an alert and where in the stream (event index) it fired."""
        self.alerts.append(alert)
        self.alert_indices.append(index)

    def rates(self) -> tuple[float, float]:
        """Events/s sent and predictions/s written, over the last few seconds."""
        now = time.monotonic()
        self._rates.append((now, self.sent, self.predictions))
        then, sent, predicted = self._rates[0]
        elapsed = max(now - then, 1e-9)
        return (self.sent - sent) / elapsed, (self.predictions - predicted) / elapsed

    @property
    def last_sent_index(self) -> int:
        """Index of the newest event the replay sent."""
        return self.sent - 1
