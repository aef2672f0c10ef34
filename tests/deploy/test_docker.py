"""The container image: hadolint, the rules of the issue, and the health check it runs."""

from __future__ import annotations

import http.server
import importlib.util
import re
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.conftest import ROOT, run, tool

DOCKERFILES = ("Dockerfile", "deploy/mlflow/Dockerfile")


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile: str) -> None:
    run([tool("hadolint"), "--failure-threshold", "info", ROOT / dockerfile])


def final_stage(text: str) -> str:
    return re.split(r"(?m)^FROM ", text)[-1]


def test_image_is_multi_stage_slim_non_root_and_healthchecked() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"(?m)^FROM ", text)) >= 2
    assert re.search(r"(?m)^ARG PYTHON_IMAGE=python:3\.\d+-slim", text)
    final = final_stage(text)
    assert re.search(r"(?m)^USER 10001", final)
    assert "PYTHONUNBUFFERED=1" in final
    assert re.search(r"(?m)^HEALTHCHECK ", final)
    assert 'ENTRYPOINT ["driftline"]' in final
    for build_tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert build_tool not in final, f"the final stage runs {build_tool}"
    assert "pip install --no-cache-dir ." in text


def test_dockerignore_lets_in_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text()
    copied = re.findall(r"(?m)^COPY (?!--from)(\S+)", (ROOT / "Dockerfile").read_text())
    for source in copied:
        assert f"!{source.rstrip('/')}" in ignore.replace("/\n", "\n"), source


def test_mlflow_server_runs_the_version_the_services_use_with_its_auth_app() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (pin,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("mlflow[auth]==")]
    assert f'"{pin}"' in (ROOT / "deploy" / "mlflow" / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "healthcheck", ROOT / "deploy" / "docker" / "healthcheck.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_healthcheck_finds_the_service_of_the_command(healthcheck: ModuleType) -> None:
    assert (
        healthcheck.service_of(
            ["/opt/driftline/bin/python", "/opt/driftline/bin/driftline", "router", "worker"]
        )
        == "router"
    )
    assert healthcheck.service_of(["driftline", "topics", "create"]) is None
    assert healthcheck.service_of(["driftline", "worker"]) is None


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_healthcheck_asks_the_workers_port(
    healthcheck: ModuleType,
    health_server: http.server.HTTPServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/opt/driftline/bin/python\0/opt/driftline/bin/driftline\0drift\0worker\0")
    monkeypatch.setenv("DRIFTLINE_WEB_HOST", "0.0.0.0")
    monkeypatch.setenv("DRIFTLINE_DRIFT_WEB_PORT", str(health_server.server_address[1]))
    assert healthcheck.main([], cmdline) == 0
    monkeypatch.setattr(_Health, "status", 503)
    assert healthcheck.main([], cmdline) == 1
    monkeypatch.setenv("DRIFTLINE_DRIFT_WEB_PORT", "1")
    assert healthcheck.main([], cmdline) == 1
    cmdline.write_bytes(b"driftline\0topics\0create\0")
    assert healthcheck.main([], cmdline) == 0


def test_healthcheck_asks_every_url_given(
    healthcheck: ModuleType,
    health_server: http.server.HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The chart's `helm test` pod: every component's /health must answer 200."""
    port = health_server.server_address[1]
    up = f"http://127.0.0.1:{port}/health"
    assert healthcheck.main([up, up], Path("/nonexistent")) == 0
    assert healthcheck.main([up, f"http://127.0.0.1:{port}/missing"], Path("/nonexistent")) == 1
    assert "/missing" in capsys.readouterr().err
    monkeypatch.setattr(_Health, "status", 503)
    assert healthcheck.main([up], Path("/nonexistent")) == 1
