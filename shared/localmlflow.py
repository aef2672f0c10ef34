"""A real MLflow tracking server and model registry on SQLite, for development, tests and the demo.

It runs as its own process (``mlflow server``), exactly as users run it, with artifacts served by
the server so clients need no shared filesystem, and behind MLflow's basic-auth app: a request
without credentials is answered 401. Its admin is the user of `MlflowCredentials` (MLflow's own
``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``); without a password set, one is
made up at the first start and kept in the server's directory, readable by its owner only.
`client_env` gives the variables every MLflow client of this server needs.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import importlib.metadata
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.errors import DriftlineError
from shared.localkafka import default_home
from shared.pidfile import owned_pid, stop_group
from shared.settings import MlflowCredentials, load

DEFAULT_USERNAME = "driftline"
"""The local server's admin when `MlflowCredentials.username` is unset."""


@dataclass(frozen=True)
class LocalMlflow:
    """One local MLflow server, identified by its port; its files live in ``home/mlflow-<port>``."""

    port: int = 5000
    home: Path = field(default_factory=default_home)
    credentials: MlflowCredentials = field(default_factory=lambda: load(MlflowCredentials))

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

    @property
    def password_path(self) -> Path:
        """Where the made-up admin password is kept when none is set."""
        return self.workdir / "admin-password"

    @property
    def username(self) -> str:
        """The server's admin, whom Driftline's clients act as."""
        return self.credentials.username or DEFAULT_USERNAME

    def password(self) -> str:
        """The admin's password: the one set, else the one kept (made up if there is none)."""
        if self.credentials.password is not None:
            return self.credentials.password.get_secret_value()
        if not self.password_path.exists():
            self.workdir.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.password_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_urlsafe(24))
        return self.password_path.read_text().strip()

    def client_env(self) -> dict[str, str]:
        """MLflow's client variables with this server's credentials, for the processes (and the
        MLflow clients of this process) that talk to it."""
        return {
            "MLFLOW_TRACKING_USERNAME": self.username,
            "MLFLOW_TRACKING_PASSWORD": self.password(),
        }

    def _auth_config(self) -> Path:
        """The basic-auth app's configuration: users in SQLite beside the tracking database, and
        no permission on anything for a user not granted one."""
        config = configparser.ConfigParser()
        config["mlflow"] = {
            "default_permission": "NO_PERMISSIONS",
            "database_uri": f"sqlite:///{self.workdir / 'basic_auth.db'}",
            "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        }
        path = self.workdir / "basic_auth.ini"
        with path.open("w") as out:
            config.write(out)
        return path

    def is_up(self, timeout: float = 2.0) -> bool:
        """Whether an MLflow server answers its health check on this port."""
        try:
            return httpx.get(f"{self.uri}/health", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    def pid(self) -> int | None:
        """The pid of the server this tool started, if it still runs."""
        return owned_pid(self._pid_path, str(self.workdir))

    def check_credentials(self) -> None:
        """Raise a `DriftlineError` saying what to do if the server refuses `client_env`'s
        credentials (its admin was made with another password, or it is another server)."""
        env = self.client_env()
        credentials = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
        answer = httpx.get(
            f"{self.uri}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=credentials,
            timeout=10.0,
        )
        if answer.status_code in (401, 403):
            raise DriftlineError(
                f"MLflow at {self.uri} refuses user {self.username!r} (HTTP {answer.status_code}): "
                "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to its admin's, or stop "
                f"it and delete {self.workdir} to start afresh"
            )

    def start(self, timeout: float = 90.0) -> float:
        """Start the server unless one answers; return the seconds it took to answer. Either way
        the server must take this tool's credentials."""
        began = time.monotonic()
        if self.is_up(timeout=1.0):
            self.check_credentials()
            return 0.0
        try:
            importlib.metadata.distribution("mlflow")
        except importlib.metadata.PackageNotFoundError:
            # The image and a plain install carry mlflow-skinny, the client, without the server.
            raise DriftlineError(
                "the MLflow server is not installed here (only its client, mlflow-skinny, is): "
                "install Driftline with its server extra, or point DRIFTLINE_MLFLOW_TRACKING_URI "
                "at an MLflow server"
            ) from None
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
                    "--app-name", "basic-auth",
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={
                    **os.environ,
                    # The server's job runner (several huey worker processes) serves MLflow's
                    # GenAI jobs; tracking and the registry do not need it.
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                    "MLFLOW_AUTH_CONFIG_PATH": str(self._auth_config()),
                    # Creates the admin at the first start only: the auth database keeps it.
                    "MLFLOW_AUTH_ADMIN_USERNAME": self.username,
                    "MLFLOW_AUTH_ADMIN_PASSWORD": self.password(),
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
                },
            )  # fmt: skip
        self._pid_path.write_text(str(process.pid))
        while time.monotonic() - began < timeout:
            if process.poll() is not None:
                raise DriftlineError(f"MLflow server exited at start; see {self.log_path}")
            if self.is_up(timeout=1.0):
                self._hash_made_up_password_cheaply()
                self.check_credentials()
                return time.monotonic() - began
            time.sleep(0.5)
        self.stop()
        raise DriftlineError(f"MLflow server gave no answer in {timeout:.0f}s; see {self.log_path}")

    def _hash_made_up_password_cheaply(self) -> None:
        """Store the made-up admin password's hash as PBKDF2 with 1,000 rounds instead of
        MLflow's scrypt: the basic-auth app checks the hash on every request, and scrypt's 0.3 s
        of server CPU each made a registration (22 requests) take 5 s and every router's alias
        check cost the server a third of a core-second. Only a made-up password (24 random
        bytes, never guessed whatever the hash) gets this; a password the user set keeps scrypt."""
        if self.credentials.password is not None:
            return
        # The form of the server's own hashes (werkzeug's): method$salt$hex digest.
        method, salt = "pbkdf2:sha256:1000", secrets.token_hex(8)
        digest = hashlib.pbkdf2_hmac("sha256", self.password().encode(), salt.encode(), 1000)
        cheap = f"{method}${salt}${digest.hex()}"
        with contextlib.closing(sqlite3.connect(self.workdir / "basic_auth.db")) as db, db:
            db.execute(
                "UPDATE users SET password_hash = ? WHERE username = ?", (cheap, self.username)
            )

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the server this tool started; False if none ran."""
        pid = self.pid()
        if pid is None:
            return False
        stop_group(pid, timeout)
        self._pid_path.unlink(missing_ok=True)
        return True
