"""Every Kafka client Driftline makes, built in one place from the security settings.

Workers, the CLI, the retrain job, the status command and the load test all connect through
these functions, so TLS and SASL reach every client once they are set: no client can be left
talking plaintext to a secured cluster (``tests/unit/test_kafka_clients.py`` scans the source
tree for aiokafka clients made anywhere else).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from pydantic import SecretStr

from shared.client_logs import KAFKA_CLIENT_ERRORS
from shared.errors import DriftlineError, SettingsError, UnavailableError
from shared.settings import DriftlineSettings, env_name

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, slots=True)
class KafkaAccess:
    """Where the brokers are and how a client proves who it is: all a client is built from."""

    bootstrap_servers: str
    """Plain ``host:port,...``."""
    security_protocol: SecurityProtocol = "PLAINTEXT"
    """How clients talk to the brokers."""
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    """SASL mechanism, used when the protocol is SASL_*."""
    sasl_username: str | None = None
    """SASL user name (the principal's name)."""
    sasl_password: SecretStr | None = None
    """SASL password."""
    ssl_cafile: Path | None = None
    """CA bundle that signs the brokers' certificates; the system's CAs when None."""

    @classmethod
    def of(cls, settings: DriftlineSettings) -> KafkaAccess:
        """The access the settings describe; SASL without a user or password is refused with
        one line naming the missing variable."""
        access = cls(
            bootstrap_servers=settings.bootstrap_servers,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            ssl_cafile=settings.kafka_ssl_cafile,
        )
        if access.sasl:
            for field in ("kafka_sasl_username", "kafka_sasl_password"):
                if not getattr(settings, field):
                    raise SettingsError(
                        env_name(DriftlineSettings, field),
                        None,
                        f"needed with DRIFTLINE_KAFKA_SECURITY_PROTOCOL={access.security_protocol}",
                    )
        return access

    @property
    def sasl(self) -> bool:
        """Whether clients authenticate with SASL."""
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        """Whether clients talk TLS to the brokers."""
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A TLS context that verifies the brokers' certificates and host names against the CA
        file (or the system's CAs), or None without TLS."""
        if not self.tls:
            return None
        if self.ssl_cafile is not None and not self.ssl_cafile.is_file():
            raise DriftlineError(
                f"CA file {self.ssl_cafile} (DRIFTLINE_KAFKA_SSL_CAFILE) does not exist"
            )
        return ssl.create_default_context(cafile=self.ssl_cafile)

    def client_options(self) -> dict[str, Any]:
        """aiokafka's arguments for these brokers and this identity."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "ssl_context": self.ssl_context(),
        }
        if self.sasl:
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": _reveal(self.sasl_password),
            }
        return options


Target = DriftlineSettings | KafkaAccess
"""What a client is built for: the settings (as every Driftline process has them) or an access
made by hand (the local broker's probe, the load test's plaintext brokers)."""


def access_of(target: Target) -> KafkaAccess:
    """The access a client of `target` uses."""
    return target if isinstance(target, KafkaAccess) else KafkaAccess.of(target)


def producer(target: Target, **options: Any) -> AIOKafkaProducer:
    """An unstarted aiokafka producer; `options` are aiokafka's other arguments."""
    return AIOKafkaProducer(**access_of(target).client_options(), **options)


def consumer(target: Target, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """An unstarted aiokafka consumer of `topics` (none: assign or subscribe later)."""
    return AIOKafkaConsumer(*topics, **access_of(target).client_options(), **options)


def admin_client(target: Target, **options: Any) -> AIOKafkaAdminClient:
    """An unstarted aiokafka admin client."""
    return AIOKafkaAdminClient(**access_of(target).client_options(), **options)


def faust_credentials(target: Target) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for the same access (None for plaintext)."""
    import faust  # workers only: the CLI's clients do without Faust

    access = access_of(target)
    if access.sasl:
        return faust.SASLCredentials(
            username=access.sasl_username,
            password=_reveal(access.sasl_password),
            mechanism=access.sasl_mechanism,
            ssl_context=access.ssl_context(),
        )
    if access.tls:
        return faust.SSLCredentials(access.ssl_context())
    return None


def kafka_failure(exc: KafkaError, target: Target) -> DriftlineError:
    """What a failed Kafka call means to the user: the brokers out of reach or too slow (aiokafka
    calls the error retriable, or it is a timeout) is `UnavailableError`, retry later (exit 3);
    anything else (credentials, CA, a denied ACL) is theirs to fix (exit 2), also when aiokafka
    swallowed it while bootstrapping and raised a bare connection error instead (it logged the
    refusal: `shared.client_logs`)."""
    servers = access_of(target).bootstrap_servers
    refusals = [e for e in KAFKA_CLIENT_ERRORS.errors if _refusal(e)]
    cause: BaseException = (
        refusals[-1] if isinstance(exc, KafkaConnectionError) and refusals else exc
    )
    if not _refusal(cause):
        return UnavailableError("Kafka", servers, str(cause))
    return DriftlineError(
        f"Kafka at {servers}: {cause} (check the DRIFTLINE_KAFKA_* settings and the broker's ACLs)"
    )


def _refusal(exc: BaseException) -> bool:
    """Whether trying again cannot help: a TLS failure (a CA that does not sign the broker's
    certificate), or a Kafka error that is neither retriable nor a timeout."""
    if isinstance(exc, ssl.SSLError):
        return True
    return (
        isinstance(exc, KafkaError) and not exc.retriable and not isinstance(exc, KafkaTimeoutError)
    )


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
