"""docker-compose.yml: valid per the Compose specification (`docker-compose config` checks it
against the spec's schema and resolves it, with no engine), and in step with shared/."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest
import yaml

from shared.settings import (
    SERVICE_SETTINGS,
    ConsoleSettings,
    GatewaySettings,
    RetrainSettings,
    env_variables,
)
from tests.deploy.conftest import ROOT, run, tool
from tests.deploy.manifests import REQUIRED_SETTINGS

KEYS = {
    "DRIFTLINE_SNAPSHOT_HMAC_KEY": "s" * 64,
    "DRIFTLINE_WEBHOOK_HMAC_KEY": "w" * 64,
    "DRIFTLINE_STATE_HMAC_KEY": "t" * 64,
    "MLFLOW_TRACKING_PASSWORD": "p" * 48,
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "f" * 64,
}


def compose_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE_", "MLFLOW_"))}
    return {**env, **extra}


def resolved(*options: str, **env: str) -> dict[str, Any]:
    """docker-compose.yml as `docker compose config` resolves it with the HMAC keys set."""
    command = [tool("docker-compose"), "--file", ROOT / "docker-compose.yml", *options, "config"]
    return json.loads(run([*command, "--format", "json"], env=compose_env(**KEYS, **env)))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return resolved()


@pytest.mark.parametrize("secret", list(KEYS))
def test_compose_needs_the_hmac_keys_and_the_mlflow_secrets(secret: str) -> None:
    command = [tool("docker-compose"), "--file", ROOT / "docker-compose.yml", "config", "--quiet"]
    others = {name: value for name, value in KEYS.items() if name != secret}
    done = subprocess.run(
        [str(arg) for arg in command],
        capture_output=True,
        text=True,
        env=compose_env(**others),
        check=False,
    )
    assert done.returncode != 0
    assert secret in done.stderr


def test_mlflow_runs_its_basic_auth_app_and_every_client_acts_as_its_admin(
    compose: dict[str, Any],
) -> None:
    mlflow = compose["services"]["mlflow"]
    dockerfile = (ROOT / "deploy" / "mlflow" / "Dockerfile").read_text()
    assert '"--app-name", "basic-auth"' in dockerfile and "COPY basic_auth.ini" in dockerfile
    auth = mlflow["environment"]
    admin = (auth["MLFLOW_AUTH_ADMIN_USERNAME"], auth["MLFLOW_AUTH_ADMIN_PASSWORD"])
    assert admin == ("driftline", KEYS["MLFLOW_TRACKING_PASSWORD"])
    assert any(v["type"] == "volume" and v["target"] == "/mlflow/auth" for v in mlflow["volumes"])
    for service in [*SERVICE_SETTINGS, "topics"]:
        env = compose["services"][service]["environment"]
        assert (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]) == admin


def test_every_service_runs_as_its_own_worker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for service, cls in SERVICE_SETTINGS.items():
        spec = services[service]
        assert spec["command"] == [service, "worker"]
        env = spec["environment"]
        for name in REQUIRED_SETTINGS:
            assert name in env, f"{service}: {name} is not set"
        port = env[f"DRIFTLINE_{service.upper()}_WEB_PORT"]
        assert port == str(cls.model_fields["web_port"].default)
        assert spec["read_only"] is True
        assert any(v["target"] == env["DRIFTLINE_DATA_DIR"] for v in spec["volumes"])
        assert spec["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_every_variable_is_a_setting(compose: dict[str, Any]) -> None:
    known = set(env_variables())
    for name, spec in compose["services"].items():
        for variable in spec.get("environment", {}):
            if variable.startswith("DRIFTLINE_"):
                assert variable in known, f"{name} sets {variable}, unknown to shared/settings.py"


def test_the_retrain_job_runs_only_in_its_profile_behind_the_drift_webhook(
    compose: dict[str, Any],
) -> None:
    assert "retrain" not in compose["services"]
    assert compose["services"]["drift"]["environment"]["DRIFTLINE_DRIFT_WEBHOOK_URLS"] == "[]"

    url = "http://retrain:6067/retrain"
    services = resolved("--profile", "retrain", DRIFTLINE_DRIFT_WEBHOOK_URLS=json.dumps([url]))[
        "services"
    ]

    job = services["retrain"]
    assert job["command"] == ["retrain", "serve"]
    assert job["image"] == services["drift"]["image"]
    port = job["environment"]["DRIFTLINE_RETRAIN_WEB_PORT"]
    assert port == str(RetrainSettings.model_fields["web_port"].default)
    assert f":{port}/" in url
    for name in REQUIRED_SETTINGS:
        assert name in job["environment"], f"retrain: {name} is not set"
    assert json.loads(services["drift"]["environment"]["DRIFTLINE_DRIFT_WEBHOOK_URLS"]) == [url]


def test_the_gateway_serves_the_v2_api_on_the_host_loopback(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["command"] == ["gateway"]
    assert gateway["image"] == compose["services"]["router"]["image"]
    env = gateway["environment"]
    port = env["DRIFTLINE_GATEWAY_WEB_PORT"]
    assert port == str(GatewaySettings.model_fields["web_port"].default)
    for name in REQUIRED_SETTINGS:
        assert name in env, f"gateway: {name} is not set"
    assert [(p["host_ip"], p["published"], p["target"]) for p in gateway["ports"]] == [
        ("127.0.0.1", port, int(port))
    ]
    assert gateway["read_only"] is True
    assert gateway["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_one_image_built_once_runs_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    image = services["topics"]["image"]
    assert services["topics"]["build"]["context"] == str(ROOT)
    for service in SERVICE_SETTINGS:
        assert services[service]["image"] == image and "build" not in services[service]


def test_topics_are_created_once_kafka_answers(compose: dict[str, Any]) -> None:
    topics = compose["services"]["topics"]
    assert topics["command"] == ["topics", "create"]
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4.0.")
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_mlflow_runs_on_postgres_with_an_artifact_volume(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    artifacts = mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"]
    assert any(v["type"] == "volume" and v["target"] == artifacts for v in mlflow["volumes"])
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_prometheus_scrapes_every_service_on_its_port() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        f"driftline-{service}": [f"{service}:{cls.model_fields['web_port'].default}"]
        for service, cls in {**SERVICE_SETTINGS, "gateway": GatewaySettings}.items()
    }


def test_prometheus_loads_the_alert_rules(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    mounts = {
        v["source"]: v["target"]
        for v in compose["services"]["prometheus"]["volumes"]
        if v["type"] == "bind"
    }
    rules_dir = mounts[str(ROOT / "deploy" / "prometheus" / "rules")]
    assert config["rule_files"] == [f"{rules_dir}/*.yml"]
    assert (ROOT / "deploy" / "prometheus" / "rules" / "driftline-alerts.yml").is_file()


def test_grafana_is_provisioned_with_the_dashboard(compose: dict[str, Any]) -> None:
    mounts = {
        v["source"]: v["target"]
        for v in compose["services"]["grafana"]["volumes"]
        if v["type"] == "bind"
    }
    dashboard = str(ROOT / "deploy" / "grafana" / "driftline-dashboard.json")
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/driftline.yml").read_text()
    )
    assert mounts[dashboard].startswith(provider["providers"][0]["options"]["path"] + "/")
    assert mounts[str(ROOT / "deploy" / "grafana" / "provisioning")] == "/etc/grafana/provisioning"


def test_the_console_runs_only_in_its_profile_with_its_token(compose: dict[str, Any]) -> None:
    assert "console" not in compose["services"]
    services = resolved("--profile", "console", DRIFTLINE_CONSOLE_EDITOR_TOKEN="t")["services"]
    console = services["console"]
    assert console["command"] == ["console"]
    assert console["image"] == services["router"]["image"]
    env = console["environment"]
    assert env["DRIFTLINE_CONSOLE_WEB_PORT"] == str(
        ConsoleSettings.model_fields["web_port"].default
    )
    assert env["DRIFTLINE_CONSOLE_EDITOR_TOKEN"] == "t"
    assert set(json.loads(env["DRIFTLINE_HEALTH_URLS"])) == set(SERVICE_SETTINGS)
    assert [p["host_ip"] for p in console["ports"]] == ["127.0.0.1"]
