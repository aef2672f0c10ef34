"""The `driftline` command: user mistakes print one line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from shared.settings import SERVICE_SETTINGS, env_variables
from tests.support.workers import free_port


def _driftline(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **env},
        timeout=300,  # a guard against a hang, not a timing check: the test machine is busy
        check=False,
    )


def test_bad_environment_setting_is_one_line_and_exit_2() -> None:
    result = _driftline("router", "worker", DRIFTLINE_TOPIC_PARTITIONS="lots")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "error: setting DRIFTLINE_TOPIC_PARTITIONS='lots': Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DRIFTLINE_DRIFT_WEBHOOK_URLS", "http://x"), ("DRIFTLINE_DRIFT_DETECTORS", "{bad")],
)
def test_a_json_setting_that_is_not_json_is_one_line_and_exit_2(variable: str, value: str) -> None:
    result = _driftline("drift", "worker", **{variable: value})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: setting {variable}={value!r}: expected JSON: ")


def test_unknown_command_is_a_usage_error_without_traceback() -> None:
    result = _driftline("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "No such command" in result.stderr


def test_kafka_status_says_when_no_broker_answers() -> None:
    result = _driftline("kafka", "status", "--port", str(free_port()))
    assert result.returncode == 1
    assert "no broker answers" in result.stdout


HEAVY_MODULES = ("sklearn", "skops", "mlflow", "faust", "aiokafka", "river", "matplotlib", "pandas")
HELP_AND_LIST_LOADED = """
import json, sys
sys.argv = ["driftline", "--help"]
from services import cli
try:
    cli.main()
except SystemExit as exit:
    assert exit.code == 0, exit.code
