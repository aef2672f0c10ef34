"""How right the drift service's detectors are: synthetic streams with known change points, the
concept-drift switch of issue 17, and TCPD's annotated real series (van den Burg & Williams
2020), scored as `loadtest.changepoints` defines; writes docs/drift-quality.md and .json.

Every detector runs through the service's own pure layer (`services.drift.logic.Monitor` over a
`services.drift.detectors.Detector`), fed as the drift worker feeds it, with no cooldown: an
alarm is every ``drift`` finding, its detection is the value that raised it, and the change point
it claims is the start of the alert's fresh-data window. A multivariate series gets one monitor
per dimension, as the service keeps one per feature, and the union of their alarms.

TCPD's series are read from a copy of its repository (``annotations.json`` and
``datasets/<name>/<name>.json``, the ones shipped with data): ``make bench-drift`` looks in
``.driftline/tcpd``; without it the real-series section says it was not run.

    .venv/bin/python -m loadtest.drift_quality --tcpd .driftline/tcpd --seeds 5
"""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from loadtest.changepoints import covering, f_measure, stream_score
from services.drift.detectors import Detector
from services.drift.logic import AlertGate, Monitor, feature_subject

Value = float | str
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SOURCE = "features"
MARGIN = 5
TCPD_DEFAULTS = Path(__file__).with_name("tcpd_default_f1.json")
"""TCPD's published default-parameter F1 per series: its best method's and its zero's."""


@dataclass(frozen=True, slots=True)
class Series:
    """One annotated series: its dimensions (None where a value is missing) and, per annotator,
    the 0-based indices where a new segment begins."""

    name: str
    dims: tuple[tuple[Value | None, ...], ...]
    annotations: dict[str, list[int]]

    @property
    def n(self) -> int:
        """Values per dimension."""
        return len(self.dims[0])

    @property
    def categorical(self) -> bool:
        """Whether its values are categories."""
        return any(isinstance(v, str) for dim in self.dims for v in dim)


@dataclass(frozen=True, slots=True)
class Method:
    """A detector setting as the service takes it, under the name the report gives it."""

    label: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def takes(self, series: Series) -> bool:
        """Whether this detector reads the series' kind of values."""
        if self.kind == "zero":
            return True
        return (Detector(self.kind).input == "category") == series.categorical


@dataclass(frozen=True, slots=True)
class Alarms:
    """Where a method's drift findings were raised, and where each placed its change."""

    detections: list[int]
    locations: list[int]


ZERO = Method("zero", "zero")
DATA_METHODS = (
    ZERO,
    Method("adwin", "adwin"),
    Method("kswin", "kswin", {"seed": 1}),
    Method("page_hinkley", "page_hinkley"),
    Method("bocpd", "bocpd"),
    Method("bocpd (hazard=0.01)", "bocpd", {"hazard": 0.01}),
    Method("bocpd (threshold=0.9)", "bocpd", {"threshold": 0.9}),
    Method("psi", "psi"),
)
"""The "zero" baseline, River's value detectors at their defaults, BOCPD at its defaults and
with a higher hazard or a lower threshold (how its defaults were chosen), and PSI."""
CONCEPT_METHODS = (
    Method("ddm", "ddm"),
    Method("eddm", "eddm"),
    Method("hddm_a", "hddm_a"),
    Method("hddm_w", "hddm_w"),
    Method("hddm_w (drift_confidence=1e-4)", "hddm_w", {"drift_confidence": 1e-4}),
    Method("fhddm", "fhddm"),
    Method("adwin (errors)", "adwin"),
    Method("bocpd (errors)", "bocpd"),
)
"""River's binary detectors at their defaults (and HDDM_W made stricter), ADWIN on the 0/1
errors, BOCPD on them."""
STABLE_RATES = (0.05, 0.2, 0.4)
"""Error rates of the stable runs that count a concept detector's false alarms."""


def alarms(method: Method, series: Series) -> Alarms:
    """Run one monitor per dimension through the service's logic; every drift finding."""
    found: dict[int, int] = {}
    if method.kind == "zero":
        return Alarms([], [])
    for j, dim in enumerate(series.dims):
        monitor = Monitor(
            Detector(method.kind, method.params),
            AlertGate(cooldown_s=0.0, escalate_after=10**9, escalate_within_s=1.0),
            feature_subject(series.name, f"d{j}"),
            SOURCE,
        )
        for index, value in enumerate(dim):
            if value is None:
                continue
            finding = monitor.update(value, T0 + timedelta(seconds=index), 0, index)
            if finding is None or finding.alert.level != "drift":
                continue
            window = finding.alert.window
            found.setdefault(index, window.offsets[SOURCE][0] if window else index)
    detections = sorted(found)
    return Alarms(detections, sorted({found[d] for d in detections}))


