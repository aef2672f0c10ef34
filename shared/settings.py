"""Settings read from the environment, in one place so deployment files can be checked against it.

`DriftlineSettings` (prefix ``DRIFTLINE_``) holds what every service shares: Kafka, topics, the
table store, MLflow and secrets. Each service has its own frozen class with its own prefix
(``DRIFTLINE_ROUTER_`` ...) for what only it reads. Load them with :func:`load`, which turns a bad
value into one `SettingsError` line instead of a validation traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from shared.errors import SettingsError
from shared.signing import KeyRing

INSECURE_DEV_KEY = "driftline-dev-key-change-me"
_BROKER_ADDRESS = re.compile(r"^[A-Za-z0-9.\-_\[\]:]+:\d{1,5}$")
_TABLE_STORES = ("memory://", "rocksdb://", "rocksdict://")


class DriftlineSettings(BaseSettings):
    """What every Driftline service and CLI command reads (prefix ``DRIFTLINE_``)."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLINE_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    kafka_broker: str = "kafka://127.0.0.1:9092"
    """Bootstrap servers, comma-separated ``host:port`` (``kafka://`` prefix optional)."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How clients talk to the brokers."""
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    """SASL mechanism, used when the protocol is SASL_*."""
    kafka_sasl_username: str | None = None
    """SASL user name."""
    kafka_sasl_password: SecretStr | None = None
    """SASL password."""
    kafka_ssl_cafile: Path | None = None
    """CA bundle that signs the brokers' certificates (SSL and SASL_SSL)."""
    kafka_session_timeout_s: float = Field(default=45.0, ge=6, le=300)
    """How long a consumer group waits on a worker that stopped heartbeating (killed, or its
    node gone) before its partitions go to the others: the failover time after a crash. Kafka's
    own default; lower means faster failover, but a worker whose event loop stalls for longer
    (heartbeats every 3 s) is taken for dead and its partitions move."""
    topic_prefix: str = ""
    """Prepended to every topic and consumer-group name: many Driftlines share one cluster."""
    topic_partitions: int = Field(default=4, ge=1, le=4096)
    """Partitions of every keyed topic and table changelog (the unit of parallelism)."""
    topic_replication_factor: int = Field(default=1, ge=1, le=16)
    """Replication factor of the topics Driftline creates."""
    store: str = "memory://"
    """Faust table store: ``memory://`` (rebuilt from the changelog on start) or ``rocksdb://``."""
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    """Faust's processing guarantee; consumers are idempotent either way."""
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    """MLflow tracking server and model registry."""
    allowed_trainers: frozenset[str] = frozenset({"shared.trainers:gradient_boosting"})
    """JSON list of the ``module:function`` trainers a deployment's ``retrain.trainer`` may name;
    retraining refuses any other (a deployment record must not choose the code that runs)."""
    snapshot_hmac_key: SecretStr = SecretStr(INSECURE_DEV_KEY)
    """Key that signs model snapshots; a snapshot signed with another key is refused."""
    webhook_hmac_key: SecretStr = SecretStr(INSECURE_DEV_KEY)
    """Key that signs webhooks (Standard Webhooks ``webhook-signature`` over id, timestamp and
    body)."""
    state_hmac_key: SecretStr = SecretStr(INSECURE_DEV_KEY)
    """Key that seals the pickled state services keep in tables: a value read back from a
    changelog without its MAC under this key is never unpickled."""
    snapshot_hmac_previous_key: SecretStr | None = None
    """The snapshot key before the last rotation: verifies what it signed, signs nothing."""
    webhook_hmac_previous_key: SecretStr | None = None
    """The webhook key before the last rotation: verifies what it signed, signs nothing."""
    state_hmac_previous_key: SecretStr | None = None
    """The state key before the last rotation: verifies what it sealed, seals nothing."""
    webhook_tolerance_s: float = Field(default=300.0, gt=0, le=86_400)
    """A received webhook whose ``webhook-timestamp`` is further than this from the receiver's
    clock is refused (401): a captured request cannot be replayed later."""
    allow_default_keys: bool = False
    """Development only: let workers run with the public default HMAC keys, which anyone can sign
    with (the demo and the tests set it); otherwise they refuse to start."""
    data_dir: Path = Path(".driftline")
    """Where workers keep table stores and local files."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written to the log."""
    log_format: Literal["json", "console"] = "json"
    """``json`` for machines, ``console`` for people."""
    web_host: str = "127.0.0.1"
    """Address the workers' HTTP endpoints (metrics, health) bind to; 0.0.0.0 in containers."""
    health_urls: dict[str, str] = Field(default_factory=dict)
    """JSON: a service's health URL for `driftline status` where it is not on the status host's
    web port, e.g. ``{"router": "http://driftline-router:6062/health"}`` on Kubernetes."""
    shutdown_grace_s: float = Field(default=20.0, gt=0, le=600)
    """Longest a worker's stop may take after SIGTERM or SIGINT before it exits anyway (a broker
    out of reach can hold a clean stop forever); keep it below the pod's termination grace
    period (60 s in the chart)."""

    @field_validator("kafka_broker")
    @classmethod
    def _check_broker(cls, value: str) -> str:
        addresses = [a.strip() for a in value.removeprefix("kafka://").split(",")]
        bad = [a for a in addresses if not _BROKER_ADDRESS.match(a)]
        if bad:
            raise ValueError(f"expected host:port[,host:port...], got {', '.join(bad)!r}")
        return value

    @field_validator("health_urls")
    @classmethod
    def _check_health_urls(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(SERVICE_SETTINGS))
        if unknown:
            raise ValueError(
                f"no service {', '.join(unknown)}; services: {', '.join(SERVICE_SETTINGS)}"
            )
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]*", value):
            raise ValueError("only letters, digits, '.', '_' and '-' may appear in a topic name")
        return value

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if not value.startswith(_TABLE_STORES):
            raise ValueError(f"expected one of {', '.join(_TABLE_STORES)}")
        return value

    @property
    def snapshot_keys(self) -> KeyRing:
        """The keys that sign and verify model snapshots."""
        return _ring(self.snapshot_hmac_key, self.snapshot_hmac_previous_key)

    @property
    def webhook_keys(self) -> KeyRing:
        """The keys that sign and verify webhook bodies."""
        return _ring(self.webhook_hmac_key, self.webhook_hmac_previous_key)

    @property
    def state_keys(self) -> KeyRing:
        """The keys that seal and verify table state."""
        return _ring(self.state_hmac_key, self.state_hmac_previous_key)

    def require_secret_keys(self) -> None:
        """Refuse the public development key, which anyone can sign with, as any HMAC key
        (current or previous) unless `allow_default_keys` is on; called by every process that
        signs or verifies (the workers, the retrain job)."""
        if self.allow_default_keys:
            return
        for name in _KEY_FIELDS:
            key: SecretStr | None = getattr(self, name)
            if key is not None and key.get_secret_value() == INSECURE_DEV_KEY:
                raise SettingsError(
                    env_name(DriftlineSettings, name),
                    INSECURE_DEV_KEY,
                    "the public development key; set a secret one (e.g. openssl rand -hex 32), "
                    "or DRIFTLINE_ALLOW_DEFAULT_KEYS=true for development",
                )

    @property
    def bootstrap_servers(self) -> str:
        """The broker list as plain ``host:port,...`` for aiokafka and other clients."""
        return self.kafka_broker.removeprefix("kafka://")

    @property
    def faust_broker(self) -> str:
        """The broker list in Faust's URL form."""
        return "kafka://" + self.bootstrap_servers


