"""The demo's live terminal view (rich): rates, rolling accuracy per model, feedback, alerts."""

from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from services.demo.observer import DemoObserver
from services.demo.scenario import Scenario
from shared.events import PromotionDecision


def render(observer: DemoObserver, scenario: Scenario) -> Group:
    """One frame of the live view."""
    events_per_s, predictions_per_s = observer.rates()
    progress = Table.grid(padding=(0, 2))
    progress.add_row(
        f"events sent [bold]{observer.sent}[/]/{scenario.n_events}",
        f"{events_per_s:6.0f} events/s",
        f"predictions [bold]{observer.predictions}[/] ({predictions_per_s:.0f}/s)",
        f"labeled [bold]{observer.labeled}[/]",
        f"pending feedback [bold]{max(observer.sent - observer.labeled, 0)}[/]",
        f"dead letters {observer.dead_letters}",
    )
    drift_note = (
        "[yellow]after the true drift point[/]"
        if observer.sent > scenario.drift_at
        else f"true drift at event {scenario.drift_at}"
    )
    models = Table(title=f"rolling accuracy (last 300 labels) — {drift_note}", expand=True)
    models.add_column("variant")
    models.add_column("rolling", justify="right")
    models.add_column("cumulative", justify="right")
    models.add_column("labels", justify="right")
    for name, track in sorted(observer.variants.items()):
        models.add_row(
            name, f"{track.rolling:.3f}", f"{track.correct / max(track.total, 1):.3f}",
            str(track.total),
        )  # fmt: skip
    alerts = Table(title="alerts", expand=True)
    for column in ("at event", "kind", "level", "what", "detector"):
        alerts.add_column(column)
    for index, alert in list(zip(observer.alert_indices, observer.alerts, strict=True))[-6:]:
        what = alert.feature or f"{alert.model_name} v{alert.model_version}"
        alerts.add_row(str(index), alert.kind, alert.level, str(what), alert.detector)
    retrain = f"retraining: {observer.retrain_status} · webhook calls {observer.webhook_calls}"
    lines = [Panel(progress, title="Driftline demo"), models, alerts, retrain]
    if observer.decisions:
        lines.append(f"promotion policy: {describe(observer.decisions[-1])}")
    return Group(*lines)


def describe(decision: PromotionDecision) -> str:
    """A decision in one line: what, why, and the errors it compared."""
    numbers = (
        f"challenger v{decision.challenger_version} error {decision.challenger_error:.3f} "
        f"({decision.challenger_samples} labels) vs champion v{decision.champion_version} "
        f"{decision.champion_error:.3f} ({decision.champion_samples})"
        if decision.challenger_error is not None and decision.champion_error is not None
        else f"challenger v{decision.challenger_version}"
    )
    return f"{decision.action} — {decision.reason}; {numbers}"
