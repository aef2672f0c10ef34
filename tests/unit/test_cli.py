"""The `driftline` command: user mistakes print one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.workers import free_port


def _driftline(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **env},
        timeout=60,
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
