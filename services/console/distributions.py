"""Each declared feature's distribution now against a reference, for the stream page: bounded
samples of the values on ``features``, their histograms, the population stability index between
them, and the inline SVG that shows both.

The reference is the first `sample` values of a feature the console saw after it started, kept
until an editor resets it; the recent window is the last `sample` values. Reading from the start
makes the reference cost nothing to build (no replay of a topic that may hold days of events)
and answers the question an operator asks on opening the page: has the feature moved since I
started looking, or since I reset the reference after the last change."""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from itertools import pairwise

from shared.events import FeatureEvent, FeatureType, StreamSchema
from shared.psi import psi

Value = float | str
"""A kept value: a number of a numeric feature, the text of a category or a flag."""


@dataclass
class Sample:
    """One feature's reference (the first `size` values seen) and recent window (the last)."""

    size: int
    reference: list[Value] = field(default_factory=list)
    recent: deque[Value] = field(init=False)

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.size)

    def add(self, value: Value) -> None:
        """Keep a value in the reference until it is full, and in the recent window always."""
        if len(self.reference) < self.size:
            self.reference.append(value)
        self.recent.append(value)


@dataclass
class Distributions:
    """Samples of every declared feature of every declared stream: at most two times `sample`
    values per feature, whatever the traffic."""

    sample: int
    bins: int
    samples: dict[tuple[str, str], Sample] = field(default_factory=dict)

    def add(self, event: FeatureEvent, stream: StreamSchema | None) -> None:
        """Keep the declared features' values of an event of a declared stream; a feature the
        event lacks (an optional one) is passed by."""
        if stream is None:
            return
        for spec in stream.features:
            value = event.features.get(spec.name)
            if value is None:
                continue
            key = (stream.name, spec.name)
            if key not in self.samples:
                self.samples[key] = Sample(self.sample)
            self.samples[key].add(_kept(value, spec.type))

    def reset(self, stream: str) -> None:
        """Start a stream's references again from the next values."""
        for key in [k for k in self.samples if k[0] == stream]:
            del self.samples[key]

    def compare(self, stream: StreamSchema) -> list[Comparison]:
        """Each declared feature of `stream` with values: its histograms and their distance."""
        found = []
        for spec in stream.features:
            kept = self.samples.get((stream.name, spec.name))
            if kept is None:
                continue
            found.append(
                compare(spec.name, spec.type, kept.reference, list(kept.recent), self.bins)
            )
        return found


def _kept(value: float | int | str | bool, kind: FeatureType) -> Value:
    if kind == "numeric" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Comparison:
    """One feature's reference and recent shares over the same bins or categories."""

    feature: str
    labels: list[str]
    """A bin's range (numeric) or a category, in order."""
    reference: list[float]
    recent: list[float]
    reference_n: int
    recent_n: int
    psi: float
    edges: list[float] | None = None
    """The bins' edges of a numeric feature; None for categories."""


def compare(
    feature: str,
    kind: FeatureType,
    reference: Sequence[Value],
    recent: Sequence[Value],
    bins: int,
) -> Comparison:
    """The shares of both samples over shared bins (numbers: `bins` of equal width over both
    samples' range) or categories (the reference's most common first), and their PSI."""
    numbers = [v for v in (*reference, *recent) if isinstance(v, float)]
    edges: list[float] | None = None
    if kind == "numeric" and numbers and len(numbers) == len(reference) + len(recent):
        edges = bin_edges(numbers, bins)
        labels = [f"{a:.3g}…{b:.3g}" for a, b in pairwise(edges)]
        ref_shares = numeric_shares([float(v) for v in reference], edges)
        new_shares = numeric_shares([float(v) for v in recent], edges)
    else:
        seen = Counter(str(v) for v in reference)
        labels = [c for c, _ in seen.most_common()]
        labels += sorted({str(v) for v in recent} - set(seen))
        ref_shares = category_shares([str(v) for v in reference], labels)
        new_shares = category_shares([str(v) for v in recent], labels)
    return Comparison(
        feature,
        labels,
        ref_shares,
        new_shares,
        len(reference),
        len(recent),
        psi(ref_shares, new_shares) if reference and recent else 0.0,
        edges,
    )


