"""Model URIs, the names deployments give their models: ``models:/<name>@<alias>`` or
``models:/<name>/<version>`` (the MLflow registry), ``online:<model id>`` (a River model
from the learner's snapshots) and ``v2+http://<host>:<port>/<model>[/versions/<version>]``
(``v2+https`` too: a model on an Open Inference Protocol server such as MLServer or Triton).
Taken apart and checked here, with no model library imported, so that `driftline deploy` checks
them before it publishes anything."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import UnknownModelError

_MLFLOW_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
_V2_URI = re.compile(
    r"^v2\+(?P<scheme>https?)://(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d{1,5}))?"
    r"/(?P<model>[\w.\-]+)(?:/versions/(?P<version>[\w.\-]+))?$"
)

ONLINE_PREFIX = "online:"
"""Model URIs of online models: ``online:<model id>``."""
MLFLOW_FORM = "expected models:/<name>@<alias> or models:/<name>/<n>"
ONLINE_FORM = "expected online:<model id>"
V2_PREFIXES = ("v2+http://", "v2+https://")
"""Model URIs of Open Inference Protocol (KServe V2) endpoints."""
V2_FORM = "expected v2+http(s)://<host>[:<port>]/<model>[/versions/<version>]"


@dataclass(frozen=True, slots=True)
class RegistryUri:
    """A ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` URI, taken apart."""

    name: str
    alias: str | None
    version: str | None

    @classmethod
    def parse(cls, uri: str) -> RegistryUri | None:
        """The parts of an MLflow registry URI; None for any other URI (e.g. ``online:``)."""
        match = _MLFLOW_URI.match(uri)
        return None if match is None else cls(match["name"], match["alias"], match["version"])


@dataclass(frozen=True, slots=True)
class V2Uri:
    """A ``v2+http(s)://<host>[:<port>]/<model>[/versions/<version>]`` URI, taken apart."""

    base_url: str
    """``http(s)://<host>[:<port>]``: where the server answers."""
    model: str
    version: str | None

    @classmethod
    def parse(cls, uri: str) -> V2Uri | None:
        """The parts of a V2 endpoint URI; None for any other URI or a malformed one."""
        match = _V2_URI.match(uri)
        if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
            return None
        port = f":{match['port']}" if match["port"] else ""
        return cls(f"{match['scheme']}://{match['host']}{port}", match["model"], match["version"])

    @property
    def model_path(self) -> str:
        """``/v2/models/<model>[/versions/<version>]``: the model's metadata; ``/infer`` and
        ``/ready`` hang below it."""
        path = f"/v2/models/{self.model}"
        return path if self.version is None else f"{path}/versions/{self.version}"


LATEST = "latest"
"""Version a V2 URI without ``/versions/<v>`` names: whatever the server serves."""


def model_identity(uri: str) -> tuple[str, str]:
    """The model and version a URI names, as an operator's promotion decision records them: a
    registry model's name and version (or ``@<alias>``), a V2 endpoint's model and version (or
    `LATEST`), an online model's id and ``online``."""
    registered, endpoint = RegistryUri.parse(uri), V2Uri.parse(uri)
    if registered is not None:
        return registered.name, registered.version or f"@{registered.alias}"
    if endpoint is not None:
        return endpoint.model, endpoint.version or LATEST
    return uri.removeprefix(ONLINE_PREFIX), "online"


def pinned_uri(model_name: str, version: str) -> str:
    """``models:/<name>/<version>``: one version, whatever the aliases do."""
    return f"models:/{model_name}/{version}"


def check_model_uri(uri: str) -> None:
    """Raise `UnknownModelError` unless a backend serves URIs of this form (`driftline deploy`
    checks a deployment's URIs with it before publishing it)."""
    if uri.startswith("models:/"):
        if RegistryUri.parse(uri) is None:
            raise UnknownModelError(uri, MLFLOW_FORM)
    elif uri.startswith(ONLINE_PREFIX):
        if not uri.removeprefix(ONLINE_PREFIX):
            raise UnknownModelError(uri, ONLINE_FORM)
    elif uri.startswith(V2_PREFIXES):
        if V2Uri.parse(uri) is None:
            raise UnknownModelError(uri, V2_FORM)
    else:
        raise UnknownModelError(
            uri,
            "unknown scheme; use models:/... (MLflow), online:... (River) or "
            "v2+http(s)://... (an Open Inference Protocol server)",
        )
