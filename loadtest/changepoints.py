"""Change-point scores as TCPD defines them, and the streaming scores an operator feels.

F1 and covering follow van den Burg & Williams (2020), "An Evaluation of Change Point Detection
Algorithms", and their TCPDBench code: locations are 0-based indices of the first value of a new
segment, every annotator's set and the predictions count the start (0) as a change point, a
prediction within `margin` of a true change point matches it (each prediction at most once),
precision is measured against the union of the annotations and recall is averaged over
annotators, so a method is not punished for missing what only one annotator saw.

Detection delay, false alarms and misses read alarms in the order a stream detector raises them:
an alarm belongs to the latest true change at or before it, the first such alarm is its
detection, and an alarm before any change or a second alarm for one change is a false alarm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def true_positives(truth: Iterable[int], predictions: Iterable[int], margin: int = 5) -> set[int]:
    """The true change points matched by a prediction within `margin`, each prediction used once
    (the closest free one), as TCPDBench matches them."""
    free = set(predictions)
    matched = set()
    for tau in sorted(truth):
        close = sorted((abs(tau - x), x) for x in free if abs(tau - x) <= margin)
        if close:
            matched.add(tau)
            free.remove(close[0][1])
    return matched


def f_measure(
    annotations: Mapping[str, Iterable[int]],
    predictions: Iterable[int],
    margin: int = 5,
    alpha: float = 0.5,
) -> tuple[float, float, float]:
    """(F, precision, recall) of `predictions` against every annotator's change points.

    Examples
    --------
    >>> f_measure({"a": [10, 20], "b": [11, 20], "c": [10], "d": [0, 5]}, [10, 20])[0]
    1.0
    >>> round(f_measure({"a": [], "b": [10], "c": [50]}, [10])[0], 4)
    0.9091

    """
    per_annotator = [set(points) | {0} for points in annotations.values()]
    if not per_annotator:
        raise ValueError("need at least one annotator")
    found = set(predictions) | {0}
    union = set().union(*per_annotator)
    precision = len(true_positives(union, found, margin)) / len(found)
    recall = sum(
        len(true_positives(points, found, margin)) / len(points) for points in per_annotator
    ) / len(per_annotator)
    denominator = alpha * recall + (1 - alpha) * precision
    return (precision * recall / denominator if denominator else 0.0), precision, recall


def segments(locations: Iterable[int], n: int) -> list[range]:
    """The partition of positions 0..n-1 that change points at `locations` make.

    >>> segments([3, 5], 8)
    [range(0, 3), range(3, 5), range(5, 8)]

    """
    bounds = sorted({cp for cp in locations if 0 < cp < n})
    return [range(a, b) for a, b in zip([0, *bounds], [*bounds, n], strict=True)]


def _jaccard(a: range, b: range) -> float:
    inter = max(0, min(a.stop, b.stop) - max(a.start, b.start))
    return inter / (len(a) + len(b) - inter)


def cover(truth: Sequence[range], predicted: Sequence[range]) -> float:
    """How well `predicted` covers `truth` (Arbelaez et al. 2011, eq. 8): each true segment
    weighted by its length, scored by its best Jaccard overlap with a predicted one."""
    n = sum(len(r) for r in truth)
    return sum(len(r) * max(_jaccard(r, p) for p in predicted) for r in truth) / n


def covering(annotations: Mapping[str, Iterable[int]], predictions: Iterable[int], n: int) -> float:
    """Mean over annotators of how well the predictions' segments cover theirs.

    >>> round(covering({"a": [3]}, [4], 6), 4)
    0.7083

    """
    if not annotations:
        raise ValueError("need at least one annotator")
    found = segments(predictions, n)
    scores = [cover(segments(points, n), found) for points in annotations.values()]
    return sum(scores) / len(scores)


@dataclass(frozen=True, slots=True)
class StreamScore:
    """How a stream detector's alarms meet known change points."""

    delays: tuple[int, ...]
    """Per detected change: values from the change to its first alarm."""
    false_alarms: int
    """Alarms before any change, or after the first one for the same change."""
    misses: int
    """Changes with no alarm before the next change (or the end)."""


def stream_score(changes: Sequence[int], alarms: Iterable[int]) -> StreamScore:
    """Score alarm positions (0-based index of the value that raised each) against `changes`.

    >>> stream_score([100, 200], [50, 104, 110, 290])
    StreamScore(delays=(4, 90), false_alarms=2, misses=0)

    """
    bounds = sorted(changes)
    detected: dict[int, int] = {}
    false_alarms = 0
    for alarm in sorted(alarms):
        owner = next((cp for cp in reversed(bounds) if cp <= alarm), None)
        if owner is None or owner in detected:
            false_alarms += 1
        else:
            detected[owner] = alarm - owner
    return StreamScore(
        delays=tuple(detected[cp] for cp in bounds if cp in detected),
        false_alarms=false_alarms,
        misses=len(bounds) - len(detected),
    )