# Synthetic streams: each family a function of a seeded generator, returning values and the
# change points (0-based index of each new segment's first value).


def _segments(
    rng: random.Random, cps: Sequence[int], n: int, draw: Callable[[random.Random, int], Value]
) -> list[Value]:
    bounds = [0, *cps, n]
    return [draw(rng, k) for k in range(len(bounds) - 1) for _ in range(bounds[k], bounds[k + 1])]


def _student_t(rng: random.Random, df: float) -> float:
    return rng.gauss(0, 1) / math.sqrt(rng.gammavariate(df / 2, 2) / df)


def mean_shifts(rng: random.Random) -> tuple[list[Value], list[int]]:
    """Gaussian noise whose mean moves by 0.5 to 2 standard deviations three times."""
    cps, means = [750, 1500, 2250], [0.0, 1.5, 0.5, 2.5]
    return _segments(rng, cps, 3000, lambda r, k: r.gauss(means[k], 1.0)), cps


def variance_changes(rng: random.Random) -> tuple[list[Value], list[int]]:
    """Zero-mean noise whose standard deviation goes 1, 3, 1, 0.3."""
    cps, sds = [750, 1500, 2250], [1.0, 3.0, 1.0, 0.3]
    return _segments(rng, cps, 3000, lambda r, k: r.gauss(0.0, sds[k])), cps


def trend(rng: random.Random) -> tuple[list[Value], list[int]]:
    """A steady trend (3 standard deviations over the series) with one jump of 3 half way."""
    values = [0.001 * i + (3.0 if i >= 1500 else 0.0) + rng.gauss(0, 1) for i in range(3000)]
    return list(values), [1500]


def seasonality(rng: random.Random) -> tuple[list[Value], list[int]]:
    """A daily-like cycle of period 48 (amplitude 2) with one level jump of 2 half way."""
    values = [
        2 * math.sin(2 * math.pi * i / 48) + (2.0 if i >= 1500 else 0.0) + rng.gauss(0, 0.5)
        for i in range(3000)
    ]
    return list(values), [1500]


def heavy_tails(rng: random.Random) -> tuple[list[Value], list[int]]:
    """Student-t noise with 2 degrees of freedom (no variance) and one mean jump of 3."""
    values = [(3.0 if i >= 1500 else 0.0) + _student_t(rng, 2.0) for i in range(3000)]
    return list(values), [1500]


def gradual_drift(rng: random.Random) -> tuple[list[Value], list[int]]:
    """The mean ramps from 0 to 2 over 200 values; the change point is where the ramp starts."""
    values = [2 * min(max(i - 1400, 0) / 200, 1.0) + rng.gauss(0, 1) for i in range(3000)]
    return list(values), [1400]


def categorical_shift(rng: random.Random) -> tuple[list[Value], list[int]]:
    """Categories a/b/c at 50/30/20 % moving to 20/30/50 % half way."""
    weights = [(0.5, 0.3, 0.2), (0.2, 0.3, 0.5)]
    return _segments(rng, [1500], 3000, lambda r, k: r.choices("abc", weights[k])[0]), [1500]


def stationary(rng: random.Random) -> tuple[list[Value], list[int]]:
    """10,000 values of Gaussian noise with no change at all."""
    return [rng.gauss(0, 1) for _ in range(10_000)], []


FAMILIES: dict[str, Callable[[random.Random], tuple[list[Value], list[int]]]] = {
    "mean shifts": mean_shifts,
    "variance changes": variance_changes,
    "trend": trend,
    "seasonality": seasonality,
    "heavy tails": heavy_tails,
    "gradual drift": gradual_drift,
    "categorical shift": categorical_shift,
    "stationary": stationary,
}


def synthetic(family: str, seed: int) -> Series:
    """One seeded stream of `family`, its true change points as the only annotator."""
    values, cps = FAMILIES[family](random.Random(f"{family}:{seed}"))
    return Series(f"{family}#{seed}", (tuple(values),), {"truth": cps})


