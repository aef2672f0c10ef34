"""Driftline's services as real worker processes, for the demo and the integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.errors import DriftlineError


class ServiceStartError(DriftlineError):
    """A service worker died at start or never became healthy; its log says why."""

    def __init__(self, service: str, problem: str, log_path: Path) -> None:
        self.service = service
        self.log_path = log_path
        super().__init__(f"{service} worker {problem}; see {log_path}")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServiceProcess:
    """One `driftline <service> worker` process; its log goes to a file for post-mortems."""

    service: str
    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    argv: list[str] | None = None
    """Arguments after the interpreter; by default ``-m services.cli <service> worker``. The load
    test runs its reference Faust app this way, under the same health and log handling."""

    def start(self, ready_timeout: float = 90.0) -> ServiceProcess:
        """Spawn the process and wait until it is ready."""
        self.spawn()
        self.wait_ready(ready_timeout)
        return self

    def spawn(self) -> None:
        """Start the process without waiting (start several, then `wait_ready` on each)."""
        env = {
            **os.environ,
            **self.env,
            f"DRIFTLINE_{self.service.upper()}_WEB_PORT": str(self.port),
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *(self.argv or ["-m", "services.cli", self.service, "worker"])],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Wait until `/health` says the worker's tables are recovered; raise if it died or hung."""
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceStartError(self.service, "exited", self.log_path)
            if self.healthy():
                return
            time.sleep(0.3)
        raise ServiceStartError(self.service, f"not ready in {timeout:.0f}s", self.log_path)

    def healthy(self) -> bool:
        """Whether the worker's health endpoint answers 200."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> str:
        """The worker's Prometheus exposition text."""
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the worker's process group and wait for a clean exit; SIGKILL the group after
        `timeout` (returning None), and whatever the worker left running in it in any case."""
        self.terminate()
        return self.wait_stopped(timeout)

    def terminate(self) -> None:
        """SIGTERM the worker's process group: the worker begins its clean shutdown."""
        if self.process is not None and self.process.returncode is None:
            self._signal_group(signal.SIGTERM)

    def wait_stopped(self, timeout: float) -> int | None:
        """Wait for the exit `terminate` asked for, as `stop` does."""
        if self.process is None:
            return None
        if not self._exited_within(timeout):
            self.kill()
            return None
        self._signal_group(signal.SIGKILL)
        return self.process.wait()

    def _exited_within(self, timeout: float) -> bool:
        """Wait up to `timeout` for the worker to exit, leaving it unreaped: while it is, its
        process group's id cannot be given to another process."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
                if os.waitid(os.P_PID, self.process.pid, flags) is not None:
                    return True
            except ChildProcessError:  # reaped already
                return True
            time.sleep(0.05)
        return False

    def _signal_group(self, signum: signal.Signals) -> None:
        """Signal every process of the worker's group (it leads its own session)."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL the worker, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP the worker's process group, as a hung node or a long pause would."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT the worker's process group after `pause`."""
        self._signal_group(signal.SIGCONT)

    def tail(self, lines: int = 15) -> str:
        """The end of the worker's log."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def stop_all(processes: Sequence[ServiceProcess], timeout: float = 30.0) -> None:
    """`stop` every process, SIGTERM to all at once and one deadline for all: their shutdowns
    overlap, so a pipeline stops in the time of its slowest worker instead of the sum."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.wait_stopped(max(0.0, deadline - time.monotonic()))
