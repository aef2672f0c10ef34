"""MLflow behind its basic-auth app, as the local server runs it: nothing without credentials,
everything Driftline does with them, and a server that refuses them is one clear line."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from pydantic import SecretStr

from shared.errors import DriftlineError
from shared.localmlflow import LocalMlflow
from shared.settings import MlflowCredentials

pytestmark = pytest.mark.integration

SEARCH = "/api/2.0/mlflow/experiments/search"


def test_a_request_without_credentials_is_refused_with_401(mlflow_server: LocalMlflow) -> None:
    env = mlflow_server.client_env()
    admin = (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])
    url = mlflow_server.uri + SEARCH
    assert httpx.get(url, params={"max_results": 1}).status_code == 401
    assert httpx.get(url, params={"max_results": 1}, auth=(admin[0], "wrong")).status_code == 401
    assert httpx.get(url, params={"max_results": 1}, auth=admin).status_code == 200
    assert httpx.get(mlflow_server.uri + "/health").status_code == 200, "probes need no login"


def test_an_mlflow_client_without_the_credentials_gets_nothing(
    mlflow_server: LocalMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(MlflowException, match="401"):
        MlflowClient(tracking_uri=mlflow_server.uri).search_registered_models()


def test_the_cli_without_credentials_says_so_in_one_line(mlflow_server: LocalMlflow) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "models", "list"],
        capture_output=True,
        text=True,
        env={**env, "DRIFTLINE_MLFLOW_TRACKING_URI": mlflow_server.uri, "COLUMNS": "200"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: MLflow at {mlflow_server.uri} could not list models: ")
    assert "401" in line


def test_a_server_that_refuses_the_credentials_is_named_with_what_to_do(
    mlflow_server: LocalMlflow,
) -> None:
    wrong = MlflowCredentials(username="driftline", password=SecretStr("not-the-password"))
    other = LocalMlflow(port=mlflow_server.port, home=mlflow_server.home, credentials=wrong)
    with pytest.raises(DriftlineError, match="refuses user 'driftline' \\(HTTP 401\\): set ML"):
        other.start()
