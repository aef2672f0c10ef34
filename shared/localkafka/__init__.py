"""A real single-node Apache Kafka (KRaft) for development, tests and the demo.

Apache's own jars come from Maven Central (``org.apache.kafka:kafka_2.13`` with a log4j 2
backend, see ``pom.xml`` beside this file), are cached under the Driftline home, and run with
``java`` as a combined broker+controller on 127.0.0.1. Kafka 4.0.x is the line faust-streaming's
live-broker checks run against and the one aiokafka >= 0.13 negotiates with.

A secure broker (`LocalKafka(secure=True)`, ``driftline kafka start --secure``) listens with
TLS and SASL/SCRAM-SHA-512 only and lets ACLs decide (see `shared.localkafka.security`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from aiokafka.errors import KafkaError
from pydantic import SecretStr

from shared.access import PRINCIPALS, acls
from shared.admin import create_acls
from shared.errors import DriftlineError, KafkaStartError
from shared.kafka_clients import KafkaAccess, admin_client
from shared.localkafka.security import ADMIN, MECHANISM, SecureFiles
from shared.pidfile import owned_pid, stop_group

KAFKA_VERSION = "4.0.2"
_RESOURCES = resources.files(__package__)


def default_home() -> Path:
    """Where jars and broker data live: ``$DRIFTLINE_HOME`` or ``~/.driftline``."""
    return Path(os.environ.get("DRIFTLINE_HOME", Path.home() / ".driftline"))


@dataclass(frozen=True)
class LocalKafka:
    """One local broker, identified by its port; its files live in ``home/kafka-<port>``."""

    port: int = 9092
    controller_port: int | None = None
    home: Path = field(default_factory=default_home)
    secure: bool = False
    """TLS and SASL/SCRAM-SHA-512 with ACLs instead of plaintext for anyone."""

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def libs(self) -> Path:
        """The cached jar folder."""
        return self.home / f"kafka-jars-{KAFKA_VERSION}"

    @property
    def workdir(self) -> Path:
        """Config, data, log and pid file of this broker."""
        return self.home / f"kafka-{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's own log."""
        return self.workdir / "broker.log"

    @property
    def security(self) -> SecureFiles:
        """The secure broker's CA, certificates and passwords."""
        return SecureFiles(self.workdir / "security")

    def access(self, user: str = ADMIN) -> KafkaAccess:
        """How `user` (a principal of `shared.access`, or the admin) reaches this broker."""
        if not self.secure:
            return KafkaAccess(self.bootstrap)
        return KafkaAccess(
            self.bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism=MECHANISM,
            sasl_username=user,
            sasl_password=SecretStr(self.security.passwords()[user]),
            ssl_cafile=self.security.ca_pem,
        )

    def client_env(self, user: str) -> dict[str, str]:
        """The DRIFTLINE_KAFKA_* variables that connect a process as `user`."""
        access = self.access(user)
        env = {
            "DRIFTLINE_KAFKA_BROKER": access.bootstrap_servers,
            "DRIFTLINE_KAFKA_SECURITY_PROTOCOL": access.security_protocol,
        }
        if access.sasl_password is not None:
            env |= {
                "DRIFTLINE_KAFKA_SASL_MECHANISM": access.sasl_mechanism,
                "DRIFTLINE_KAFKA_SASL_USERNAME": user,
                "DRIFTLINE_KAFKA_SASL_PASSWORD": access.sasl_password.get_secret_value(),
                "DRIFTLINE_KAFKA_SSL_CAFILE": str(access.ssl_cafile),
            }
        return env

    def grant(self, topic_prefix: str = "") -> int:
        """Give every principal of `shared.access` its ACLs for the Driftline whose topics
        start with `topic_prefix` (idempotent); return how many ACLs that is."""
        bindings = [(p.name, acl) for p in PRINCIPALS for acl in acls(p, topic_prefix)]
        asyncio.run(create_acls(self.access(), bindings))
        return len(bindings)

    @property
    def _pid_path(self) -> Path:
        return self.workdir / "broker.pid"

    @property
    def _config_path(self) -> Path:
        return self.workdir / "server.properties"

    def ensure_jars(self) -> Path:
        """Fetch the broker's jars with Maven once; later calls reuse the cache."""
        if self._jars_cached():
            return self.libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise DriftlineError("Maven (mvn) is needed once to fetch Kafka's jars; install it")
        self.home.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="jars-", dir=self.home))
        with resources.as_file(_RESOURCES / "pom.xml") as pom:
            result = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(pom),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-Dkafka.version={KAFKA_VERSION}",
                    f"-DoutputDirectory={staging}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
            raise DriftlineError("Maven could not fetch Kafka's jars: " + " | ".join(tail))
        staging.rename(self.libs)
        return self.libs

    def _jars_cached(self) -> bool:
        return any(self.libs.glob("kafka_2.13-*.jar"))

    def is_up(self, timeout: float = 3.0) -> bool:
        """Whether a broker answers a metadata request on this port."""
        return asyncio.run(_broker_answers(self.access(), timeout))

    def pid(self) -> int | None:
        """The pid of the broker this tool started, if that process still runs."""
        return owned_pid(self._pid_path, str(self._config_path))

    def start(self, timeout: float = 90.0, on_step: Callable[[str], None] | None = None) -> float:
        """Start the broker unless one answers already; return the seconds it took to answer.
        `on_step` hears what it is doing (a start takes seconds, a first one half a minute)."""
        step = on_step or (lambda _: None)
        began = time.monotonic()
        if self.secure:
            step("making the CA, the broker's certificate and the users' passwords")
            self.security.ensure_certificates()
        if self.is_up(timeout=1.0):
            return 0.0
        if not self._jars_cached():
            step(f"fetching Kafka {KAFKA_VERSION}'s jars with Maven (once)")
        libs = self.ensure_jars()
        self._write_config()
        if not (self.workdir / "data" / "meta.properties").exists():
            step("formatting the broker's storage (first start)")
            self._format_storage(libs)
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [*self._java(libs), "kafka.Kafka", str(self._config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._pid_path.write_text(str(process.pid))
        while time.monotonic() - began < timeout:
            step(
                f"waiting for the broker (pid {process.pid}) to answer on {self.bootstrap} "
                f"({time.monotonic() - began:.0f}s)"
            )
            if process.poll() is not None:
                raise KafkaStartError(self._failure_reason(), str(self.log_path))
            if asyncio.run(_broker_answers(self.access(), 2.0, groups=True)):
                return time.monotonic() - began
            time.sleep(0.3)
        self.stop()
        raise KafkaStartError(
            f"no answer on port {self.port} after {timeout:.0f}s; {self._failure_reason()}",
            str(self.log_path),
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker this tool started (never another process); False if none ran."""
        pid = self.pid()
        if pid is None:
            return False
        stop_group(pid, timeout)
        self._pid_path.unlink(missing_ok=True)
        return True

    def _java(self, libs: Path) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise DriftlineError("Java 17 or newer is needed to run the local Kafka broker")
        with resources.as_file(_RESOURCES / "log4j2.properties") as log_config:
            return [
                java,
                "-Xms256m",
                "-Xmx1g",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log_config}",
                "-cp",
                f"{libs}/*",
            ]

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        controller = self.controller_port or self.port + 1
        self._config_path.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    "controller.listener.names=CONTROLLER",
                    *(
                        self.security.broker_config(self.port, controller)
                        if self.secure
                        else self._plaintext_listeners(controller)
                    ),
                    f"log.dirs={self.workdir / 'data'}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=24",
                    "log.segment.bytes=67108864",
                    "",
                ]
            )
        )

    def _plaintext_listeners(self, controller: int) -> list[str]:
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
        ]

    def _format_storage(self, libs: Path) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            [
                *self._java(libs),
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                cluster_id,
                "-c",
                str(self._config_path),
                *(self.security.scram_arguments() if self.secure else []),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            reason = (result.stdout + result.stderr).strip().splitlines()[-1:]
            raise KafkaStartError("storage format failed: " + " ".join(reason), str(self.log_path))

    def _failure_reason(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-400:]
        except FileNotFoundError:
            return "the broker wrote no log"
        errors = [line for line in lines if " ERROR " in line or "Exception" in line]
        return (errors or lines or ["the broker's log is empty"])[-1].strip()


PROBE_GROUP = "driftline-start-probe"
"""A group no one joins: describing it tells whether the broker coordinates groups yet."""


async def _broker_answers(access: KafkaAccess, timeout: float, groups: bool = False) -> bool:
    """Whether the broker answers metadata requests and, with `groups`, group requests too: a
    broker just started answers metadata before its group coordinator has loaded the offsets
    topic, and a consumer that starts then fails with ``GroupCoordinatorNotAvailableError``."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # a refused probe is an answer
    client = admin_client(access, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.start(), timeout)
        await asyncio.wait_for(client.describe_cluster(), timeout)
        if groups:
            described = await asyncio.wait_for(
                client.describe_consumer_groups([PROBE_GROUP]), timeout
            )
            return all(group[0] == 0 for response in described for group in response.groups)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()
