"""Where a service's CPU goes: py-spy on its worker draining a backlog.

Runs one single-worker scenario on a broker (the one-deployment router, or ingestion alone),
records the worker with py-spy (100 Hz, collapsed stacks) during its maximum-rate phase only, and
prints the share of samples in which each function is on the stack (inclusive), the largest
first, plus the phase's rate and CPU seconds.

    .venv/bin/python -m loadtest.profile --bootstrap 127.0.0.1:19492 --service ingestion
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from loadtest import harness, scenarios

_LOCATION = re.compile(r" \((?:.*/)?([^/]+?)(?::\d+)?\)")


def inclusive_shares(collapsed: str) -> tuple[int, Counter[str]]:
    """Samples in all, and per function (``name (file)``) the samples it is on the stack in."""
    total = 0
    shares: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, count = line.rsplit(" ", 1)
        total += int(count)
        for frame in {_LOCATION.sub(r" (\1)", f) for f in stack.split(";")}:
            shares[frame] += int(count)
    return total, shares


PY_SPY = str(Path(sys.executable).with_name("py-spy"))
"""py-spy from the environment that runs this (a dev dependency; the venv need not be on PATH)."""

SCENARIOS: dict[str, Callable[[scenarios.Context], Any]] = {
    "router": lambda ctx: scenarios.router_deployments(ctx, 1),
    "ingestion": scenarios.ingestion_alone,
}


def main(
    bootstrap: Annotated[str, typer.Option(help="Broker to run the scenario on.")],
    service: Annotated[str, typer.Option(help="router or ingestion.")] = "router",
    events: Annotated[int, typer.Option(help="Backlog the worker drains.")] = 20_000,
    out: Annotated[Path | None, typer.Option(help="Collapsed stacks (py-spy raw).")] = None,
    top: Annotated[int, typer.Option(help="Functions to print.")] = 60,
) -> None:
    """Profile one service under a backlog and print where its time goes."""
    if service not in SCENARIOS:
        raise typer.BadParameter(f"one of {', '.join(SCENARIOS)}", param_hint="--service")
    out = out or Path(f".driftline/bench/{service}-profile.txt")
    out.parent.mkdir(parents=True, exist_ok=True)
    measured: dict[str, Any] = {}
    run_phase = harness.run_phase

    def profiled(run: harness.Run, phase: harness.Phase, rate: float | None, first: int = 0):
        if rate is not None or measured:
            return run_phase(run, phase, rate, first)
        pid = run.workers[0].process.pid  # type: ignore[union-attr]
        spy = subprocess.Popen(
            [PY_SPY, "record", "-r", "100", "--format", "raw", "-o", str(out), "--pid", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            measured.update(run_phase(run, phase, rate, first))
        finally:
            spy.send_signal(2)
            spy.wait()
        return measured

    sizes = scenarios.Sizes(backlog=events, latency_seconds=1.0, deployments=(1,))
    ctx = scenarios.Context(bootstrap, Path(".driftline/bench/profile").resolve(), sizes)
    scenarios.run_phase = profiled  # type: ignore[assignment]
    try:
        SCENARIOS[service](ctx)
    finally:
        scenarios.run_phase = run_phase
    total, shares = inclusive_shares(out.read_text())
    print(f"rate {measured['rate']} ev/s, CPU {measured['cpu_s']}, {total} samples in {out}")
    for frame, count in shares.most_common(top):
        print(f"{100 * count / total:5.1f} %  {frame}")


if __name__ == "__main__":
    typer.run(main)
