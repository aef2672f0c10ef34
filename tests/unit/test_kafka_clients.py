"""The one Kafka client factory: every client it builds carries the security settings, and no
module builds a client any other way."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import certifi
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from shared import kafka_clients
from shared.app import create_app
from shared.errors import SettingsError
from shared.kafka_clients import KafkaAccess
from shared.settings import DriftlineSettings, IngestionSettings
from tests.support.faust_doubles import isolate_prometheus

ROOT = Path(__file__).resolve().parents[2]
CLIENT_CLASSES = {
    "AIOKafkaProducer",
    "AIOKafkaConsumer",
    "AIOKafkaAdminClient",
    "SASLCredentials",
    "SSLCredentials",
}


def secure_settings(**extra: Any) -> DriftlineSettings:
    return DriftlineSettings(
        kafka_broker="broker.example:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="router",
        kafka_sasl_password=SecretStr("s3cret"),
        kafka_ssl_cafile=Path(certifi.where()),
        **extra,
    )


def assert_secure(client: Any) -> None:
    """aiokafka keeps a client's connection settings on its AIOKafkaClient."""
    assert client._bootstrap_servers == "broker.example:9093"
    assert client._security_protocol == "SASL_SSL"
    assert client._sasl_mechanism == "SCRAM-SHA-512"
    assert client._sasl_plain_username == "router"
    assert client._sasl_plain_password == "s3cret"
    assert client._ssl_context is not None
    assert client._ssl_context.check_hostname


async def test_every_client_type_carries_protocol_mechanism_credentials_and_tls() -> None:
    settings = secure_settings()
    producer = kafka_clients.producer(settings, linger_ms=5)
    consumer = kafka_clients.consumer(settings, "features", group_id=None)
    admin = kafka_clients.admin_client(settings)
    try:
        assert_secure(producer.client)
        assert_secure(consumer._client)
        assert_secure(admin._client)
    finally:
        await admin.close()


def test_faust_apps_get_the_same_credentials(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_prometheus(monkeypatch)
    app = create_app(
        "factory", secure_settings(data_dir=tmp_path, allow_default_keys=True), IngestionSettings()
    )
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("router", "s3cret")
    assert auth["ssl_context"] is not None
    assert app.kafka_access == KafkaAccess.of(secure_settings())


def test_plaintext_settings_make_plaintext_clients() -> None:
    options = KafkaAccess("127.0.0.1:9092").client_options()
    assert options["security_protocol"] == "PLAINTEXT"
    assert options["ssl_context"] is None
    assert "sasl_plain_password" not in options
    assert kafka_clients.faust_credentials(KafkaAccess("127.0.0.1:9092")) is None


def test_sasl_without_a_password_is_one_settings_error() -> None:
    settings = DriftlineSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="router")
    with pytest.raises(SettingsError, match="DRIFTLINE_KAFKA_SASL_PASSWORD=<unset>"):
        KafkaAccess.of(settings)


def test_no_module_builds_a_kafka_client_but_the_factory() -> None:
    factory = ROOT / "shared" / "kafka_clients.py"
    found = []
    for folder in ("services", "shared", "loadtest", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == factory:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and _called_name(node.func) in CLIENT_CLASSES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None
