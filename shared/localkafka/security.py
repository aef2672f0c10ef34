"""What makes the local broker secure (``driftline kafka start --secure``): a locally made CA
and broker certificate for TLS, SCRAM-SHA-512 users for every principal of `shared.access`
plus an ``admin`` super user, and the StandardAuthorizer, so ACLs decide what each may do.

The CA and certificates are made with the JDK's ``keytool``, which comes with the ``java`` the
broker needs anyway: no Python dependency for a development tool. Passwords are random, made
once per broker and kept beside its data (mode 0600), with the clients' CA file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shared.access import PRINCIPALS
from shared.errors import DriftlineError

ADMIN = "admin"
"""The super user: the broker's own inter-broker and controller login, and who applies ACLs."""
MECHANISM = "SCRAM-SHA-512"
_VALIDITY_DAYS = "825"
_SAN = "SAN=dns:localhost,ip:127.0.0.1"


@dataclass(frozen=True)
class SecureFiles:
    """Where one secure broker keeps its TLS material and passwords."""

    folder: Path

    @property
    def ca_pem(self) -> Path:
        """The CA certificate clients verify the broker with (DRIFTLINE_KAFKA_SSL_CAFILE)."""
        return self.folder / "ca.pem"

    @property
    def keystore(self) -> Path:
        """The broker's key and certificate chain (PKCS12)."""
        return self.folder / "broker.p12"

    @property
    def truststore(self) -> Path:
        """The CA, for the broker's own client connections (PKCS12)."""
        return self.folder / "truststore.p12"

    @property
    def passwords_path(self) -> Path:
        """Each user's password and the stores' password (JSON, mode 0600)."""
        return self.folder / "passwords.json"

    def passwords(self) -> dict[str, str]:
        """Password per user name (``admin``, every principal) and ``keystore``; made once."""
        if not self.passwords_path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            names = [ADMIN, *(p.name for p in PRINCIPALS), "keystore"]
            made = {name: secrets.token_urlsafe(24) for name in names}
            descriptor = os.open(self.passwords_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                json.dump(made, out, indent=2)
        return json.loads(self.passwords_path.read_text())

    def ensure_certificates(self) -> None:
        """Make the CA and the broker's certificate for 127.0.0.1 and localhost, once."""
        if self.truststore.exists():
            return
        keytool = shutil.which("keytool")
        if keytool is None:
            raise DriftlineError("keytool (from the JDK) is needed for the secure local broker")
        store = ["-storetype", "PKCS12", "-storepass", self.passwords()["keystore"]]
        ca_store = self.folder / "ca.p12"
        request, signed = self.folder / "broker.csr", self.folder / "broker.pem"
        for partial in (ca_store, self.keystore, request, signed, self.ca_pem):
            partial.unlink(missing_ok=True)
        steps = [
            ["-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048",
             "-dname", "CN=Driftline local CA", "-validity", _VALIDITY_DAYS,
             "-ext", "BasicConstraints:critical=ca:true",
             "-ext", "KeyUsage:critical=keyCertSign,cRLSign", "-keystore", ca_store],
            ["-exportcert", "-rfc", "-alias", "ca", "-keystore", ca_store, "-file", self.ca_pem],
            ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
             "-dname", "CN=localhost", "-validity", _VALIDITY_DAYS, "-ext", _SAN,
             "-keystore", self.keystore],
            ["-certreq", "-alias", "broker", "-keystore", self.keystore, "-file", request],
            ["-gencert", "-rfc", "-alias", "ca", "-keystore", ca_store, "-infile", request,
             "-outfile", signed, "-validity", _VALIDITY_DAYS, "-ext", _SAN,
             "-ext", "KeyUsage:critical=digitalSignature,keyEncipherment",
             "-ext", "ExtendedKeyUsage=serverAuth,clientAuth"],
            ["-importcert", "-noprompt", "-alias", "ca", "-file", self.ca_pem,
             "-keystore", self.keystore],
            ["-importcert", "-alias", "broker", "-file", signed, "-keystore", self.keystore],
            ["-importcert", "-noprompt", "-alias", "ca", "-file", self.ca_pem,
             "-keystore", self.truststore],
        ]  # fmt: skip
        for step in steps:
            result = subprocess.run(
                [keytool, *map(str, step), *store], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                self.truststore.unlink(missing_ok=True)
                reason = (result.stdout + result.stderr).strip().splitlines()[-1:]
                raise DriftlineError(f"keytool {step[0]} failed: {' '.join(reason)}")

    def broker_config(self, port: int, controller: int) -> list[str]:
        """The listener, TLS, SASL and authorizer lines of the broker's ``server.properties``.

        Clients reach one SASL_SSL listener; the controller listener takes SASL/PLAIN from the
        admin only (KRaft cannot check SCRAM there: the controller keeps the SCRAM users)."""
        passwords = self.passwords()
        admin = passwords[ADMIN]
        scram = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{ADMIN}" password="{admin}";'
        )
        plain = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{ADMIN}" password="{admin}" user_{ADMIN}="{admin}";'
        )
        store = passwords["keystore"]
        return [
            f"listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{port}",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name=SASL_SSL",
            f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
            "sasl.mechanism.controller.protocol=PLAIN",
            f"listener.name.sasl_ssl.sasl.enabled.mechanisms={MECHANISM}",
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config={scram}",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.controller.plain.sasl.jaas.config={plain}",
            f"ssl.keystore.location={self.keystore}",
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.password={store}",
            f"ssl.key.password={store}",
            f"ssl.truststore.location={self.truststore}",
            "ssl.truststore.type=PKCS12",
            f"ssl.truststore.password={store}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{ADMIN}",
            "allow.everyone.if.no.acl.found=false",
        ]

    def scram_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create every user's SCRAM credentials."""
        arguments: list[str] = []
        for name, password in self.passwords().items():
            if name != "keystore":
                arguments += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return arguments
