"""A real MLServer (from PyPI, with its scikit-learn runtime) serving models the tests train, as
a model server runs beside Driftline: its own process in its own virtual environment
(``.driftline/tools/mlserver``, made by scripts/install-tools.sh with the project's scikit-learn
version, so a model pickled here loads there)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from shared.pidfile import stop_group

ROOT = Path(__file__).resolve().parents[2]
MLSERVER = ROOT / ".driftline" / "tools" / "mlserver" / "bin" / "mlserver"
V2_MODEL = "fraud-v2"
"""The model the test run's MLServer serves (the ``mlserver`` fixture)."""
V2_VERSION = "v1"


@dataclass(frozen=True)
class ServedModel:
    """A scikit-learn classifier to serve, with its inputs (one FP64 input per feature)."""

    name: str
    version: str
    model: Any
    features: Sequence[str]


def threshold_model(name: str, cut: float) -> ServedModel:
    """A logistic regression of ``amount > cut`` on uniform amounts, named `name`."""
    amounts = np.linspace(0, 1, 400)
    model = LogisticRegression(C=1000).fit(
        pd.DataFrame({"amount": amounts}), (amounts > cut).astype(int)
    )
    return ServedModel(name, V2_VERSION, model, ["amount"])


def write_model(repository: Path, served: ServedModel) -> None:
    """Pickle the model and write its ``model-settings.json``: inputs in the model's column
    order, and ``predict_proba`` declared with the classes of its columns."""
    folder = repository / served.name
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(served.model, folder / "model.joblib")
    classes = [c.item() if hasattr(c, "item") else c for c in served.model.classes_]
    settings = {
        "name": served.name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": served.version},
        "inputs": [{"name": f, "datatype": "FP64", "shape": [-1, 1]} for f in served.features],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1, 1]},
            {
                "name": "predict_proba",
                "datatype": "FP64",
                "shape": [-1, len(classes)],
                "parameters": {"classes": classes},
            },
        ],
    }
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))


class LocalMlserver:
    """One MLServer on fixed ports serving the models in `repository`; `kill` and `start` let a
    test take it away and bring it back mid-stream."""

    def __init__(self, repository: Path, http_port: int = 18081, grpc_port: int = 18082) -> None:
        self.repository = repository
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.log_path = repository.parent / "mlserver.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of its REST endpoint."""
        return f"http://127.0.0.1:{self.http_port}"

    def uri(self, model: str) -> str:
        """Driftline's URI of one of its models."""
        return f"v2+http://127.0.0.1:{self.http_port}/{model}"

    def start(self, models: Sequence[str], timeout: float = 120.0) -> None:
        """Start it and wait until every model in `models` is ready."""
        if not MLSERVER.exists():
            raise RuntimeError(
                f"MLServer is not installed at {MLSERVER}: run `make tools` "
                "(bash scripts/install-tools.sh .driftline/tools)"
            )
        settings = {
            "host": "127.0.0.1",
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_endpoint": None,  # no metrics server: one port fewer to clash on
            "parallel_workers": 0,  # inference in the server's process: one process to stop
            "load_models_at_startup": True,
        }
        (self.repository / "settings.json").write_text(json.dumps(settings))
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(MLSERVER), "start", str(self.repository)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("MLSERVER_")},
            )
        deadline = time.monotonic() + timeout
        while not all(self.is_ready(m) for m in models):
            if self._process.poll() is not None:
                raise RuntimeError(f"MLServer exited at start:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"MLServer not ready in {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.3)

    def is_ready(self, model: str) -> bool:
        """Whether it answers that `model` is ready."""
        try:
            answer = httpx.get(f"{self.url}/v2/models/{model}/ready", timeout=2.0)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def kill(self) -> None:
        """SIGKILL its whole process group at once (an outage, not a shutdown)."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=30)
        self._process = None

    def stop(self) -> None:
        """Stop it (SIGTERM to its process group, SIGKILL after a grace period)."""
        if self._process is not None and self._process.poll() is None:
            stop_group(self._process.pid, timeout=3.0)
        self._process = None

    def tail(self, lines: int = 40) -> str:
        """The end of its log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
