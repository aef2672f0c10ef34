"""`driftline demo`."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live


def register(app: typer.Typer) -> None:
    """Add the `demo` command to the `driftline` CLI."""
    app.command("demo")(demo)


def demo(
    events: Annotated[int, typer.Option(help="Events to replay.")] = 6000,
    drift_at: Annotated[int, typer.Option(help="Index of the concept switch.")] = 3000,
    rate: Annotated[float, typer.Option(help="Events per second.")] = 60.0,
    label_delay: Annotated[float, typer.Option(help="Seconds until each label arrives.")] = 2.0,
    results_dir: Annotated[Path, typer.Option(help="Where reports and logs go.")] = Path("results"),
    kafka_port: Annotated[int, typer.Option(help="Local Kafka port.")] = 9092,
    mlflow_port: Annotated[int, typer.Option(help="Local MLflow port.")] = 5000,
    retrain_min_rows: Annotated[
        int, typer.Option(help="Labeled events the drift alert's window needs to retrain on.")
    ] = 500,
    promotion_min_samples: Annotated[
        int, typer.Option(help="Labels champion and challenger each need before a promotion.")
    ] = 300,
    console_port: Annotated[
        int, typer.Option(help="Port of the operator console the demo runs.")
    ] = 6068,
) -> None:
    """Run the continuous-training loop end to end on real processes, live; then report.

    Starts (or reuses) Kafka and MLflow, trains and deploys a champion, runs the five services
    and the operator console (its address is printed first),
    replays a stream with a known concept drift, retrains on the drift alert's window when its
    webhook fires, lets the promotion policy weigh the challenger on live labels, and writes a
    report and a PNG. Exits 1 if the drift was missed or the champion never moved.
    """
    # Imported here: the demo brings scikit-learn, MLflow and matplotlib, which `--help` must not.
    from services.demo.report import first_concept_drift, plot, summary
    from services.demo.runner import Demo, DemoConfig
    from services.demo.scenario import Scenario
    from services.demo.view import render

    if not 0 < drift_at < events:
        raise typer.BadParameter("--drift-at must lie inside the stream (0 < drift-at < events)")
    scenario = Scenario(n_events=events, drift_at=drift_at, rate=rate, label_delay=label_delay)
    config = DemoConfig(
        scenario=scenario, results_dir=results_dir, kafka_port=kafka_port,
        mlflow_port=mlflow_port, retrain_min_rows=retrain_min_rows,
        promotion_min_samples=promotion_min_samples, console_port=console_port,
    )  # fmt: skip
    console = Console(file=sys.stdout)
    live = Live(console=console, refresh_per_second=4, redirect_stdout=False, redirect_stderr=False)
    runner = Demo(config, on_tick=lambda observer: live.update(render(observer, scenario)))
    directory = runner.run_info.directory
    directory.mkdir(parents=True, exist_ok=True)
    console.print(
        f"watch the loop in the console: http://127.0.0.1:{console_port} "
        f"(any user name, password {config.console_token})",
        highlight=False,
        soft_wrap=True,
    )
    # Libraries (MLflow above all) print to stdout and stderr; that goes to a file, not the view.
    with (
        (directory / "demo.log").open("w") as chatter,
        contextlib.redirect_stdout(chatter),
        contextlib.redirect_stderr(chatter),
        live,
    ):
        observer = asyncio.run(runner.run())
    lines = summary(observer, scenario)
    (directory / "report.txt").write_text("\n".join(lines) + "\n")
    png = plot(observer, scenario, directory / "accuracy.png")
    console.rule("Driftline demo report")
    for line in lines:
        console.print(line, highlight=False)
    console.print(f"PNG: {png}\nlogs: {directory / 'logs'}", highlight=False)
    detected = first_concept_drift(observer)
    if detected is None or detected < drift_at or not observer.switches:
        console.print("[red]the loop did not close: see the report above[/]")
        raise typer.Exit(1)