def bin_edges(values: Sequence[float], bins: int) -> list[float]:
    """`bins` + 1 edges of equal width from the lowest value to the highest; one bin when all
    values are equal."""
    low, high = min(values), max(values)
    if high == low:
        return [low, high]
    width = (high - low) / bins
    return [low + i * width for i in range(bins)] + [high]


def numeric_shares(values: Sequence[float], edges: Sequence[float]) -> list[float]:
    """The share of `values` in each bin between `edges` (the last bin holds its upper edge)."""
    counts = [0] * (len(edges) - 1)
    for value in values:
        counts[min(max(bisect_right(edges, value) - 1, 0), len(counts) - 1)] += 1
    return [c / len(values) if values else 0.0 for c in counts]


def category_shares(values: Sequence[str], categories: Sequence[str]) -> list[float]:
    """The share of `values` that is each of `categories`."""
    counts = Counter(values)
    return [counts[c] / len(values) if values else 0.0 for c in categories]


REFERENCE_COLOUR, RECENT_COLOUR = "#999999", "#1f77b4"


def distribution_chart(comparison: Comparison, width: int = 420) -> str:
    """An inline SVG of a feature's reference and recent shares side by side in each bin or
    category, with the PSI; empty text when there is nothing to draw."""
    count = len(comparison.labels)
    if count == 0:
        return ""
    height, pad, top = 140, 24, max(*comparison.reference, *comparison.recent, 0.01)
    slot = (width - 2 * pad) / count
    bar = slot * 0.4
    name = escape(comparison.feature)
    parts = [
        f'<svg class="distribution" data-feature="{name}" viewBox="0 0 {width} {height + 36}" '
        f'width="{width}" role="img" aria-label="{name}: reference and recent distribution">',
        f'<text x="{pad}" y="12" font-size="12">{name} · PSI {comparison.psi:.3f} · '
        f"reference n={comparison.reference_n}, recent n={comparison.recent_n}</text>",
        f'<line x1="{pad}" y1="{height}" x2="{width - pad}" y2="{height}" stroke="#999"/>',
    ]
    for i, (label, ref, new) in enumerate(
        zip(comparison.labels, comparison.reference, comparison.recent, strict=True)
    ):
        x = pad + i * slot + slot * 0.1
        for offset, share, colour in ((0.0, ref, REFERENCE_COLOUR), (bar, new, RECENT_COLOUR)):
            h = share / top * (height - 2 * pad)
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{height - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{escape(label)}: '
                f"{share:.1%}</title></rect>"
            )
        if comparison.edges is None and count <= 12:
            shown = escape(label[: max(int(slot / 6), 1)])
            parts.append(f'<text x="{x:.1f}" y="{height + 12}" font-size="9">{shown}</text>')
    if comparison.edges is not None:
        low, high = comparison.edges[0], comparison.edges[-1]
        parts.append(
            f'<text x="{pad}" y="{height + 12}" font-size="9">{low:.4g}</text>'
            f'<text x="{width - pad}" y="{height + 12}" font-size="9" text-anchor="end">'
            f"{high:.4g}</text>"
        )
    legend = height + 30
    parts.append(
        f'<rect x="{pad}" y="{legend - 9}" width="10" height="10" fill="{REFERENCE_COLOUR}"/>'
        f'<text x="{pad + 14}" y="{legend}" font-size="11">reference</text>'
        f'<rect x="{pad + 90}" y="{legend - 9}" width="10" height="10" fill="{RECENT_COLOUR}"/>'
        f'<text x="{pad + 104}" y="{legend}" font-size="11">recent</text></svg>'
    )
    return "".join(parts)