def concept_switch(seed: int, stable: int = 5000, after: int = 5000) -> Series:
    """Errors of a model right 80 % of the time that drops to 50 % after `stable` outcomes."""
    rng = random.Random(f"concept:{seed}")
    errors = [float(rng.random() < (0.2 if i < stable else 0.5)) for i in range(stable + after)]
    return Series(f"concept#{seed}", (tuple(errors),), {"truth": [stable]})


def tcpd(directory: Path) -> list[Series]:
    """TCPD's annotated series that ship with data, less its synthetic quality-control ones."""
    annotations = json.loads((directory / "annotations.json").read_text())
    found = []
    for name in sorted(annotations):
        path = directory / "datasets" / name / f"{name}.json"
        if name.startswith("quality_control") or name == "bank" or not path.exists():
            continue
        data = json.loads(path.read_text())
        dims = tuple(
            tuple(None if v is None else float(v) for v in s["raw"]) for s in data["series"]
        )
        found.append(Series(name, dims, {k: list(v) for k, v in annotations[name].items()}))
    return found


# Scores.


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.fmean(values) if values else None


def segmentation_scores(method: Method, series: Series) -> dict[str, Any]:
    """F1 (margin 5) and covering of the method's change points, and how many alarms."""
    found = alarms(method, series)
    f1, precision, recall = f_measure(series.annotations, found.locations, MARGIN)
    return {
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "cover": covering(series.annotations, found.locations, series.n),
        "alarms": len(found.detections),
    }


def synthetic_report(
    methods: Sequence[Method], seeds: int, families: Sequence[str]
) -> list[dict[str, Any]]:
    """Per family and method: mean F1 and covering, delay, false alarms per 10,000, misses."""
    rows = []
    for family in families:
        streams = [synthetic(family, seed) for seed in range(seeds)]
        for method in (m for m in methods if m.takes(streams[0])):
            scores, delays, false_alarms, misses, changes = [], [], 0, 0, 0
            for series in streams:
                found = alarms(method, series)
                truth = series.annotations["truth"]
                f1, _, _ = f_measure(series.annotations, found.locations, MARGIN)
                scores.append((f1, covering(series.annotations, found.locations, series.n)))
                score = stream_score(truth, found.detections)
                delays.extend(score.delays)
                false_alarms += score.false_alarms
                misses += score.misses
                changes += len(truth)
            values = sum(s.n for s in streams)
            rows.append(
                {
                    "family": family,
                    "method": method.label,
                    "f1": _mean(f for f, _ in scores),
                    "cover": _mean(c for _, c in scores),
                    "mean_delay": _mean(delays),
                    "false_alarms_per_10k": 10_000 * false_alarms / values,
                    "misses": misses,
                    "changes": changes,
                }
            )
    return rows


def concept_report(methods: Sequence[Method], seeds: int) -> list[dict[str, Any]]:
    """Per detector on the 0.2 -> 0.5 error switch after 5,000 outcomes: delays, false alarms
    per 5,000 stable outcomes, misses."""
    streams = [concept_switch(seed) for seed in range(seeds)]
    rows = []
    for method in methods:
        delays, false_alarms, misses = [], 0, 0
        for series in streams:
            found = alarms(method, series)
            stable = series.annotations["truth"][0]
            score = stream_score([stable], found.detections)
            delays.extend(score.delays)
            false_alarms += sum(d < stable for d in found.detections)
            misses += score.misses
        rows.append(
            {
                "method": method.label,
                "mean_delay": _mean(delays),
                "median_delay": statistics.median(delays) if delays else None,
                "max_delay": max(delays, default=None),
                "false_alarms_per_5k_stable": false_alarms / len(streams),
                "misses": misses,
                "runs": len(streams),
            }
        )
    return rows


def stable_report(methods: Sequence[Method], runs: int, n: int = 5000) -> list[dict[str, Any]]:
    """Per detector and error rate in STABLE_RATES: false alarms per `n` stable outcomes, over
    `runs` seeded runs (a default must stay quiet on good and on poor models alike)."""
    rows = []
    for method in methods:
        row: dict[str, Any] = {"method": method.label, "runs": runs}
        for rate in STABLE_RATES:
            fired = 0
            for seed in range(runs):
                rng = random.Random(f"stable:{rate}:{seed}")
                errors = tuple(float(rng.random() < rate) for _ in range(n))
                fired += len(alarms(method, Series("stable", (errors,), {})).detections)
            row[f"false_alarms_at_{rate}"] = fired / runs
        rows.append(row)
    return rows


