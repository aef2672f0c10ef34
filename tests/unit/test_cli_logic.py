"""The pure pieces behind the `driftline` command: what a failure means (retry later or fix
it), which health URL a service is asked on, how a setting's type reads, confirmation."""

from __future__ import annotations

import doctest
import io
import logging
import os

import mlflow.exceptions
import pytest
import requests
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailed

from services.tools import terminal
from shared import settings as cfg
from shared.client_logs import KAFKA_CLIENT_ERRORS, HeldErrors
from shared.errors import DriftlineError, SettingsError, UnavailableError
from shared.health import health_urls
from shared.kafka_clients import KafkaAccess, kafka_failure
from shared.registry import RegistryError, registry_failure

BROKERS = KafkaAccess("k1:9092,k2:9092")


@pytest.mark.parametrize("error", [KafkaConnectionError("refused"), KafkaTimeoutError()])
def test_a_broker_out_of_reach_is_retry_later(error: Exception) -> None:
    failure = kafka_failure(error, BROKERS)
    assert isinstance(failure, UnavailableError) and failure.exit_code == 3
    assert str(failure).startswith("Kafka at k1:9092,k2:9092 is unavailable (")


def test_a_refused_login_is_the_users_to_fix() -> None:
    failure = kafka_failure(SaslAuthenticationFailed("bad password"), BROKERS)
    assert not isinstance(failure, UnavailableError) and failure.exit_code == 2
    assert "check the DRIFTLINE_KAFKA_* settings" in str(failure)


def test_a_refusal_aiokafka_swallowed_while_bootstrapping_is_still_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = HeldErrors()
    logger = logging.getLogger("test.aiokafka.client")
    monkeypatch.setattr(logger, "handlers", [held])
    monkeypatch.setattr(logger, "propagate", False)
    logger.error('Unable connect to "%s:%s": %s', "k1", 9092, SaslAuthenticationFailed("no"))
    monkeypatch.setattr(KAFKA_CLIENT_ERRORS, "errors", held.errors)

    failure = kafka_failure(KafkaConnectionError("Unable to bootstrap from k1"), BROKERS)
    assert failure.exit_code == 2
    assert str(failure).startswith("Kafka at k1:9092,k2:9092: [Error 58] SaslAuthenticationFailed")


def _mlflow_error(context: Exception | None) -> mlflow.exceptions.MlflowException:
    """An MLflow error as its REST client raises it: inside ``except`` of the request's own
    error (its context) when the request failed, alone when the server answered an error."""
    message = "API request failed" if context else "RESOURCE_DOES_NOT_EXIST: no model 'x'\nmore"
    exc = mlflow.exceptions.MlflowException(message)
    exc.__context__ = context
    return exc


@pytest.mark.parametrize("cause", [requests.ConnectionError("refused"), requests.Timeout("slow")])
def test_mlflow_out_of_reach_is_retry_later(cause: Exception) -> None:
    failure = registry_failure("http://mlflow:5000", "list models", _mlflow_error(cause))
    assert isinstance(failure, UnavailableError) and failure.exit_code == 3
    assert str(failure) == (
        f"MLflow at http://mlflow:5000 is unavailable (could not list models: "
        f"{type(cause).__name__}); retry later"
    )


def test_an_mlflow_refusal_is_its_first_line() -> None:
    failure = registry_failure("http://mlflow:5000", "read 'x'", _mlflow_error(None))
    assert isinstance(failure, RegistryError) and failure.exit_code == 2
    assert str(failure) == "MLflow at http://mlflow:5000 could not read 'x': " + (
        "RESOURCE_DOES_NOT_EXIST: no model 'x'"
    )


def test_health_urls_come_from_option_then_setting_then_host() -> None:
    urls = health_urls(
        "10.0.0.7",
        {"router": "http://router:6062/health", "drift": "http://drift:6064/health"},
        ["drift=http://localhost:16064/health"],
    )
    assert urls["router"] == "http://router:6062/health"
    assert urls["drift"] == "http://localhost:16064/health"
    assert urls["ingestion"] == "http://10.0.0.7:6061/health"
    assert list(urls) == list(cfg.SERVICE_SETTINGS)


@pytest.mark.parametrize("given", ["router", "nobody=http://x", "router="])
def test_a_bad_health_url_option_is_one_line(given: str) -> None:
    with pytest.raises(DriftlineError, match="expected <service>=<url>"):
        health_urls("127.0.0.1", {}, [given])


def test_health_urls_of_unknown_services_are_a_bad_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_HEALTH_URLS", '{"routr": "http://routr:6062/health"}')
    with pytest.raises(SettingsError, match=r"^setting DRIFTLINE_HEALTH_URLS=.*no service routr"):
        cfg.load(cfg.DriftlineSettings)


def test_setting_types_read_as_users_write_them() -> None:
    finder = doctest.DocTestFinder()
    [test] = finder.find(cfg.type_name, "type_name", globs=vars(cfg))
    assert doctest.DocTestRunner().run(test).failed == 0
    assert cfg.type_name(cfg.DriftlineSettings.model_fields["webhook_hmac_key"].annotation) == (
        "secret"
    )


def test_setting_docs_mask_secrets_and_show_what_is_set() -> None:
    docs = {
        d.variable: d
        for d in cfg.setting_docs(
            {"DRIFTLINE_STATE_HMAC_KEY": "k", "DRIFTLINE_STORE": "rocksdb://"}
        )
    }
    assert (docs["DRIFTLINE_STATE_HMAC_KEY"].value, docs["DRIFTLINE_STATE_HMAC_KEY"].default) == (
        cfg.MASKED,
        cfg.MASKED,
    )
    assert (docs["DRIFTLINE_STORE"].value, docs["DRIFTLINE_STORE"].default) == (
        "rocksdb://",
        "memory://",
    )
    assert docs["DRIFTLINE_DATA_DIR"].default == ".driftline"
    assert docs["DRIFTLINE_ALLOWED_TRAINERS"].default == ["shared.trainers:gradient_boosting"]
    assert all("\n" not in d.description for d in docs.values())


def test_confirm_refuses_without_a_terminal_unless_told_yes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    terminal.confirm("promote x?", yes=True)
    with pytest.raises(DriftlineError, match=r"^promote x\? needs confirmation: pass --yes"):
        terminal.confirm("promote x?", yes=False)


def test_mlflow_bounds_leave_what_the_environment_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.setenv(name, "")  # so that the test's end restores the variable as it was
        monkeypatch.delenv(name)
    terminal.bound_mlflow_requests()
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
