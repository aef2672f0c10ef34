"""Promoting or rolling back a deployment's challenger, in an order that survives a crash.

A challenger is a canary or shadow variant serving another version of the champion's registered
model (pinned ``models:/<name>/<version>``, or by the ``challenger`` alias). Both actions are
lists of steps, each idempotent, so running an action again after a crash at any step completes
it, and every prefix of the steps leaves a champion serving:

- promote: (1) move the ``champion`` alias to the challenger's version: variants that follow the
  alias serve it from the routers' next refresh; (2) publish the deployment without the
  challenger, its champion re-pointed if it was pinned to a version; (3) delete the
  ``challenger`` alias (only while it still names this version).
- rollback: (1) tag the version rejected; (2) publish the deployment without the challenger; (3)
  delete the ``challenger`` alias. The champion is never touched. The alias goes last, so a
  re-run after a crash still finds the challenger by it.

A challenger on another backend (an Open Inference Protocol endpoint against an MLflow champion,
or the other way round) has no registry alias to move: promoting it publishes the deployment
with the challenger's URI as the champion's and without the challenger variant; rolling it back
publishes the deployment without it. One step each, idempotent: once published, the deployment
no longer has the variant, and a re-run publishes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from shared.errors import DriftlineError
from shared.events import Deployment, Variant, utc_now
from shared.logging import get_logger
from shared.model_uris import V2_PREFIXES, RegistryUri, pinned_uri

CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"
REJECTED_TAG = "driftline.rejected"
"""Version tag a rollback sets; its value is the reason."""

log = get_logger(__name__)
Publish = Callable[[Deployment], Awaitable[None]]
"""Writes a deployment to ``deployments`` and returns once the broker has it."""


class Registry(Protocol):
    """The model registry calls a rollout makes (blocking; `shared.registry.MlflowRegistry`)."""

    def aliases(self, model_name: str) -> dict[str, str]:
        """Every alias of the model and the version it names."""

    def has_version(self, model_name: str, version: str) -> bool:
        """Whether the model has that version."""

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        """Point an alias at a version."""

    def delete_alias(self, model_name: str, alias: str) -> None:
        """Remove an alias; nothing happens if it is not set."""

    def tag_version(self, model_name: str, version: str, key: str, value: str) -> None:
        """Set a tag on a version."""


class NoChallengerError(DriftlineError):
    """A promotion or rollback was asked for a deployment with no challenger to act on."""

    def __init__(self, deployment: str, problem: str) -> None:
        self.deployment = deployment
        self.problem = problem
        super().__init__(f"deployment {deployment!r}: {problem}")


@dataclass(frozen=True)
class Challenger:
    """The version a deployment tries against its champion."""

    model_name: str
    version: str
    variant: str | None
    """Its variant in the deployment; None once the deployment no longer has one."""


@dataclass(frozen=True)
class Step:
    """One idempotent step of an action."""

    what: str
    run: Callable[[], Awaitable[None]]


def champion_model(deployment: Deployment) -> RegistryUri | None:
    """The champion's registry URI; None if it is not a registry model (e.g. an online one)."""
    champion = next(v for v in deployment.variants if v.role == "champion")
    return RegistryUri.parse(champion.model_uri)


def challenger_variants(deployment: Deployment) -> list[tuple[Variant, RegistryUri]]:
    """The canary and shadow variants that serve the champion's registered model by another URI
    than the champion's, with their parsed URIs."""
    champion = champion_model(deployment)
    if champion is None:
        return []
    found = []
    for variant in deployment.variants:
        uri = RegistryUri.parse(variant.model_uri)
        if (
            variant.role in ("canary", "shadow")
            and uri is not None
            and uri.name == champion.name
            and uri != champion
        ):
            found.append((variant, uri))
    return found


