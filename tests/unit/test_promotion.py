"""The promotion policy: waits without evidence, promotes a clearly better challenger, rolls back
a worse one or one that regresses on a tier."""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import norm

from shared.promotion import (
    ErrorCount,
    PromotionPolicy,
    VariantRecord,
    decide,
    z_test,
)


def _record(
    error_rate: float, n: int, seed: int, tiers: dict[str, float] | None = None
) -> VariantRecord:
    rng = random.Random(seed)
    record = VariantRecord()
    names = list(tiers or {})
    for i in range(n):
        tier = names[i % len(names)] if names else None
        rate = tiers[tier] if tier is not None else error_rate
        record.add(rng.random() < rate, tier)
    return record


def test_z_test_matches_textbook_values() -> None:
    champion, challenger = ErrorCount(errors=120, total=1000), ErrorCount(errors=90, total=1000)
    z, p = z_test(champion, challenger)
    pooled = 210 / 2000
    expected_z = (0.12 - 0.09) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert z == pytest.approx(expected_z)
    assert p == pytest.approx(norm.sf(expected_z))


def test_waits_with_too_few_labels() -> None:
    decision = decide(_record(0.3, 100, 1), _record(0.05, 100, 2), PromotionPolicy(), 0)
    assert decision.action == "wait"
    assert "fewer than 500" in decision.reason


def test_promotes_a_clearly_better_challenger() -> None:
    decision = decide(_record(0.30, 2000, 1), _record(0.10, 2000, 2), PromotionPolicy(), 0)
    assert decision.action == "promote"
    assert decision.p_value < 0.05 / 20
    assert decision.challenger_error < decision.champion_error


def test_rolls_back_a_clearly_worse_challenger() -> None:
    decision = decide(_record(0.10, 2000, 1), _record(0.30, 2000, 2), PromotionPolicy(), 0)
    assert decision.action == "rollback"
    assert decision.reason == "challenger is significantly worse"


def test_waits_on_a_tie_then_rolls_back_at_the_horizon() -> None:
    policy = PromotionPolicy(max_samples=3000)
    assert decide(_record(0.2, 1000, 1), _record(0.2, 1000, 2), policy, 0).action == "wait"
    final = decide(_record(0.2, 3000, 3), _record(0.2, 3000, 4), policy, 0)
    assert final.action == "rollback"
    assert "no clear improvement" in final.reason


def test_the_last_planned_look_rolls_back_and_looks_before_min_samples_do_not_count() -> None:
    """Only `max_looks` tests at alpha / max_looks keep the overall level: looking more often
    than planned must not buy extra chances."""
    policy = PromotionPolicy(max_looks=3, max_samples=10**9)
    early = decide(_record(0.2, 100, 1), _record(0.2, 100, 2), policy, 0)
    assert (early.action, early.tested) == ("wait", False)
    tie = (_record(0.2, 1000, 3), _record(0.2, 1000, 4))
    assert [decide(*tie, policy, looks).action for looks in (0, 1)] == ["wait", "wait"]
    last = decide(*tie, policy, 2)
    assert (last.action, last.tested) == ("rollback", True)
    assert last.reason == "no clear improvement in 3 looks"


def test_better_overall_but_worse_on_a_tier_is_rolled_back() -> None:
    champion = _record(0, 4000, 1, tiers={"basic": 0.30, "premium": 0.05})
    challenger = _record(0, 4000, 2, tiers={"basic": 0.05, "premium": 0.20})
    decision = decide(champion, challenger, PromotionPolicy(), 0)
    assert decision.action == "rollback"
    assert decision.reason == "worse on tier(s) premium"


def test_repeated_looks_at_equal_variants_rarely_promote() -> None:
    """Under the null hypothesis, evaluating after every 100 labels promotes in under alpha of
    seeded trials (the per-look level accounts for the peeking)."""
    policy = PromotionPolicy(min_samples=100, max_looks=20, max_samples=10**9)
    promoted = 0
    trials = 200
    for trial in range(trials):
        rng = random.Random(trial)
        a, b = VariantRecord(), VariantRecord()
        looks = 0
        for step in range(2000):
            a.add(rng.random() < 0.2)
            b.add(rng.random() < 0.2)
            if step % 100 == 99:
                decision = decide(a, b, policy, looks)
                looks += decision.tested
                if decision.action != "wait":
                    promoted += decision.action == "promote"
                    break
    assert promoted / trials <= policy.alpha
