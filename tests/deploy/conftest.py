"""Fixtures of the deployment checks: the tools that `scripts/install-tools.sh` installs, and the
Helm and kustomize renderings, made once per run.

The tools live in ``.driftline/tools/bin`` under the repository root (`make tools` puts them
there). A missing tool fails the test that needs it with the command that installs it: these
checks never skip.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.manifests import Manifest, load_all

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".driftline" / "tools" / "bin"
CHART = ROOT / "helm" / "driftline"
SCENARIOS = sorted(path.name for path in (CHART / "ci").glob("*-values.yaml"))
KUSTOMIZATIONS = ("k8s/base", "k8s/overlays/dev")
KUBE_VERSION = "1.37.0"
"""The newest Kubernetes the tools know; renderings are validated against it and the oldest."""


def tool(name: str) -> Path:
    """Path of an installed check tool; fails, naming the install command, when it is missing."""
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.fail(
            f"{name} is not installed in {TOOLS_BIN}: run `make tools` "
            f"(bash scripts/install-tools.sh .driftline/tools)",
            pytrace=False,
        )
    return path


def run(args: list[str | Path], *, env: dict[str, str] | None = None) -> str:
    """Run a tool; a non-zero exit fails the test with its output."""
    done = subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, cwd=ROOT, env=env, check=False
    )
    if done.returncode != 0:
        command = " ".join(str(arg) for arg in args)
        pytest.fail(
            f"`{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}", pytrace=False
        )
    return done.stdout


MLFLOW_SECRET = ("--set", "mlflow.existingSecret=mlflow-basic-auth")
"""The one value the chart has no default for (`helm_template` passes it first)."""
HMAC_KEYS = (
    "--set",
    "hmac.keys.snapshot=test-snapshot-key-of-32-characters-at-least,"
    "hmac.keys.webhook=test-webhook-key-of-32-characters-at-least,"
    "hmac.keys.state=test-state-key-of-32-characters-at-least",
)
"""HMAC keys, which a rendering without cluster access needs (it cannot look the Secret up)."""


def helm_template(*extra: str) -> str:
    """`helm template` of the chart as release ``driftline`` with the MLflow Secret (the one
    required value), HMAC keys and extra arguments."""
    return run(
        [
            tool("helm"),
            "template",
            "driftline",
            CHART,
            "--namespace",
            "driftline",
            "--kube-version",
            KUBE_VERSION,
            *MLFLOW_SECRET,
            *HMAC_KEYS,
            *extra,
        ]
    )


@pytest.fixture(scope="session")
def helm_renderings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every ``ci/*-values.yaml`` scenario rendered to a file, by scenario file name."""
    out = tmp_path_factory.mktemp("helm")
    files = {}
    for scenario in SCENARIOS:
        path = out / scenario
        path.write_text(helm_template("--values", str(CHART / "ci" / scenario)))
        files[scenario] = path
    return files


@pytest.fixture(scope="session")
def kustomize_renderings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each kustomization of ``k8s/`` built to a file, by its folder."""
    out = tmp_path_factory.mktemp("kustomize")
    files = {}
    for folder in KUSTOMIZATIONS:
        path = out / (folder.replace("/", "-") + ".yaml")
        path.write_text(run([tool("kustomize"), "build", ROOT / folder]))
        files[folder] = path
    return files


@pytest.fixture(scope="session")
def load() -> Callable[[Path], list[Manifest]]:
    """Parse a rendered multi-document YAML file."""
    return lambda path: load_all(path.read_text())