_KEY_FIELDS = (
    "snapshot_hmac_key",
    "webhook_hmac_key",
    "state_hmac_key",
    "snapshot_hmac_previous_key",
    "webhook_hmac_previous_key",
    "state_hmac_previous_key",
)


def _ring(current: SecretStr, previous: SecretStr | None) -> KeyRing:
    return KeyRing(current, () if previous is None else (previous,))


class ServiceSettings(BaseSettings):
    """Base of each service's own settings: where its HTTP endpoint listens."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)

    web_port: int = Field(default=6066, ge=1, le=65535)
    """Port of the worker's HTTP endpoint (``/metrics``, ``/health``)."""


class IngestionSettings(ServiceSettings):
    """Feature ingestion (prefix ``DRIFTLINE_INGESTION_``)."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_INGESTION_")

    web_port: int = Field(default=6061, ge=1, le=65535)
    """Port of the worker's HTTP endpoint (``/metrics``, ``/health``)."""
    max_event_bytes: int = Field(default=1_000_000, ge=64)
    """Raw events larger than this are dead-lettered unread."""
    max_future_seconds: float = Field(default=300.0, ge=0)
    """Raw events stamped further ahead of the worker's clock are dead-lettered: one such event
    would move its partition's event time on and age every window and seen id out of it."""
    dedup_window_seconds: int = Field(default=600, ge=1)
    """An event id seen again within this much event time (up to twice it) is a duplicate."""
    aggregate_bucket_seconds: int = Field(default=60, ge=1)
    """Granularity of windowed aggregates: a window's oldest bucket may be partly outside it."""
    aggregate_horizon_minutes: int = Field(default=60, ge=1, le=24 * 60)
    """Longest aggregate window kept; a stream asking for more is refused."""
    batch_max_events: int = Field(default=500, ge=1)
    """Most raw events ingested as one micro-batch (their feature events produced together)."""
    batch_within_s: float = Field(default=0.01, gt=0)
    """Longest an event waits for its micro-batch to fill: the latency paid at low rates."""


