"""Every rendering (Helm scenarios and k8s/) against the Kubernetes JSON schemas of the oldest
version the chart supports and of the newest the validator knows, strictly (no unknown fields).

kubernetes-validate ships the schemas (nothing is downloaded). It only warns about kinds it has no
schema for; those must be exactly the custom resources whose shape tests/deploy/manifests.py
checks, so a typo in a built-in apiVersion or kind cannot pass unseen.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.conftest import KUBE_VERSION, run, tool
from tests.deploy.manifests import CUSTOM_KINDS

OLDEST_KUBE_VERSION = "1.30.0"
_MISSING = re.compile(r"Couldn't find schema for kind (\S+) with api version (\S+)")


def test_renderings_match_the_kubernetes_schemas(
    helm_renderings: dict[str, Path], kustomize_renderings: dict[str, Path]
) -> None:
    files = [*helm_renderings.values(), *kustomize_renderings.values()]
    out = run(
        [
            tool("kubernetes-validate"),
            "--strict",
            "--quiet",
            "-k",
            OLDEST_KUBE_VERSION,
            "-k",
            KUBE_VERSION,
            *files,
        ]
    )
    unchecked = set()
    for line in out.splitlines():
        assert not line.startswith("ERROR"), line
        if line.startswith("WARN"):
            match = _MISSING.search(line)
            assert match, line
            unchecked.add((match.group(2), match.group(1)))
    assert unchecked <= CUSTOM_KINDS, f"kinds no schema checked: {unchecked - CUSTOM_KINDS}"