def real_report(methods: Sequence[Method], series: Sequence[Series]) -> list[dict[str, Any]]:
    """Per TCPD series and method: F1, covering and alarms."""
    return [
        {"series": s.name, "n": s.n, "method": m.label, **segmentation_scores(m, s)}
        for s in series
        for m in methods
        if m.takes(s)
    ]


# The report.


def _fmt(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, int]]) -> list[str]:
    lines = [
        "| " + " | ".join(title for title, _, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += [
        "| " + " | ".join(_fmt(row[key], digits) for _, key, digits in columns) + " |"
        for row in rows
    ]
    return lines


def beats_zero(real: Sequence[dict[str, Any]], metric: str = "f1") -> dict[str, tuple[int, int]]:
    """Per method: on how many series it scores above the zero baseline, of how many."""
    zero = {r["series"]: r[metric] for r in real if r["method"] == ZERO.label}
    tally: dict[str, tuple[int, int]] = {}
    for row in real:
        if row["method"] == ZERO.label:
            continue
        won, total = tally.get(row["method"], (0, 0))
        tally[row["method"]] = (won + (row[metric] > zero[row["series"]] + 1e-12), total + 1)
    return tally


def markdown(results: dict[str, Any]) -> str:
    """docs/drift-quality.md from the results."""
    setup = results["setup"]
    lines = [
        "# Drift detection quality",
        "",
        f"Generated by `make bench-drift` (`loadtest/drift_quality.py`) on {setup['when']};",
        f"{setup['seeds']} seeds per synthetic family, margin {MARGIN} for F1; do not edit.",
        "",
        "Every detector runs through the drift service's own logic (`Monitor` over `Detector`)",
        "as the worker feeds it, without cooldown. F1 and covering follow TCPD (van den Burg &",
        "Williams 2020): annotated change points are the first index of a new segment, the start",
        "counts as a change point for annotators and methods alike, precision is against the",
        "union of annotators and recall their mean. A method's change point is the start of its",
        "alert's fresh-data window; its detection (for delay) is the value that raised the alert.",
        "The *zero* method reports no change. Detectors run with River's defaults unless a",
        "parameter is shown.",
        "",
        "## Concept drift: error rate 0.2 -> 0.5 after 5,000 outcomes",
        "",
        f"{setup['seeds_concept']} seeded runs of 10,000 outcomes. False alarms are alarms in the",
        "5,000 stable outcomes, per run; delay is outcomes from the switch to the first alarm.",
        "",
    ]
    lines += _table(
        results["concept"],
        [
            ("detector", "method", 0),
            ("mean delay", "mean_delay", 1),
            ("median delay", "median_delay", 1),
            ("worst delay", "max_delay", 0),
            ("false alarms / 5,000 stable", "false_alarms_per_5k_stable", 2),
            ("misses", "misses", 0),
            ("runs", "runs", 0),
        ],
    )
    lines += [
        "",
        f"False alarms per 5,000 outcomes of a stable model, {setup['stable_runs']} seeded runs",
        "per error rate:",
        "",
    ]
    lines += _table(
        results["stable"],
        [
            ("detector", "method", 0),
            *((f"error rate {rate}", f"false_alarms_at_{rate}", 2) for rate in STABLE_RATES),
        ],
    )
    lines += [
        "",
        "## Synthetic streams with known change points",
        "",
        "Families (one stream per seed):",
        "",
        *(f"- *{name}*: {fn.__doc__}" for name, fn in FAMILIES.items()),
        "",
    ]
    lines += _table(
        results["synthetic"],
        [
            ("family", "family", 0),
            ("method", "method", 0),
            ("F1", "f1", 3),
            ("cover", "cover", 3),
            ("mean delay", "mean_delay", 1),
            ("false alarms / 10k", "false_alarms_per_10k", 2),
            ("misses", "misses", 0),
            ("changes", "changes", 0),
        ],
    )
    lines += ["", "## Real annotated series (TCPD)", ""]
    if not results["real"]:
        lines.append(
            "Not run: no copy of TCPD's repository was given (`--tcpd DIR`, default "
            "`.driftline/tcpd`)."
        )
    else:
        lines += [
            f"{setup['tcpd_series']} series of TCPD ({setup['tcpd_source']}) that ship with data,",
            "without its synthetic quality-control series (`quality_control_*`, `bank`).",
            "",
            "| method | F1 above zero | cover above zero | mean F1 | mean cover |",
            "|---|---|---|---|---|",
        ]
        f1_wins, cover_wins = beats_zero(results["real"]), beats_zero(results["real"], "cover")
        published = json.loads(TCPD_DEFAULTS.read_text())["series"]
        by_method: dict[str, list[dict[str, Any]]] = {}
        for row in results["real"]:
            by_method.setdefault(row["method"], []).append(row)
        for label, rows in by_method.items():
            won = f1_wins.get(label)
            covered = cover_wins.get(label)
            lines.append(
                f"| {label} | {f'{won[0]} of {won[1]}' if won else '-'} "
                f"| {f'{covered[0]} of {covered[1]}' if covered else '-'} "
                f"| {_fmt(_mean(r['f1'] for r in rows))} "
                f"| {_fmt(_mean(r['cover'] for r in rows))} |"
            )
        zero_agrees = all(
            abs(row["f1"] - published[row["series"]]["zero_f1"]) < 1e-4
            for row in results["real"]
            if row["method"] == ZERO.label and row["series"] in published
        )
        lines += [
            "",
            "Against TCPD's published F1 of its best method at default parameters on each series",
            f"(`{TCPD_DEFAULTS.name}`, from TCPDBench; our *zero* "
            + (
                "matches TCPD's *zero* on every series, which checks the metric):"
                if zero_agrees
                else "does NOT match TCPD's *zero*: check the metric):"
            ),
            "",
            "| method | F1 at or above TCPD's best default |",
            "|---|---|",
        ]
        for label, rows in by_method.items():
            if label == ZERO.label:
                continue
            known = [r for r in rows if r["series"] in published]
            won = sum(r["f1"] >= published[r["series"]]["best_default_f1"] - 1e-4 for r in known)
            lines.append(f"| {label} | {won} of {len(known)} |")
        lines += ["", "Per series:", ""]
        lines += _table(
            results["real"],
            [
                ("series", "series", 0),
                ("n", "n", 0),
                ("method", "method", 0),
                ("F1", "f1", 3),
                ("cover", "cover", 3),
                ("alarms", "alarms", 0),
            ],
        )
    return "\n".join(lines) + "\n"


def run(
    seeds: int,
    seeds_concept: int,
    tcpd_dir: Path | None,
    stable_runs: int = 20,
    families: Sequence[str] = tuple(FAMILIES),
    methods: Sequence[Method] = DATA_METHODS,
    concept_methods: Sequence[Method] = CONCEPT_METHODS,
) -> dict[str, Any]:
    """Every section of the report, as data."""
    real = tcpd(tcpd_dir) if tcpd_dir is not None else []
    return {
        "setup": {
            "when": datetime.now(UTC).strftime("%Y-%m-%d"),
            "seeds": seeds,
            "seeds_concept": seeds_concept,
            "stable_runs": stable_runs,
            "tcpd_series": len(real),
            "tcpd_source": "alan-turing-institute/TCPD, its annotations.json and datasets",
            "methods": [asdict(m) for m in methods],
            "concept_methods": [asdict(m) for m in concept_methods],
        },
        "concept": concept_report(concept_methods, seeds_concept),
        "stable": stable_report(concept_methods, stable_runs),
        "synthetic": synthetic_report(methods, seeds, families),
        "real": real_report(methods, real),
    }


def main(
    seeds: Annotated[int, typer.Option(help="Seeded streams per synthetic family.")] = 5,
    seeds_concept: Annotated[int, typer.Option(help="Seeded concept-drift runs.")] = 10,
    stable_runs: Annotated[int, typer.Option(help="Seeded stable runs per error rate.")] = 20,
    tcpd_dir: Annotated[
        Path | None, typer.Option("--tcpd", help="A copy of TCPD's repository.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where the report goes (.md and .json).")] = Path(
        "docs/drift-quality.md"
    ),
) -> None:
    """Score the drift detectors and write the report."""
    results = run(seeds, seeds_concept, tcpd_dir, stable_runs)
    out.write_text(markdown(results))
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    typer.echo(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    typer.run(main)