class ModelServingSettings(ServiceSettings):
    """What a process that answers with models (router, gateway) loads them with."""

    model_refresh_seconds: float = Field(default=30.0, gt=0)
    """How often MLflow aliases are re-resolved (a moved alias reloads its model)."""
    online_model_cache_size: int = Field(default=10_000, ge=1)
    """Unpickled online models kept in memory; others are unpickled again when used."""
    v2_timeout_s: float = Field(default=5.0, gt=0)
    """Longest one request to a V2 (Open Inference Protocol) endpoint may take."""
    v2_max_concurrency: int = Field(default=4, ge=1)
    """Requests in flight per V2 endpoint at most."""
    v2_breaker_failures: int = Field(default=3, ge=1)
    """Outages in a row (no answer, timeout, 5xx) that open a V2 endpoint's circuit: what it
    serves then fails at once instead of waiting for a timeout each."""
    v2_breaker_reset_s: float = Field(default=2.0, gt=0)
    """Seconds an open circuit refuses before one probe request may try the endpoint again."""


class RouterSettings(ModelServingSettings):
    """Inference router (prefix ``DRIFTLINE_ROUTER_``)."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_ROUTER_")

    web_port: int = Field(default=6062, ge=1, le=65535)
    """Port of the worker's HTTP endpoint (``/metrics``, ``/health``)."""
    batch_max_events: int = Field(default=500, ge=1)
    """Most feature events routed as one micro-batch (decode, models, produce per batch)."""
    batch_within_s: float = Field(default=0.01, gt=0)
    """Longest an event waits for its micro-batch to fill: the latency paid at low rates."""


class FeedbackSettings(ServiceSettings):
    """Feedback joiner (prefix ``DRIFTLINE_FEEDBACK_``)."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_FEEDBACK_")

    web_port: int = Field(default=6063, ge=1, le=65535)
    """Port of the worker's HTTP endpoint (``/metrics``, ``/health``)."""
    prediction_ttl_s: float = Field(default=3600.0, gt=0)
    """Event-time seconds a prediction waits for its feedback before it expires unlabeled."""
    early_feedback_ttl_s: float = Field(default=600.0, gt=0)
    """Event-time seconds feedback waits for its prediction; then it is dead-lettered as for an
    unknown event."""
    remember_s: float = Field(default=3600.0, ge=0)
    """Event-time seconds a labeled or expired event is remembered after its prediction's expiry:
    duplicate feedback is dropped and late feedback dead-lettered as past expiry meanwhile."""
    sweep_every_s: float = Field(default=10.0, gt=0)
    """Event-time seconds between sweeps that remove expired entries from the join table."""
    batch_max_events: int = Field(default=500, ge=1)
    """Most predictions and feedback joined as one micro-batch: its labeled records are
    acknowledged once, before the batch's join states are written."""
    batch_within_s: float = Field(default=0.01, gt=0)
    """Longest a message waits for its micro-batch to fill: the latency paid at low rates."""


