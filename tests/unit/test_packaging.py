"""What the project declares and locks: every third-party module the code imports comes from a
declared distribution, the locks pin everything pyproject.toml declares (a dependency added
without `make lock` fails here), every locked line is exact and hashed (so two installs from it
get the same files), and the image's lock carries no MLflow server stack."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
FULL_LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"
CODE = ("shared", "services")
DEMO = ROOT / "services" / "demo"
SERVER_STACK = {"mlflow", "flask", "sqlalchemy", "alembic", "gunicorn", "pyarrow", "matplotlib"}
"""Distributions of the `server` and `demo` extras that workers never need."""

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)(?P<rest>.*)$")


def imports_of(path: Path) -> set[str]:
    """Top-level names of the absolute imports of a Python file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def third_party_imports() -> dict[str, set[Path]]:
    """Each third-party top-level module imported by shared/ and services/, with the files."""
    local = {*CODE, "__future__"}
    found: dict[str, set[Path]] = {}
    for folder in CODE:
        for path in (ROOT / folder).rglob("*.py"):
            for name in imports_of(path) - local - set(sys.stdlib_module_names):
                found.setdefault(name, set()).add(path)
    return found


def declared(group: str | None) -> dict[str, Requirement]:
    """pyproject's requirements of the base (None) or of one extra, by canonical name; the
    extras' references to the project itself (``driftline[server]``) left out."""
    texts = (
        PYPROJECT["project"]["dependencies"]
        if group is None
        else PYPROJECT["project"]["optional-dependencies"][group]
    )
    requirements = [Requirement(text) for text in texts]
    return {
        canonicalize_name(r.name): r for r in requirements if r.name != PYPROJECT["project"]["name"]
    }


@cache
def locked(path: Path) -> dict[str, set[str]]:
    """The versions a lock file pins, by canonical name (a package may have one per Python
    version, behind markers)."""
    pins: dict[str, set[str]] = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins.setdefault(canonicalize_name(match["name"]), set()).add(match["version"])
    return pins


def test_every_imported_module_comes_from_a_declared_distribution() -> None:
    base = set(declared(None))
    demo = set(declared("demo"))
    providers = packages_distributions()
    for module, files in sorted(third_party_imports().items()):
        where = ", ".join(sorted(str(f.relative_to(ROOT)) for f in files))
        distributions = {canonicalize_name(d) for d in providers.get(module, [])}
        assert distributions, f"{module} (imported by {where}) is installed by no distribution"
        if distributions & base:
            continue
        assert distributions & demo and all(DEMO in f.parents for f in files), (
            f"{module} (imported by {where}) comes from {sorted(distributions)}, which "
            "pyproject.toml does not declare as a dependency (only the demo may use the demo extra)"
        )


@pytest.mark.parametrize(
    ("lock", "groups"),
    [(FULL_LOCK, [None, *PYPROJECT["project"]["optional-dependencies"]]), (RUNTIME_LOCK, [None])],
    ids=["requirements.lock", "requirements-runtime.lock"],
)
def test_the_lock_pins_what_pyproject_declares(lock: Path, groups: list[str | None]) -> None:
    pins = locked(lock)
    build = [Requirement(text) for text in PYPROJECT["build-system"]["requires"]]
    for group in groups:
        for name, requirement in [*declared(group).items(), *((r.name, r) for r in build)]:
            versions = pins.get(canonicalize_name(name))
            assert versions, f"{requirement} is not in {lock.name}: run `make lock`"
            assert all(requirement.specifier.contains(v) for v in versions), (
                f"{lock.name} pins {name} {sorted(versions)}, pyproject.toml wants {requirement}: "
                "run `make lock`"
            )


@pytest.mark.parametrize("lock", [FULL_LOCK, RUNTIME_LOCK], ids=lambda p: p.name)
def test_every_locked_line_is_an_exact_version_with_hashes(lock: Path) -> None:
    """pip installs such a file with --require-hashes only when nothing floats: each requirement
    is ``name==version`` with the hashes of its files, and nothing else (no URL, no -e)."""
    requirement: str | None = None
    hashes = 0
    for line in [*lock.read_text().splitlines(), ""]:
        text = line.strip()
        if text.startswith("--hash=sha256:"):
            hashes += 1
            continue
        if requirement is not None and not text.startswith("#"):
            assert hashes, f"{lock.name}: {requirement} has no hash"
            requirement, hashes = None, 0
        if not text or text.startswith("#"):
            continue
        assert _PIN.match(text), f"{lock.name}: not an exact pin: {text}"
        requirement = text


def test_the_image_lock_is_the_full_lock_less_the_server_and_demo() -> None:
    runtime, full = locked(RUNTIME_LOCK), locked(FULL_LOCK)
    for name, versions in runtime.items():
        assert versions <= full.get(name, set()), f"{name}: {versions} differs from the full lock"
    assert not SERVER_STACK & set(runtime), f"the image would carry {SERVER_STACK & set(runtime)}"
    assert "mlflow-skinny" in runtime


def test_resolving_again_reproduces_the_locks(tmp_path: Path) -> None:
    """`make lock` on an unchanged pyproject.toml rewrites the same files: the resolution starts
    from the versions already locked, so the lock is current and its resolution deterministic."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    assert uv, "uv is not installed in the venv: it is in the dev extra (make .venv/.installed)"
    build = "\n".join(PYPROJECT["build-system"]["requires"]) + "\n"
    common = ["pip", "compile", "--quiet", "--universal", "--python-version", "3.11"]
    common += ["--generate-hashes", "--custom-compile-command", "make lock"]
    for lock, extra in ((FULL_LOCK, ["--all-extras"]), (RUNTIME_LOCK, ["-c", FULL_LOCK.name])):
        again = tmp_path / lock.name
        shutil.copy(lock, again)
        subprocess.run(
            [uv, *common, *extra, "pyproject.toml", "-", "-o", str(again)],
            input=build, text=True, check=True, cwd=ROOT, timeout=300, capture_output=True,
        )  # fmt: skip
        assert again.read_text() == lock.read_text(), f"{lock.name} is stale: run `make lock`"
