"""Model URIs, the names deployments give their models: ``models:/<name>@<alias>`` or
``models:/<name>/<version>`` (the MLflow registry) and ``online:<model id>`` (a River model
from the learner's snapshots). Taken apart and checked here, with no model library imported,
so that `driftline deploy` checks them before it publishes anything."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import UnknownModelError

_MLFLOW_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")

ONLINE_PREFIX = "online:"
"""Model URIs of online models: ``online:<model id>``."""
MLFLOW_FORM = "expected models:/<name>@<alias> or models:/<name>/<n>"
ONLINE_FORM = "expected online:<model id>"


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
    else:
        raise UnknownModelError(
            uri, "unknown scheme; use models:/... (MLflow) or online:... (River)"
        )