class DriftSettings(ServiceSettings):
    """Drift detection (prefix ``DRIFTLINE_DRIFT_``)."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_DRIFT_")

    web_port: int = Field(default=6064, ge=1, le=65535)
    """Port of the worker's HTTP endpoint (``/metrics``, ``/health``)."""
    detectors: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"default": {"kind": "adwin", "delta": 0.002}}
    )
    """JSON: data-drift detector per ``stream:feature``, ``stream``, ``default`` (numeric) or
    ``categorical``, e.g. ``{"default": {"kind": "adwin", "delta": 0.002}}``."""
    concept_detectors: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "classification": {"kind": "hddm_a"},
            "regression": {"kind": "adwin"},
        }
    )
    """JSON: concept-drift detector per ``model:version``, ``model``, ``classification`` or
    ``regression``, e.g. ``{"fraud": {"kind": "hddm_a", "drift_confidence": 0.001}}``."""
    cooldown_s: float = Field(default=300.0, ge=0)
    """Event-time seconds after an alert during which repeats of its key and level are dropped."""
    escalate_after: int = Field(default=3, ge=1)
    """This many drifts of one key within `escalate_within_s` make an escalated alert."""
    escalate_within_s: float = Field(default=3600.0, gt=0)
    """Event-time span of the escalation rule."""
    error_window_s: float = Field(default=60.0, gt=0)
    """Size of the tumbling event-time windows of each model version's error rate."""
    error_hop_window_s: float = Field(default=300.0, gt=0)
    """Size of the hopping error-rate windows (they advance by `error_window_s`)."""
    webhook_urls: list[str] = Field(default_factory=list)
    """JSON list of HTTP(S) URLs that receive alerts of `webhook_levels` (signed JSON bodies)."""
    webhook_levels: list[Literal["warning", "drift", "escalated"]] = Field(
        default_factory=lambda: ["drift", "escalated"]
    )
    """JSON list: which alerts go to the webhooks (``escalated`` means escalated ones only)."""
    webhook_attempts: int = Field(default=5, ge=1, le=20)
    """Deliveries tried per alert and URL before it is dead-lettered."""
    webhook_backoff_s: float = Field(default=0.5, gt=0)
    """Wait before the first retry; it doubles after every failed attempt (capped at 60 s)."""
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    """Timeout of one webhook request."""
    batch_max_events: int = Field(default=500, ge=1)
    """Most values a detector agent takes as one micro-batch: each touched detector is pickled
    into its table once per batch instead of once per value."""
    batch_within_s: float = Field(default=0.05, gt=0)
    """Longest a value waits for its micro-batch to fill: the latency paid at low rates."""
    promotion_every: int = Field(default=100, ge=1)
    """Labeled challenger outcomes between two looks of a deployment's promotion policy; with
    the policy's `max_looks`, it bounds how long a challenger is weighed."""


class LearnerSettings(ServiceSettings):
    """Online learner (prefix ``DRIFTLINE_LEARNER_``)."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_LEARNER_")

    web_port: int = Field(default=6065, ge=1, le=65535)
    """Port of the worker's HTTP endpoint (``/metrics``, ``/health``)."""
    snapshot_every: int = Field(default=100, ge=1)
    """Publish a model snapshot after this many updates of one model."""
    snapshot_every_s: float = Field(default=30.0, gt=0)
    """Also publish a snapshot of every model updated since its last one this often."""
    rolling_window: int = Field(default=1000, ge=1)
    """Labeled predictions in the rolling prequential metrics."""
    mlflow_every_s: float = Field(default=300.0, gt=0)
    """How often shared (not per-entity) models log metrics and register a version in MLflow."""
    mlflow_enabled: bool = True
    """Whether the learner writes to MLflow at all."""
    batch_size: int = Field(default=200, ge=1)
    """Examples learned per batch at most: a model's state is written to its changelog once per
    batch, not per example (a big forest pickles to megabytes)."""
    batch_within_s: float = Field(default=0.5, gt=0)
    """Longest wait to fill a batch before learning what has come."""
    model_cache_size: int = Field(default=10_000, ge=1)
    """Unpickled models kept in memory between batches; others are read from the table again."""