# Modules read from somewhere: services' empty stand-in for river's datasets has no spec.
print(json.dumps(sorted(n for n, m in sys.modules.items() if getattr(m, "__spec__", None))))
"""


def test_help_imports_no_heavy_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", HELP_AND_LIST_LOADED],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "Usage: driftline" in result.stdout
    assert [m for m in loaded if m.split(".")[0] in HEAVY_MODULES] == []


def test_version_prints_the_package_version() -> None:
    result = _driftline("--version")
    assert (result.returncode, result.stdout) == (0, f"driftline {version('driftline')}\n")


def _closed_port_env() -> dict[str, str]:
    return {
        "DRIFTLINE_KAFKA_BROKER": f"127.0.0.1:{free_port()}",
        "DRIFTLINE_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
    }


@pytest.mark.parametrize(
    "command",
    [
        ["topics", "create"],
        ["deploy", "fraud", "--stream", "payments", "--champion", "models:/fraud@champion"],
        ["deployments", "list"],
        ["deployments", "delete", "fraud", "--yes"],
        ["streams", "list"],
        ["streams", "declare", "--file", "{stream_file}"],
        ["apply", "-f", "{spec_file}", "--dry-run"],
        ["alerts", "list"],
        ["trace", "ev-1"],
        ["promote", "--deployment", "fraud", "--yes"],
        ["rollback", "--deployment", "fraud", "--dry-run"],
    ],
)
def test_with_the_broker_down_a_command_is_one_line_and_exit_3(
    command: list[str], tmp_path: Path
) -> None:
    stream_file = tmp_path / "stream.json"
    stream_file.write_text('{"name": "payments", "features": [{"name": "amount"}]}')
    spec_file = tmp_path / "stream.yaml"
    spec_file.write_text("kind: Stream\nname: payments\nfeatures: [{name: amount}]\n")
    env = _closed_port_env()
    files = {"stream_file": stream_file, "spec_file": spec_file}
    result = _driftline(*(arg.format(**files) for arg in command), **env)
    assert result.returncode == 3, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: Kafka at {env['DRIFTLINE_KAFKA_BROKER']} is unavailable (")
    assert line.endswith("; retry later")
    assert result.stdout == ""


def test_with_the_broker_down_status_shows_health_then_one_line_and_exit_3() -> None:
    env = _closed_port_env()
    result = _driftline("status", "--health-url", "router=http://127.0.0.1:1/health", **env)
    assert result.returncode == 3
    assert "router    │ down (no answer) │ http://127.0.0.1:1/health" in result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: Kafka at {env['DRIFTLINE_KAFKA_BROKER']} is unavailable (")

    as_json = _driftline("status", "--json", **env)
    assert as_json.returncode == 3
    report = json.loads(as_json.stdout)
    assert [s["service"] for s in report["services"]] == list(SERVICE_SETTINGS)
    assert {s["health"] for s in report["services"]} == {"down (no answer)"}
    assert (report["lag"], report["deployments"], report["decisions"]) == (None, None, None)


def test_with_mlflow_down_models_list_is_one_line_and_exit_3() -> None:
    env = _closed_port_env()
    result = _driftline("models", "list", **env)
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"error: MLflow at {env['DRIFTLINE_MLFLOW_TRACKING_URI']} is unavailable "
        "(could not list models: ConnectionError); retry later"
    ]


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("notauri", "unknown scheme"),
        ("models:/fraud", "expected models:/<name>@<alias> or models:/<name>/<n>"),
        ("online:", "expected online:<model id>"),
    ],
)
def test_deploy_refuses_a_bad_model_uri_before_it_reaches_kafka(uri: str, problem: str) -> None:
    result = _driftline(
        "deploy", "fraud", "--stream", "payments", "--champion", uri, **_closed_port_env()
    )
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: unknown model: {uri}: {problem}")


def test_apply_refuses_a_bad_spec_before_it_reaches_kafka(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: Stream\nname: payments\nfeatures: [{name: amount}]\n")
    (tmp_path / "b.yaml").write_text("kind: Deployment\nname: fraud\nstream: payments\n")
    result = _driftline("apply", "-f", str(tmp_path), **_closed_port_env())
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'b.yaml'} document 1: Deployment 'fraud': variants: Field required"
    ]
    empty = _driftline("apply", "-f", str(tmp_path / "a.yaml"), "-f", str(tmp_path / "none"))
    assert (empty.returncode, empty.stderr) == (
        2,
        f"error: {tmp_path / 'none'}: no such file or directory\n",
    )


def test_schema_prints_the_json_schema_of_a_spec() -> None:
    result = _driftline("schema", "stream")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert schema["$ref"] == "#/$defs/StreamSchema"
    assert schema["$defs"]["StreamSchema"]["properties"]["kind"]["const"] == "Stream"


def test_settings_show_type_default_and_value_unwrapped_when_piped() -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "settings"],
        capture_output=True,
        text=True,
        env={**env, "DRIFTLINE_TOPIC_PARTITIONS": "12", "DRIFTLINE_WEBHOOK_HMAC_KEY": "s3cret"},
        timeout=60,
        check=True,
    )
    [partitions] = [line for line in result.stdout.splitlines() if "TOPIC_PARTITIONS" in line]
    cells = [cell.strip() for cell in partitions.strip("│ ").split("│")]
    assert cells == [
        "DRIFTLINE_TOPIC_PARTITIONS",
        "int",
        "4",
        "12",
        "Partitions of every keyed topic and table changelog (the unit of parallelism).",
    ]
    assert "s3cret" not in result.stdout

    docs = json.loads(_driftline("settings", "--json", DRIFTLINE_WEBHOOK_HMAC_KEY="s3cret").stdout)
    [key] = [d for d in docs if d["variable"] == "DRIFTLINE_WEBHOOK_HMAC_KEY"]
    assert key == {
        "variable": "DRIFTLINE_WEBHOOK_HMAC_KEY",
        "type": "secret",
        "default": "**********",
        "value": "**********",
        "description": key["description"],
    }
    assert {d["variable"] for d in docs} == set(env_variables())
