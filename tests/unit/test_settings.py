"""Settings come from the environment; a bad value is one readable line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from shared import settings as cfg
from shared.app import create_app
from shared.errors import SealError, SettingsError
from shared.sealing import seal, unseal
from shared.settings import INSECURE_DEV_KEY, DriftlineSettings, RouterSettings
from shared.signing import KeyRing


def test_defaults_describe_a_local_driftline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in cfg.env_variables():
        monkeypatch.delenv(name, raising=False)
    common = cfg.load(cfg.DriftlineSettings)
    assert common.bootstrap_servers == "127.0.0.1:9092"
    assert common.faust_broker == "kafka://127.0.0.1:9092"
    assert common.store == "memory://"


def test_environment_overrides_with_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_KAFKA_BROKER", "k1:9092,k2:9093")
    monkeypatch.setenv("DRIFTLINE_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("DRIFTLINE_ROUTER_WEB_PORT", "7000")
    assert cfg.load(cfg.DriftlineSettings).bootstrap_servers == "k1:9092,k2:9093"
    assert cfg.load(cfg.DriftlineSettings).topic_partitions == 12
    assert cfg.load(cfg.RouterSettings).web_port == 7000


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("DRIFTLINE_TOPIC_PARTITIONS", "many", "valid integer"),
        ("DRIFTLINE_TOPIC_PARTITIONS", "0", "greater than or equal to 1"),
        ("DRIFTLINE_KAFKA_BROKER", "localhost", "host:port"),
        ("DRIFTLINE_STORE", "redis://x", "memory://"),
        ("DRIFTLINE_PROCESSING_GUARANTEE", "maybe", "at_least_once"),
        ("DRIFTLINE_TOPIC_PREFIX", "a b", "letters, digits"),
    ],
)
def test_bad_value_names_variable_value_and_problem(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        cfg.load(cfg.DriftlineSettings)
    message = str(caught.value)
    assert message.startswith(f"setting {variable}={value!r}: ")
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("DRIFTLINE_DRIFT_WEBHOOK_URLS", "http://x", "expected JSON: Expecting value"),
        ("DRIFTLINE_DRIFT_DETECTORS", "{bad", "expected JSON: Expecting property name"),
    ],
)
def test_a_json_setting_that_is_not_json_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        cfg.load(cfg.DriftSettings)
    message = str(caught.value)
    assert message.startswith(f"setting {variable}={value!r}: {problem}")
    assert "\n" not in message


def test_every_setting_is_documented() -> None:
    variables = cfg.env_variables()
    assert all(description for description in variables.values()), [
        name for name, description in variables.items() if not description
    ]
    assert {f"DRIFTLINE_{s.upper()}_WEB_PORT" for s in cfg.SERVICE_SETTINGS} <= set(variables)


def test_secrets_do_not_leak_into_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTLINE_SNAPSHOT_HMAC_KEY", "s3cret-value")
    common = cfg.load(cfg.DriftlineSettings)
    assert "s3cret-value" not in repr(common)
    assert common.snapshot_hmac_key.get_secret_value() == "s3cret-value"


def test_workers_refuse_the_public_keys_unless_development_allows_them(tmp_path: Path) -> None:
    public = DriftlineSettings(allow_default_keys=False, data_dir=tmp_path)
    with pytest.raises(SettingsError, match=r"DRIFTLINE_SNAPSHOT_HMAC_KEY=.*public development"):
        public.require_secret_keys()
    with pytest.raises(SettingsError, match=r"DRIFTLINE_SNAPSHOT_HMAC_KEY=.*public development"):
        create_app("router", public, RouterSettings())
    secret = {f"{k}_hmac_key": SecretStr(f"{k}-secret") for k in ("snapshot", "webhook", "state")}
    DriftlineSettings(allow_default_keys=False, **secret).require_secret_keys()
    rotated_from_public = DriftlineSettings(
        allow_default_keys=False, **secret, state_hmac_previous_key=SecretStr(INSECURE_DEV_KEY)
    )
    with pytest.raises(SettingsError, match="DRIFTLINE_STATE_HMAC_PREVIOUS_KEY"):
        rotated_from_public.require_secret_keys()
    DriftlineSettings(allow_default_keys=True).require_secret_keys()


def test_a_previous_key_verifies_but_never_signs() -> None:
    old, new = SecretStr("old-key"), SecretStr("new-key")
    sealed_before = seal(b"v", ("t", b"k"), DriftlineSettings(state_hmac_key=old).state_keys, 1)
    rotated = DriftlineSettings(state_hmac_key=new, state_hmac_previous_key=old).state_keys

    assert unseal(sealed_before, ("t", b"k"), rotated) == (1, b"v")
    assert seal(b"v", ("t", b"k"), rotated, 1) == seal(b"v", ("t", b"k"), KeyRing(new), 1)
    with pytest.raises(SealError):
        unseal(sealed_before, ("t", b"k"), DriftlineSettings(state_hmac_key=new).state_keys)
