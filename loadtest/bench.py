"""Run every load-test scenario on a dedicated local broker and write the results.

    .venv/bin/python -m loadtest.bench            # every scenario (make bench), < 15 minutes
    .venv/bin/python -m loadtest.bench --quick    # every scenario tiny, about two minutes

The broker is a `LocalKafka` on port 39092 (not the tests' 19092), started if none answers and
stopped afterwards if this run started it. A full run writes ``docs/benchmarks.json`` and the
generated block of ``docs/benchmarks.md``; a quick run writes ``.driftline/bench/quick.json``
and prints the table. A failing scenario is recorded with its error and the run goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import aiokafka
import faust
import river
import typer

from loadtest import scenarios
from loadtest.harness import load_average
from loadtest.report import render, table, write_block
from shared.localkafka import KAFKA_VERSION, LocalKafka, default_home

Scenario = Callable[[scenarios.Context], dict[str, Any]]


def plan(sizes: scenarios.Sizes) -> list[Scenario]:
    """Every scenario, references first (their rates are the ratios' denominators)."""
    return [
        scenarios.relay_ceiling,
        scenarios.forward_ceiling,
        scenarios.forward_chain,
        scenarios.ingestion_alone,
        partial(scenarios.router_deployments, n_deployments=1),
        scenarios.prediction_path,
        scenarios.full_loop,
        *(partial(scenarios.router_deployments, n_deployments=n) for n in sizes.deployments[1:]),
        scenarios.router_per_entity,
        partial(scenarios.full_loop, per_entity=True),
        partial(scenarios.router_deployments, n_deployments=1, workers=2),
        partial(scenarios.prediction_path, workers=2),
    ]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown CPU",
    )
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(memory_kb / 1024**2, 1),
        "platform": platform.platform(),
    }


def wait_for_quiet(threshold: float, max_seconds: float) -> float:
    """Wait (at most `max_seconds`) until the one-minute load average is below `threshold`."""
    deadline = time.monotonic() + max_seconds
    while load_average() >= threshold and time.monotonic() < deadline:
        time.sleep(5)
    return load_average()


def main(
    quick: Annotated[
        bool, typer.Option(envvar="BENCH_QUICK", help="Run every scenario tiny.")
    ] = False,
    port: Annotated[int, typer.Option(help="Port of the bench broker.")] = 39092,
    only: Annotated[
        list[str] | None, typer.Option(help="Run only scenarios whose function name has this.")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Where the JSON goes.")] = None,
    doc: Annotated[Path | None, typer.Option(help="Markdown page to update.")] = None,
    quiet_load: Annotated[
        float, typer.Option(help="Wait for the load average to fall below this first.")
    ] = 1.0,
    quiet_wait: Annotated[float, typer.Option(help="Seconds to wait for that at most.")] = 60.0,
) -> None:
    """Run the scenarios and write the results."""
    sizes = scenarios.QUICK if quick else scenarios.Sizes()
    json_path = json_path or Path(
        ".driftline/bench/quick.json" if quick else "docs/benchmarks.json"
    )
    doc = doc or (None if quick else Path("docs/benchmarks.md"))
    broker = LocalKafka(port=port, home=default_home())
    started_broker = not broker.is_up(timeout=1.0)
    if started_broker:
        broker.start()
    load_start = load_average() if quick else wait_for_quiet(quiet_load, quiet_wait)
    began = time.monotonic()
    workdir = Path(".driftline/bench") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    ctx = scenarios.Context(broker.bootstrap, workdir.resolve(), sizes)
    results: list[dict[str, Any]] = []
    try:
        for scenario in plan(sizes):
            name = getattr(scenario, "func", scenario).__name__
            if only and not any(o in name for o in only):
                continue
            print(f"[{time.monotonic() - began:6.1f}s] {name} ...", file=sys.stderr, flush=True)
            try:
                results.append(scenario(ctx))
            except Exception as exc:
                traceback.print_exc()
                results.append({"name": name, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        if started_broker:
            broker.stop()
    meta = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "seconds": round(time.monotonic() - began, 1),
        "machine": machine(),
        "load_average_start": load_start,
        "versions": {
            "python": platform.python_version(),
            "faust-streaming": faust.__version__,
            "aiokafka": aiokafka.__version__,
            "river": river.__version__,
            "kafka": KAFKA_VERSION,
        },
        "sizes": asdict(sizes),
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    if doc is not None:
        write_block(doc, render(meta, results))
    print(table(results))


if __name__ == "__main__":
    typer.run(main)