def swap_challengers(deployment: Deployment) -> list[Variant]:
    """The canary and shadow variants that promotion swaps in by URI: a V2 endpoint with
    another URI than the champion's, or any registry model or V2 endpoint trying a V2
    champion (a registry alias cannot point at either)."""
    champion = next(v for v in deployment.variants if v.role == "champion")
    champion_v2 = champion.model_uri.startswith(V2_PREFIXES)
    return [
        variant
        for variant in deployment.variants
        if variant.role in ("canary", "shadow")
        and variant.model_uri != champion.model_uri
        and (
            variant.model_uri.startswith(V2_PREFIXES)
            or (champion_v2 and RegistryUri.parse(variant.model_uri) is not None)
        )
    ]


def find_swap_challenger(deployment: Deployment) -> Variant | None:
    """The deployment's one challenger swapped in by URI (`swap_challengers`); None if it has
    none; `NoChallengerError` if it has several, or a registry challenger too."""
    swaps = swap_challengers(deployment)
    if not swaps:
        return None
    others = [v for v, _ in challenger_variants(deployment)]
    if len(swaps) > 1 or others:
        names = ", ".join(sorted(v.name for v in [*swaps, *others]))
        raise NoChallengerError(
            deployment.name, f"several challengers (variants {names}): remove all but one first"
        )
    return swaps[0]


def swapped(deployment: Deployment, variant_name: str, promoted: bool) -> Deployment:
    """`deployment` without the variant `variant_name`; when `promoted`, its champion serves that
    variant's URI. The deployment itself when it has no such variant (already done)."""
    challenger = next((v for v in deployment.variants if v.name == variant_name), None)
    if challenger is None or challenger.role not in ("canary", "shadow"):
        return deployment
    variants = []
    for variant in deployment.variants:
        if variant is challenger:
            continue
        if promoted and variant.role == "champion":
            variant = variant.model_copy(update={"model_uri": challenger.model_uri})
        variants.append(variant)
    return Deployment.model_validate(
        {**deployment.model_dump(), "variants": variants, "updated_at": utc_now()}
    )


def swap_steps(
    publish: Publish, deployment: Deployment, variant_name: str, promoted: bool
) -> list[Step]:
    """The one step that promotes (or rolls back) a challenger on another backend."""
    updated = swapped(deployment, variant_name, promoted)

    async def publish_swapped() -> None:
        if updated is not deployment:
            await publish(updated)

    action = "as its champion" if promoted else "without it"
    what = f"publish {deployment.name} with variant {variant_name} {action}"
    return [Step(what, publish_swapped)]


def find_challenger(
    deployment: Deployment, registry: Registry, version: str | None = None
) -> Challenger:
    """The challenger to act on: `version` if given, else the one version a challenger variant
    serves, else the one the ``challenger`` alias names (an action that stopped half way)."""
    champion = champion_model(deployment)
    if champion is None:
        raise NoChallengerError(deployment.name, "its champion is not an MLflow registry model")
    aliases = registry.aliases(champion.name)
    candidates: dict[str, str | None] = {}
    for variant, uri in challenger_variants(deployment):
        served = uri.version or aliases.get(uri.alias or "")
        if served is not None and served != aliases.get(CHAMPION_ALIAS):
            candidates[served] = variant.name
    if not candidates and CHALLENGER_ALIAS in aliases:
        candidates[aliases[CHALLENGER_ALIAS]] = None
    if version is not None:
        if not registry.has_version(champion.name, version):
            raise NoChallengerError(
                deployment.name, f"model {champion.name!r} has no version {version!r}"
            )
        return Challenger(champion.name, version, candidates.get(version))
    if not candidates:
        raise NoChallengerError(
            deployment.name, f"no canary or shadow of {champion.name!r} and no challenger alias"
        )
    if len(candidates) > 1:
        versions = ", ".join(sorted(candidates))
        raise NoChallengerError(
            deployment.name, f"several challengers (versions {versions}): pick one with --version"
        )
    [(found, variant)] = candidates.items()
    return Challenger(champion.name, found, variant)


