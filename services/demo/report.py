"""The demo's end: a short text report and a PNG of rolling accuracy per model over the stream."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from services.demo.observer import DemoObserver
from services.demo.runner import MODEL_NAME
from services.demo.scenario import Scenario
from services.demo.view import describe


def first_concept_drift(observer: DemoObserver) -> int | None:
    """Stream index of the first drift-level concept alert on the served (champion) model."""
    return next(
        (
            index
            for index, alert in zip(observer.alert_indices, observer.alerts, strict=True)
            if (alert.kind, alert.level, alert.model_name) == ("concept", "drift", MODEL_NAME)
        ),
        None,
    )


def summary(observer: DemoObserver, scenario: Scenario) -> list[str]:
    """The report's lines."""
    detected = first_concept_drift(observer)
    lines = [
        f"events {observer.sent}, predictions {observer.predictions}, "
        f"labeled {observer.labeled}, dead letters {observer.dead_letters} "
        f"(of {observer.malformed} malformed records sent)",
        f"true concept drift at event {scenario.drift_at}",
        (
            f"concept drift detected at event {detected} ({detected - scenario.drift_at} events "
            "after the true drift)"
            if detected is not None
            else "no concept drift detected"
        ),
        f"alerts: {len(observer.alerts)} "
        f"({sum(a.kind == 'data' for a in observer.alerts)} data, "
        f"{sum(a.kind == 'concept' for a in observer.alerts)} concept)",
    ]
    if observer.challenger is not None:
        window = observer.challenger.window
        lines.append(
            f"retrained on the alert's window: {observer.challenger.rows} labeled events from "
            f"{window.start_time:%H:%M:%S} ({window.estimated_by}), challenger "
            f"v{observer.challenger.version} in shadow"
        )
    lines += [
        f"policy promoted v{s.version} at event {s.at_index}: {describe(s.decision)}"
        for s in observer.switches
    ] or ["champion never moved"]
    for name, track in sorted(observer.variants.items()):
        before = [acc for i, acc in track.points if i < scenario.drift_at]
        lines.append(
            f"{name:>12}: accuracy {track.correct / max(track.total, 1):.3f} overall, "
            f"rolling {before[-1] if before else float('nan'):.3f} just before the drift, "
            f"{track.rolling:.3f} at the end"
        )
    return lines


def plot(observer: DemoObserver, scenario: Scenario, path: Path) -> Path:
    """Rolling accuracy per variant, the true drift point, alerts and champion switches."""
    figure, axes = plt.subplots(figsize=(11, 5.5))
    for name, track in sorted(observer.variants.items()):
        if track.points:
            xs, ys = zip(*sorted(track.points), strict=True)
            axes.plot(xs, ys, label=name, linewidth=1.4)
    axes.axvline(scenario.drift_at, color="black", linestyle="--", label="true drift")
    for index, alert in zip(observer.alert_indices, observer.alerts, strict=True):
        if alert.kind == "concept" and alert.model_name == MODEL_NAME:
            color = "red" if alert.level == "drift" else "orange"
            axes.axvline(index, color=color, alpha=0.6, linewidth=1)
    for switch in observer.switches:
        axes.axvline(
            switch.at_index, color="green", linewidth=2, label=f"champion → v{switch.version}"
        )
    axes.set_xlabel("event index")
    axes.set_ylabel("rolling accuracy (last 300 labels)")
    axes.set_ylim(0, 1.02)
    axes.set_title("Driftline demo: concept drift, alert, retrain, champion switch")
    axes.plot([], [], color="red", label="concept-drift alert")
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
