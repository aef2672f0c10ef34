"""Features' distributions on the stream page without a broker: bounded samples, shared bins,
category shares, the PSI and the chart."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from services.console.distributions import (
    Distributions,
    bin_edges,
    category_shares,
    compare,
    distribution_chart,
    numeric_shares,
)
from shared.events import FeatureEvent, FeatureSpec, StreamSchema
from shared.psi import psi

PAYMENTS = StreamSchema(
    name="payments",
    features=[
        FeatureSpec(name="amount"),
        FeatureSpec(name="country", type="categorical"),
        FeatureSpec(name="vip", type="boolean", required=False),
    ],
)


def _event(amount: float, country: str, stream: str = "payments") -> FeatureEvent:
    return FeatureEvent(
        event_id="e",
        stream=stream,
        entity_id="u",
        event_time=datetime.now(UTC),
        features={"amount": amount, "country": country, "undeclared": 1.0},
    )


def test_samples_keep_the_first_values_as_reference_and_the_last_as_recent() -> None:
    kept = Distributions(sample=3, bins=2)
    for i in range(10):
        kept.add(_event(float(i), "DE" if i < 5 else "FR"), PAYMENTS)
    kept.add(_event(99.0, "DE", stream="other"), None)
    assert set(kept.samples) == {("payments", "amount"), ("payments", "country")}
    amount = kept.samples[("payments", "amount")]
    assert (amount.reference, list(amount.recent)) == ([0.0, 1.0, 2.0], [7.0, 8.0, 9.0])
    amount_now, country_now = kept.compare(PAYMENTS)
    assert country_now.labels == ["DE", "FR"]
    assert (country_now.reference, country_now.recent) == ([1.0, 0.0], [0.0, 1.0])
    assert amount_now.psi > 0.25 and country_now.psi > 0.25
    kept.reset("payments")
    assert kept.compare(PAYMENTS) == []


def test_numbers_share_bins_over_both_samples_and_the_top_edge_counts() -> None:
    assert bin_edges([0.0, 1.0, 2.0], 2) == [0.0, 1.0, 2.0]
    assert bin_edges([5.0, 5.0], 4) == [5.0, 5.0]
    assert numeric_shares([0.0, 0.5, 1.0, 2.0], [0.0, 1.0, 2.0]) == [0.5, 0.5]
    assert numeric_shares([5.0], [5.0, 5.0]) == [1.0]
    assert numeric_shares([], [0.0, 1.0]) == [0.0]
    same = compare("amount", "numeric", [0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0], bins=2)
    assert same.labels == ["0…1.5", "1.5…3"] and same.psi == 0.0


def test_categories_are_ordered_by_the_reference_and_new_ones_follow() -> None:
    assert category_shares(["a", "b", "a", "a"], ["a", "b", "c"]) == [0.75, 0.25, 0.0]
    found = compare("country", "categorical", ["FR", "DE", "DE"], ["IT", "DE", "AT"], bins=10)
    assert found.labels == ["DE", "FR", "AT", "IT"]
    assert found.recent == pytest.approx([1 / 3, 0.0, 1 / 3, 1 / 3])


def test_psi_is_zero_for_the_same_shares_and_finite_with_empty_bins() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.6 - 0.5) * math.log(0.6 / 0.5)
    assert psi([0.5, 0.5], [0.4, 0.6]) == pytest.approx(expected)
    assert 0 < psi([1.0, 0.0], [0.0, 1.0]) < 20
    with pytest.raises(ValueError):
        psi([1.0], [0.5, 0.5])


def test_the_chart_draws_both_samples_per_bin_and_escapes_labels() -> None:
    found = compare("<x>", "categorical", ["<b>", "a"], ["a"], bins=10)
    chart = distribution_chart(found)
    assert chart.startswith("<svg") and chart.count("<rect") == 2 * 2 + 2
    assert "&lt;b&gt;" in chart and "<b>" not in chart and 'data-feature="&lt;x&gt;"' in chart
    assert distribution_chart(compare("x", "numeric", [], [], bins=3)) == ""
    numeric = distribution_chart(compare("x", "numeric", [0.0, 1.0], [2.5], bins=3))
    assert numeric.count("<rect") == 2 * 3 + 2 and ">0<" in numeric and ">2.5<" in numeric
