"""The drift-quality harness: its streams, its alarms through the service's monitor, TCPD's
files, and the report it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtest.drift_quality import (
    FAMILIES,
    ZERO,
    Method,
    alarms,
    beats_zero,
    concept_switch,
    markdown,
    run,
    segmentation_scores,
    synthetic,
    tcpd,
)


@pytest.mark.parametrize("family", FAMILIES)
def test_synthetic_streams_are_seeded_and_annotated_inside_the_stream(family: str) -> None:
    first, again, other = synthetic(family, 0), synthetic(family, 0), synthetic(family, 1)

    assert first == again and first.dims != other.dims
    assert all(0 < cp < first.n for cp in first.annotations["truth"])


def test_alarms_come_from_the_service_monitor_with_the_window_start_as_location() -> None:
    series = synthetic("mean shifts", 0)

    found = alarms(Method("bocpd", "bocpd"), series)

    assert len(found.detections) == 3
    for detection, location, cp in zip(
        found.detections, found.locations, series.annotations["truth"], strict=True
    ):
        assert cp <= detection <= cp + 60
        assert location <= detection and abs(location - cp) <= 5
    assert segmentation_scores(Method("bocpd", "bocpd"), series)["f1"] == 1.0


def test_the_zero_method_never_alarms_and_scores_the_start_alone() -> None:
    series = synthetic("trend", 0)

    assert alarms(ZERO, series).detections == []
    assert segmentation_scores(ZERO, series)["f1"] == pytest.approx(2 / 3)


def test_concept_switch_errors_rise_after_the_stable_outcomes() -> None:
    errors = concept_switch(0).dims[0]

    assert 0.17 < sum(errors[:5000]) / 5000 < 0.23
    assert 0.47 < sum(errors[5000:]) / 5000 < 0.53


def test_tcpd_series_are_read_per_dimension_with_missing_values_skipped(tmp_path: Path) -> None:
    (tmp_path / "datasets" / "toy").mkdir(parents=True)
    (tmp_path / "datasets" / "quality_control_1").mkdir(parents=True)
    raw = [[1.0] * 40 + [9.0] * 40, [2.0] * 30 + [None] + [2.0] * 49]
    data = {"series": [{"label": f"V{i}", "type": "float", "raw": r} for i, r in enumerate(raw)]}
    (tmp_path / "datasets" / "toy" / "toy.json").write_text(json.dumps(data))
    (tmp_path / "datasets" / "quality_control_1" / "quality_control_1.json").write_text(
        json.dumps(data)
    )
    annotations = {"toy": {"6": [40], "7": []}, "quality_control_1": {"6": []}, "gone": {}}
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))

    (series,) = tcpd(tmp_path)

    assert (series.name, series.n, series.annotations) == ("toy", 80, {"6": [40], "7": []})
    assert series.dims[1][30] is None
    assert alarms(Method("page_hinkley", "page_hinkley"), series).detections[0] >= 40


def test_the_report_has_every_section_and_counts_wins_over_zero() -> None:
    bocpd = Method("bocpd", "bocpd")
    results = run(1, 1, None, 1, ("mean shifts",), (ZERO, bocpd), (Method("ddm", "ddm"),))
    real = [
        {"series": "a", "method": "zero", "f1": 0.5},
        {"series": "a", "method": "m", "f1": 0.6},
        {"series": "b", "method": "zero", "f1": 0.5},
        {"series": "b", "method": "m", "f1": 0.5},
    ]

    text = markdown(results)

    assert "## Concept drift" in text and "## Synthetic streams" in text
    assert "Not run: no copy of TCPD" in text
    assert [row["method"] for row in results["concept"]] == ["ddm"]
    assert set(results["stable"][0]) == {
        "method",
        "runs",
        "false_alarms_at_0.05",
        "false_alarms_at_0.2",
        "false_alarms_at_0.4",
    }
    assert [(row["family"], row["method"]) for row in results["synthetic"]] == [
        ("mean shifts", "zero"),
        ("mean shifts", "bocpd"),
    ]
    assert beats_zero(real) == {"m": (1, 2)}


def test_real_series_are_compared_with_tcpd_published_scores() -> None:
    results = run(1, 1, None, 1, ("stationary",), (ZERO,), (Method("ddm", "ddm"),))
    results["real"] = [
        {"series": "nile", "n": 100, "method": "zero", "f1": 0.8235, "cover": 0.5, "alarms": 0},
        {"series": "nile", "n": 100, "method": "m", "f1": 1.0, "cover": 0.9, "alarms": 1},
    ]

    text = markdown(results)

    assert "our *zero* matches TCPD's *zero* on every series" in text
    assert "| m | 1 of 1 |" in text
