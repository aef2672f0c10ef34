"""A challenger's trial against the champion, without Kafka: which labeled outcomes count as
evidence, when the policy looks, and the decision record of each look.

Evidence is counted from the challenger's deployment onward: every challenger answer, and every
champion answer from the event time of the challenger's earliest answer on. A shadow answers
the same events as the champion, a canary its share of the entities while the champion answers
the others: the same traffic either way. Outcomes are counted one by one, not in pairs, because
the feedback join may label an event's variants in separate records. Only classification errors
count (the policy compares error rates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from services.drift.logic import error_of, task_of
from shared.events import LabeledPrediction, PromotionDecision, PromotionPolicy, VariantOutput
from shared.promotion import Action, Decision, VariantRecord, decide
from shared.replays import Applied


@dataclass
class Trial:
    """One challenger version's live record against the champion in one deployment."""

    deployment: str
    model_name: str
    variant: str
    version: str
    swapped: bool = False
    """A challenger on another backend (`shared.rollout.swap_challengers`): promoting it
    republishes the deployment with its URI as the champion's, no registry alias moves."""
    champion: VariantRecord = field(default_factory=VariantRecord)
    challenger: VariantRecord = field(default_factory=VariantRecord)
    champion_version: str | None = None
    """The champion's version in the last counted outcome."""
    decided: Action | None = None
    """``promote`` or ``rollback`` once the policy decided; nothing is counted after that."""
    reason: str = ""
    """Why the policy decided so."""
    executed: bool = False
    """Whether the decided action ran to its end."""
    started_at: datetime | None = None
    """Event time of the challenger's earliest answer counted so far: no champion outcome before
    it counts. Partitions deliver out of event-time order, so a challenger answer older than the
    first one moves it back instead of being dropped (the looks fall on exact counts)."""
    looks: int = 0
    """Looks that ran the significance test so far."""
    applied: Applied = field(default_factory=Applied)
    """What was counted, by lineage (`shared.replays`)."""

    def already_seen(self, lineage: str, offset: int) -> bool:
        """Whether the labeled record at `offset` of `lineage` was counted before (redelivered,
        or re-sent by a replay upstream); remembers it."""
        return not self.applied.first_time(lineage, offset)

    def count(self, labeled: LabeledPrediction, tier_feature: str | None) -> bool:
        """Count the event's champion and challenger outcomes as evidence; True when a challenger
        outcome was counted (the policy looks every so many of them)."""
        if self.decided is not None or task_of(labeled.label) != "classification":
            return False
        champion = next((o for o in labeled.outcomes if o.role == "champion"), None)
        challenger = next((o for o in labeled.outcomes if o.variant == self.variant), None)
        if challenger is not None and not self._is_challenger(challenger):
            challenger = None
        if challenger is not None and (
            self.started_at is None or labeled.event_time < self.started_at
        ):
            self.started_at = labeled.event_time
        if self.started_at is None or labeled.event_time < self.started_at:
            return False
        tier = _tier(labeled, tier_feature)
        if champion is not None and champion.output is not None:
            if (champion.model_name, champion.model_version) == (self.model_name, self.version):
                return False
            self.champion.add(_wrong(champion, labeled), tier)
            self.champion_version = champion.model_version
        if challenger is None:
            return False
        self.challenger.add(_wrong(challenger, labeled), tier)
        return True

    def look(self, policy: PromotionPolicy) -> Decision:
        """Ask the policy about the evidence so far, counting the look if it ran the test."""
        decision = decide(self.champion, self.challenger, policy, self.looks)
        self.looks += decision.tested
        return decision

    def settle(self, decision: Decision) -> bool:
        """Remember a promote or rollback (nothing is counted after it); False for a wait."""
        if decision.action == "wait":
            return False
        self.decided, self.reason = decision.action, decision.reason
        return True

    def _is_challenger(self, outcome: VariantOutput) -> bool:
        return (
            outcome.model_name == self.model_name
            and outcome.model_version == self.version
            and outcome.output is not None
        )

    def decision_event(self, decision: Decision) -> PromotionDecision:
        """The record of one look on ``decisions``, with the numbers it was decided on."""
        return PromotionDecision(
            deployment=self.deployment,
            model_name=self.model_name,
            champion_version=self.champion_version,
            challenger_version=self.version,
            challenger_variant=self.variant,
            action=decision.action,
            reason=decision.reason,
            champion_error=_finite(decision.champion_error),
            challenger_error=_finite(decision.challenger_error),
            champion_samples=decision.champion_samples,
            challenger_samples=decision.challenger_samples,
            z=_finite(decision.z),
            p_value=_finite(decision.p_value),
        )


def _wrong(outcome: VariantOutput, labeled: LabeledPrediction) -> bool:
    return error_of(outcome, labeled.label, "classification") == 1.0


def _tier(labeled: LabeledPrediction, tier_feature: str | None) -> str | None:
    if tier_feature is None or tier_feature not in labeled.features:
        return None
    return str(labeled.features[tier_feature])


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
