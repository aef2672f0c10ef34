"""Promotion on evidence: decide whether a challenger replaces the champion, keeps waiting, or
is rolled back, from both variants' live errors on the same labeled traffic.

The test is a one-sided two-proportion z-test. Because the decision is re-evaluated as labels
arrive (repeated looks inflate false positives), the significance level is split evenly over the
planned number of looks (Bonferroni), which keeps the overall false-promotion rate below `alpha`.
A challenger must also not be worse than the champion on any tier (a segment such as
``tier=premium``) by more than `max_tier_regression`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from shared.events import PromotionAction, PromotionPolicy

Action = PromotionAction


@dataclass
class ErrorCount:
    """Labeled outcomes of one variant: how many, and how many were wrong."""

    errors: int = 0
    total: int = 0

    def add(self, wrong: bool) -> None:
        """Count one labeled outcome."""
        self.errors += wrong
        self.total += 1

    @property
    def rate(self) -> float:
        """Error rate (NaN before any outcome)."""
        return self.errors / self.total if self.total else math.nan


@dataclass
class VariantRecord:
    """A variant's errors overall and per tier."""

    overall: ErrorCount = field(default_factory=ErrorCount)
    tiers: dict[str, ErrorCount] = field(default_factory=dict)

    def add(self, wrong: bool, tier: str | None = None) -> None:
        """Count one labeled outcome, in its tier too if it has one."""
        self.overall.add(wrong)
        if tier is not None:
            self.tiers.setdefault(tier, ErrorCount()).add(wrong)


@dataclass(frozen=True)
class Decision:
    """What the policy decided, with the numbers it decided on."""

    action: Action
    reason: str
    champion_error: float
    challenger_error: float
    champion_samples: int
    challenger_samples: int
    z: float
    p_value: float
    """One-sided p-value that the challenger is better (lower error)."""

    @property
    def tested(self) -> bool:
        """Whether this look ran the significance test (it counts toward `max_looks`)."""
        return not math.isnan(self.z)


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def z_test(champion: ErrorCount, challenger: ErrorCount) -> tuple[float, float]:
    """z statistic (positive: challenger errs less) and its one-sided p-value."""
    pooled = (champion.errors + challenger.errors) / (champion.total + challenger.total)
    variance = pooled * (1 - pooled) * (1 / champion.total + 1 / challenger.total)
    if variance == 0:
        difference = champion.rate - challenger.rate
        z = math.copysign(math.inf, difference) if difference else 0.0
    else:
        z = (champion.rate - challenger.rate) / math.sqrt(variance)
    return z, _normal_sf(z)


def decide(
    champion: VariantRecord, challenger: VariantRecord, policy: PromotionPolicy, looks_done: int
) -> Decision:
    """Promote, wait or roll back, by `policy`, on the two variants' records so far.

    `looks_done` counts the earlier looks that ran the test (`Decision.tested`): the level per
    look holds the overall rate below `alpha` only for `max_looks` looks, so the last of them
    rolls back a challenger that is not clearly better by then.
    """
    a, b = champion.overall, challenger.overall

    def decision(action: Action, reason: str, z: float = math.nan, p: float = math.nan) -> Decision:
        return Decision(action, reason, a.rate, b.rate, a.total, b.total, z, p)

    if min(a.total, b.total) < policy.min_samples:
        return decision("wait", f"fewer than {policy.min_samples} labeled outcomes per variant")
    z, p_better = z_test(a, b)
    level = policy.alpha / policy.max_looks
    regressed = _regressed_tiers(champion, challenger, policy)
    if regressed:
        return decision("rollback", f"worse on tier(s) {', '.join(regressed)}", z, p_better)
    if _normal_sf(-z) < level:
        return decision("rollback", "challenger is significantly worse", z, p_better)
    improvement = a.rate - b.rate
    if p_better < level and improvement >= policy.min_improvement:
        return decision(
            "promote",
            f"error {b.rate:.4f} vs {a.rate:.4f} (p={p_better:.2g} < {level:.2g})",
            z,
            p_better,
        )
    if looks_done + 1 >= policy.max_looks:
        return decision(
            "rollback", f"no clear improvement in {policy.max_looks} looks", z, p_better
        )
    if min(a.total, b.total) >= policy.max_samples:
        return decision("rollback", f"no clear improvement after {policy.max_samples}", z, p_better)
    return decision("wait", "not yet significant", z, p_better)


def _regressed_tiers(
    champion: VariantRecord, challenger: VariantRecord, policy: PromotionPolicy
) -> list[str]:
    return sorted(
        tier
        for tier, theirs in challenger.tiers.items()
        if (ours := champion.tiers.get(tier)) is not None
        and min(ours.total, theirs.total) >= policy.min_tier_samples
        and theirs.rate - ours.rate > policy.max_tier_regression
    )