def without_challenger(
    deployment: Deployment, challenger: Challenger, aliases: dict[str, str], promoted: bool
) -> Deployment:
    """`deployment` without the canary and shadow variants serving the challenger's version;
    when `promoted`, a champion pinned to a version is re-pointed to the challenger's."""
    variants = []
    for variant in deployment.variants:
        uri = RegistryUri.parse(variant.model_uri)
        if uri is None or uri.name != challenger.model_name:
            variants.append(variant)
            continue
        version = uri.version or aliases.get(uri.alias or "")
        if variant.role in ("canary", "shadow") and version == challenger.version:
            continue
        if promoted and variant.role == "champion" and uri.version:
            pinned = pinned_uri(challenger.model_name, challenger.version)
            variant = variant.model_copy(update={"model_uri": pinned})
        variants.append(variant)
    if variants == deployment.variants:
        return deployment
    return Deployment.model_validate(
        {**deployment.model_dump(), "variants": variants, "updated_at": utc_now()}
    )


def promotion_steps(
    registry: Registry, publish: Publish, deployment: Deployment, challenger: Challenger
) -> list[Step]:
    """The steps that make `challenger` the champion (see the module's docstring)."""
    model, version = challenger.model_name, challenger.version

    async def move_champion() -> None:
        await asyncio.to_thread(registry.set_alias, model, CHAMPION_ALIAS, version)

    return [
        Step(f"move {model}@{CHAMPION_ALIAS} to version {version}", move_champion),
        Step(
            f"publish {deployment.name} without the challenger",
            _publish_without(registry, publish, deployment, challenger, promoted=True),
        ),
        Step(f"delete {model}@{CHALLENGER_ALIAS}", _delete_challenger_alias(registry, challenger)),
    ]


def rollback_steps(
    registry: Registry,
    publish: Publish,
    deployment: Deployment,
    challenger: Challenger,
    reason: str,
) -> list[Step]:
    """The steps that remove `challenger` and keep the champion (see the module's docstring)."""
    model, version = challenger.model_name, challenger.version

    async def tag_rejected() -> None:
        aliases = await asyncio.to_thread(registry.aliases, model)
        if aliases.get(CHAMPION_ALIAS) == version:
            raise NoChallengerError(deployment.name, f"version {version} is the champion")
        await asyncio.to_thread(registry.tag_version, model, version, REJECTED_TAG, reason)

    return [
        Step(f"tag {model} version {version} rejected", tag_rejected),
        Step(
            f"publish {deployment.name} without the challenger",
            _publish_without(registry, publish, deployment, challenger, promoted=False),
        ),
        Step(f"delete {model}@{CHALLENGER_ALIAS}", _delete_challenger_alias(registry, challenger)),
    ]


def _publish_without(
    registry: Registry,
    publish: Publish,
    deployment: Deployment,
    challenger: Challenger,
    promoted: bool,
) -> Callable[[], Awaitable[None]]:
    async def publish_deployment() -> None:
        aliases = await asyncio.to_thread(registry.aliases, challenger.model_name)
        updated = without_challenger(deployment, challenger, aliases, promoted=promoted)
        if updated is not deployment:
            await publish(updated)

    return publish_deployment


def _delete_challenger_alias(
    registry: Registry, challenger: Challenger
) -> Callable[[], Awaitable[None]]:
    async def delete() -> None:
        aliases = await asyncio.to_thread(registry.aliases, challenger.model_name)
        if aliases.get(CHALLENGER_ALIAS) == challenger.version:
            await asyncio.to_thread(registry.delete_alias, challenger.model_name, CHALLENGER_ALIAS)

    return delete


async def execute(steps: list[Step]) -> None:
    """Run the steps in order; a failure stops there (running them all again completes it)."""
    for step in steps:
        await step.run()
        log.info("rollout step done", step=step.what)
