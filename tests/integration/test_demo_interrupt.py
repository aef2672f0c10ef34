"""Ctrl-C during `driftline demo`: exit 130, and everything the demo started is gone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.processes import free_port
from shared.localkafka import LocalKafka
from tests.support.signals import interruptible

pytestmark = pytest.mark.integration

SERVICES = ("ingestion", "router", "feedback", "drift", "learner")


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _workers_ready(results: Path) -> bool:
    logs = list(results.glob("demo-*/logs/*.log"))
    ready = [log for log in logs if "[^DriftlineWorker]: Ready" in log.read_text(errors="replace")]
    return len(ready) == len(SERVICES)


def test_ctrl_c_stops_everything_the_demo_started(kafka_bootstrap: str, tmp_path: Path) -> None:
    """SIGINT to the demo's process group (what a terminal's Ctrl-C sends) once the five workers
    and the demo's own MLflow server run: exit code 130, no worker or server left, the broker
    the demo found running is kept."""
    kafka_port = int(kafka_bootstrap.rsplit(":", 1)[1])
    results = tmp_path / "results"
    command = [
        sys.executable, "-m", "services.cli", "demo", "--events", "4000", "--drift-at", "2000",
        "--kafka-port", str(kafka_port), "--mlflow-port", str(free_port()),
        "--results-dir", str(results),
    ]  # fmt: skip
    env = {**os.environ, "DRIFTLINE_HOME": str(tmp_path / "home")}
    with (tmp_path / "demo.out").open("wb") as out:
        demo = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=interruptible,
        )
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while not _workers_ready(results):
            assert demo.poll() is None, (tmp_path / "demo.out").read_text()
            assert time.monotonic() < deadline, "the demo's workers never became ready"
            time.sleep(0.5)
        started = _descendants(demo.pid)
        assert len(started) >= len(SERVICES) + 1  # five workers and the MLflow server

        os.killpg(demo.pid, signal.SIGINT)
        assert demo.wait(timeout=120) == 130
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (left := [pid for pid in started if _alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.2)
        left_behind = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]
        for pid in left:  # the test leaves nothing running either, whatever failed
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    assert left_behind == []
    assert LocalKafka(port=kafka_port).is_up()
