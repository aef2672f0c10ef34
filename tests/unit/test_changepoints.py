"""Change-point scores on cases small enough to compute by hand (TCPDBench's own examples)."""

from __future__ import annotations

import doctest

import pytest

from loadtest import changepoints
from loadtest.changepoints import (
    StreamScore,
    cover,
    covering,
    f_measure,
    segments,
    stream_score,
    true_positives,
)


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(changepoints).failed == 0


def test_a_prediction_matches_one_true_change_point_within_the_margin() -> None:
    assert true_positives([10, 12], [11], margin=5) == {10}
    assert true_positives([10], [16], margin=5) == set()
    assert true_positives([10], [15], margin=5) == {10}


def test_f_measure_averages_recall_over_annotators_and_counts_the_start() -> None:
    # X = {0, 10}; union {0, 10, 50}: P = 2/2. Recall: {0} 1, {0, 10} 1, {0, 50} 1/2 -> 5/6.
    f, precision, recall = f_measure({"a": [], "b": [10], "c": [50]}, [10])
    assert precision == 1.0
    assert recall == pytest.approx(5 / 6)
    assert f == pytest.approx(2 * (5 / 6) / (1 + 5 / 6))


def test_the_zero_method_has_full_precision_and_the_start_as_its_only_recall() -> None:
    f, precision, recall = f_measure({"a": [], "b": [10], "c": [50]}, [])
    assert (precision, recall) == (1.0, pytest.approx(2 / 3))
    assert f == pytest.approx(0.8)


def test_false_predictions_lower_precision_only() -> None:
    # X = {0, 10, 30, 70}; union {0, 10}: P = 2/4, R = 1.
    f, precision, recall = f_measure({"a": [10]}, [10, 30, 70])
    assert (precision, recall) == (0.5, 1.0)
    assert f == pytest.approx(2 / 3)


def _set_cover(truth: list[set[int]], predicted: list[set[int]]) -> float:
    """TCPDBench's covering on sets, to check the range arithmetic against."""
    n = sum(map(len, truth))
    return sum(len(r) * max(len(r & p) / len(r | p) for p in predicted) for r in truth) / n


@pytest.mark.parametrize(
    ("truth", "predicted", "expected"),
    [
        ([{1, 2, 3}, {4, 5, 6}], [{1, 2, 3}, {4, 5}, {6}], 5 / 6),
        ([{1, 2, 3, 4, 5, 6}], [{1, 2, 3, 4}, {5, 6}], 2 / 3),
        ([{1, 2, 3}, {4, 5, 6}], [{1, 2}, {3, 4}, {5, 6}], 2 / 3),
        ([{1}, {2}, {3}, {4, 5, 6}], [{1, 2, 3, 4, 5, 6}], 1 / 3),
    ],
)
def test_cover_matches_tcpdbench_examples(
    truth: list[set[int]], predicted: list[set[int]], expected: float
) -> None:
    def as_ranges(parts: list[set[int]]) -> list[range]:
        return [range(min(p), max(p) + 1) for p in parts]

    assert cover(as_ranges(truth), as_ranges(predicted)) == pytest.approx(expected)
    assert _set_cover(truth, predicted) == pytest.approx(expected)


def test_covering_averages_annotators_and_is_one_for_a_perfect_segmentation() -> None:
    assert covering({"a": [3, 5]}, [3, 5], 8) == 1.0
    # a: [0,3) [3,6) by [0,4) [4,6): (3 * 3/4 + 3 * 2/3) / 6; b: no change, by the same: 4/6.
    expected = ((3 * 3 / 4 + 3 * 2 / 3) / 6 + 4 / 6) / 2
    assert covering({"a": [3], "b": []}, [4], 6) == pytest.approx(expected)


def test_segments_ignore_the_start_and_points_outside_the_series() -> None:
    assert segments([0, 3, 9], 6) == [range(0, 3), range(3, 6)]
    assert segments([], 4) == [range(0, 4)]


def test_stream_score_counts_delays_false_alarms_and_misses() -> None:
    assert stream_score([100, 200, 300], [50, 104, 110, 290]) == StreamScore(
        delays=(4, 90), false_alarms=2, misses=1
    )
    assert stream_score([], [5, 6]) == StreamScore(delays=(), false_alarms=2, misses=0)