class RetrainSettings(ServiceSettings):
    """Webhook-triggered retraining job, ``driftline retrain serve`` (prefix
    ``DRIFTLINE_RETRAIN_``)."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_RETRAIN_")

    web_port: int = Field(default=6067, ge=1, le=65535)
    """Port of the job's HTTP endpoint (``POST /retrain`` for drift webhooks, ``/health``)."""
    retry_every_s: float = Field(default=60.0, gt=0)
    """Wait before retrying an alert whose window holds too few labels yet."""
    retry_for_s: float = Field(default=3600.0, gt=0)
    """How long after its webhook an alert is retried before the job gives it up."""


class ConsoleSettings(ServiceSettings):
    """The operator console, ``driftline console`` (prefix ``DRIFTLINE_CONSOLE_``). It refuses to
    start without a way to authenticate: a token, or a trusted header from an OIDC proxy."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_CONSOLE_")

    web_port: int = Field(default=6068, ge=1, le=65535)
    """Port of the console's pages (and ``/health``, ``/metrics``)."""
    viewer_token: SecretStr | None = None
    """Token of read-only users: sent as ``Authorization: Bearer <token>`` or as the password of
    basic auth (any user name, recorded as who acted)."""
    editor_token: SecretStr | None = None
    """Token of editors, who may also change deployments, promote, roll back and retrain; sent
    like `viewer_token`."""
    trusted_user_header: str | None = None
    """Header naming the user an authenticating proxy (e.g. oauth2-proxy's
    ``X-Forwarded-User``) let through; unset: no header is trusted. Set it only when the proxy
    is the console's sole way in and overwrites the header on every request."""
    trusted_groups_header: str = "X-Forwarded-Groups"
    """Header with the proxied user's groups, comma-separated."""
    editor_groups: frozenset[str] = frozenset({"driftline-editors"})
    """JSON list: proxied users in one of these groups are editors; others are viewers."""
    history: int = Field(default=1000, ge=10, le=100_000)
    """Alerts and decisions kept in memory for the pages (the newest ones)."""
    error_horizon_s: float = Field(default=3600.0, gt=0)
    """Labeled predictions of the last this many seconds feed the error charts."""
    error_bucket_s: float = Field(default=60.0, gt=0)
    """Width of one point of the error charts."""
    distribution_sample: int = Field(default=1000, ge=10, le=100_000)
    """Values of each declared feature kept for the stream page, twice: the first ones seen
    after the console started (or an editor reset the stream's reference) and the latest."""
    distribution_bins: int = Field(default=10, ge=2, le=100)
    """Bins of equal width of a numeric feature's histograms on the stream page."""
    refresh_s: float = Field(default=5.0, gt=0)
    """How often health, metrics and lag are asked again."""

    @property
    def authenticates(self) -> bool:
        """Whether any way in is configured."""
        return bool(self.viewer_token or self.editor_token or self.trusted_user_header)


class GatewaySettings(ModelServingSettings):
    """V2 inference gateway, ``driftline gateway`` (prefix ``DRIFTLINE_GATEWAY_``)."""

    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_GATEWAY_")

    web_port: int = Field(default=6069, ge=1, le=65535)
    """Port of the gateway's HTTP endpoint (the V2 REST API, ``/metrics``, ``/health``)."""
    max_request_bytes: int = Field(default=1_000_000, ge=1024)
    """Inference requests with a larger body are refused (413) unread."""
    max_rows: int = Field(default=1000, ge=1)
    """Most rows (events) one inference request may hold."""
    write_timeout_s: float = Field(default=10.0, gt=0)
    """Longest a request waits for Kafka to store its records; then it is answered 503 (nothing
    is answered that is not recorded)."""
    v2_max_concurrency: int = Field(default=32, ge=1)
    """Requests in flight per V2 model endpoint at most: the gateway asks once per request,
    not once per micro-batch as the router does, so it allows more than the router."""


