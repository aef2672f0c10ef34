"""A real MLflow tracking server and model registry on SQLite, for development, tests and the demo.

It runs as its own process (``mlflow server``), exactly as users run it, with artifacts served by
the server so clients need no shared filesystem.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.errors import DriftlineError
from shared.localkafka import default_home
from shared.pidfile import owned_pid, stop_group


@dataclass(frozen=True)
class LocalMlflow:
    """One local MLflow server, identified by its port; its files live in ``home/mlflow-<port>``."""

    port: int = 5000
    home: Path = field(default_factory=default_home)

    @property
    def uri(self) -> str:
        """Tracking URI for clients."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def workdir(self) -> Path:
        """Database, artifacts, log and pid file of this server."""
        return self.home / f"mlflow-{self.port}"

    @property
    def log_path(self) -> Path:
        """The server's own log."""
        return self.workdir / "server.log"

    @property
    def _pid_path(self) -> Path:
        return self.workdir / "server.pid"

    def is_up(self, timeout: float = 2.0) -> bool:
        """Whether an MLflow server answers its health check on this port."""
        try:
            return httpx.get(f"{self.uri}/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def pid(self) -> int | None:
        """The pid of the server this tool started, if it still runs."""
        return owned_pid(self._pid_path, str(self.workdir))

    def start(self, timeout: float = 90.0) -> float:
        """Start the server unless one answers; return the seconds it took to answer."""
        began = time.monotonic()
        if self.is_up(timeout=1.0):
            return 0.0
        self.workdir.mkdir(parents=True, exist_ok=True)
        mlflow = Path(sys.executable).with_name("mlflow")
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [
                    str(mlflow), "server",
                    "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
                    "--artifacts-destination", str(self.workdir / "artifacts"),
                    "--serve-artifacts",
                    "--host", "127.0.0.1",
                    "--port", str(self.port),
                    "--workers", "1",
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
                # The server's job runner (several huey worker processes) serves MLflow's GenAI
                # jobs; tracking and the registry do not need it.
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )  # fmt: skip
        self._pid_path.write_text(str(process.pid))
        while time.monotonic() - began < timeout:
            if process.poll() is not None:
                raise DriftlineError(f"MLflow server exited at start; see {self.log_path}")
            if self.is_up(timeout=1.0):
                return time.monotonic() - began
            time.sleep(0.5)
        self.stop()
        raise DriftlineError(f"MLflow server gave no answer in {timeout:.0f}s; see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the server this tool started; False if none ran."""
        pid = self.pid()
        if pid is None:
            return False
        stop_group(pid, timeout)
        self._pid_path.unlink(missing_ok=True)
        return True
