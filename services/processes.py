"""Driftline's services as real worker processes, for the demo and the integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


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

    def start(self, ready_timeout: float = 60.0) -> ServiceProcess:
        """Start the process and wait until `/health` says its tables are recovered."""
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
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.service} worker exited: {self.tail()}")
            if self.healthy():
                return self
            time.sleep(0.3)
        raise AssertionError(f"{self.service} worker not ready in {ready_timeout}s: {self.tail()}")

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
        """SIGTERM and wait for a clean exit (SIGKILL after `timeout`)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL the worker, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def tail(self, lines: int = 15) -> str:
        """The end of the worker's log."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