class MlflowCredentials(BaseSettings):
    """Credentials for MLflow's basic-auth app, in MLflow's own client variables (prefix
    ``MLFLOW_TRACKING_``): every MLflow client in a Driftline process (router, learner, drift,
    retrain job, CLI) reads them from the environment by itself, so they are set there only."""

    model_config = SettingsConfigDict(
        env_prefix="MLFLOW_TRACKING_", frozen=True, extra="ignore", use_attribute_docstrings=True
    )

    username: str | None = None
    """MLflow user Driftline acts as; the local server (`driftline mlflow start`) makes it its
    admin, ``driftline`` when unset."""
    password: SecretStr | None = None
    """That user's password; when unset the local server makes one up and keeps it beside its
    database (see `driftline mlflow start`)."""


SERVICE_SETTINGS: dict[str, type[ServiceSettings]] = {
    "ingestion": IngestionSettings,
    "router": RouterSettings,
    "feedback": FeedbackSettings,
    "drift": DriftSettings,
    "learner": LearnerSettings,
}
"""Each service's settings class, by service name."""

S = TypeVar("S", bound=BaseSettings)


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets `field` of `cls`."""
    return (cls.model_config.get("env_prefix") or "").upper() + field.upper()


def _settings_classes() -> list[type[BaseSettings]]:
    return [
        DriftlineSettings,
        *SERVICE_SETTINGS.values(),
        RetrainSettings,
        ConsoleSettings,
        GatewaySettings,
        MlflowCredentials,
    ]


def env_variables() -> dict[str, str]:
    """Every environment variable Driftline reads, with its one-line description."""
    return {
        env_name(cls, name): (field.description or "")
        for cls in _settings_classes()
        for name, field in cls.model_fields.items()
    }


MASKED = "**********"


@dataclass(frozen=True)
class SettingDoc:
    """One environment variable as `driftline settings` shows it."""

    variable: str
    type: str
    """What it takes: ``int``, ``a|b`` for a choice, ``JSON list[str]``, ``secret``..."""
    default: Any
    """Its default as JSON (secrets masked)."""
    value: str | None
    """What the environment sets it to now, as written (secrets masked); None when unset."""
    description: str


def type_name(annotation: Any) -> str:
    """A setting's type as a user writes it.

    Examples
    --------
    >>> type_name(Literal["json", "console"]), type_name(int | None), type_name(dict[str, str])
    ('json|console', 'int (optional)', 'JSON dict[str, str]')

    """
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "|".join(str(arg) for arg in args)
    if origin in (Union, UnionType):
        kept = [type_name(arg) for arg in args if arg is not type(None)]
        return " | ".join(kept) + (" (optional)" if type(None) in args else "")
    if origin is not None:
        inner = ", ".join(type_name(arg).removeprefix("JSON ") for arg in args)
        return f"JSON {origin.__name__}[{inner}]"
    if annotation is SecretStr:
        return "secret"
    return "any" if annotation is Any else getattr(annotation, "__name__", str(annotation))


def setting_docs(environ: Mapping[str, str]) -> list[SettingDoc]:
    """Every environment variable Driftline reads: its type, default, value in `environ` and
    meaning."""
    docs = []
    for cls in _settings_classes():
        for name, field in cls.model_fields.items():
            variable = env_name(cls, name)
            secret = "secret" in type_name(field.annotation)
            value = environ.get(variable)
            default = field.get_default(call_default_factory=True)
            docs.append(
                SettingDoc(
                    variable=variable,
                    type=type_name(field.annotation),
                    default=MASKED
                    if secret and default is not None
                    else to_jsonable_python(default),
                    value=MASKED if secret and value is not None else value,
                    description=" ".join((field.description or "").split()),
                )
            )
    return docs


_SOURCE_FIELD = re.compile(r'field "(?P<field>\w+)"')


def load(cls: type[S]) -> S:
    """Read `cls` from the environment; a bad value raises one readable `SettingsError` naming
    the variable, whether pydantic refuses the value or pydantic-settings cannot even parse it
    (a JSON setting that is not JSON)."""
    try:
        return cls()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise SettingsError(env_name(cls, field), first.get("input"), first["msg"]) from None
    except SourceError as exc:
        match = _SOURCE_FIELD.search(str(exc))
        variable = env_name(cls, match["field"]) if match else "a DRIFTLINE_* variable"
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise SettingsError(variable, os.environ.get(variable), f"expected JSON{cause}") from None
