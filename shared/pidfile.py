"""Background servers started by Driftline's own tools (local Kafka, local MLflow): find the one we
started through its pid file, and stop its whole process group, never another process."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def owned_pid(pid_path: Path, marker: str) -> int | None:
    """The pid in `pid_path` if that process still runs and its command line holds `marker`
    (a pid reused by an unrelated process is not ours)."""
    try:
        pid = int(pid_path.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ValueError):
        return None
    return pid if marker in cmdline else None


def stop_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by `pid`, wait for it to end, SIGKILL it after `timeout`."""
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _ended(pid):
        time.sleep(0.2)
    if not _ended(pid):
        os.killpg(pid, signal.SIGKILL)


def _ended(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not Path(f"/proc/{pid}").exists()
    return finished == pid
