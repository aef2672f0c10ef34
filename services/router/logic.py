"""Routing feature events to model variants, without Kafka.

For each deployment of an event's stream: the first rule variant whose rule matches serves the
event; otherwise a canary serves it if the entity's stable hash falls in the canary's share;
otherwise the champion. Shadows answer every event but are never served.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.backends import Answer
from shared.errors import DriftlineError, EventDecodeError, ModelError
from shared.events import (
    Deployment,
    FeatureEvent,
    FeatureValue,
    Prediction,
    RoutingRule,
    Variant,
    VariantOutput,
    decode,
)

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda value, allowed: value in allowed,
}


class NoDeploymentError(DriftlineError):
    """Events arrive for a stream that nothing is deployed on."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(
            f"no deployment: stream {stream!r} has none; create one with `driftline deploy`"
        )


def entity_share(deployment: str, entity_id: str) -> float:
    """A stable number in [0, 1) per (deployment, entity): the same on every replica and run.

    Python's `hash()` is salted per process, so it would move entities between variants.
    """
    digest = hashlib.blake2b(f"{deployment}\x1f{entity_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def rule_matches(rule: RoutingRule, features: dict[str, FeatureValue]) -> bool:
    """Whether the event's feature compares to the rule's value; a missing feature or values
    that cannot be compared do not match."""
    if rule.field not in features:
        return False
    try:
        return bool(_OPS[rule.op](features[rule.field], rule.value))
    except TypeError:
        return False


def choose_variants(deployment: Deployment, event: FeatureEvent) -> list[tuple[Variant, bool]]:
    """The variants that answer `event`, each with whether its answer is served."""
    served = next(
        (
            v
            for v in deployment.variants
            if v.role == "rule" and v.rule is not None and rule_matches(v.rule, event.features)
        ),
        None,
    )
    if served is None:
        share = entity_share(deployment.name, event.entity_id)
        bound = 0.0
        for variant in deployment.variants:
            if variant.role == "canary":
                bound += variant.weight
                if share < bound:
                    served = variant
                    break
    if served is None:
        served = next(v for v in deployment.variants if v.role == "champion")
    shadows = [(v, False) for v in deployment.variants if v.role == "shadow"]
    return [(served, True), *shadows]


def prediction_for(
    event: FeatureEvent,
    deployment: Deployment,
    variant: Variant,
    served: bool,
    answer: Answer,
    latency_ms: float,
) -> Prediction:
    """The prediction record of one variant's answer."""
    return Prediction(
        event_id=event.event_id,
        entity_id=event.entity_id,
        stream=event.stream,
        deployment=deployment.name,
        outcome=VariantOutput(
            variant=variant.name,
            role=variant.role,
            served=served,
            model_name=answer.model_name,
            model_version=answer.version,
            output=answer.output,
            probabilities=answer.probabilities,
        ),
        features=event.features,
        latency_ms=latency_ms,
        event_time=event.event_time,
    )


def check_deployment(key: bytes | None, value: bytes | None, topic: str) -> Deployment | None:
    """A record of the ``deployments`` topic: a deployment keyed by its name, or None for a
    tombstone (the key's deployment is removed)."""
    if key is None:
        raise EventDecodeError(topic, "no key: a deployment record is keyed by its name")
    if value is None:
        return None
    deployment = decode(Deployment, value, topic)
    if key != deployment.name.encode():
        raise EventDecodeError(topic, f"key {key!r} is not the deployment name {deployment.name!r}")
    return deployment


@dataclass
class DeploymentIndex:
    """Live deployments by name and by stream, decoded once when they arrive."""

    by_name: dict[str, Deployment]
    by_stream: dict[str, dict[str, Deployment]]

    @classmethod
    def empty(cls) -> DeploymentIndex:
        """An index with no deployments."""
        return cls({}, {})

    def apply(self, name: str, value: bytes | None, topic: str) -> None:
        """Take a record of the ``deployments`` topic: a deployment, or a deletion (tombstone or
        ``deleted``). A record that does not decode raises and leaves the index as it was."""
        deployment = None if value is None else decode(Deployment, value, topic)
        old = self.by_name.pop(name, None)
        if old is not None:
            self.by_stream.get(old.stream, {}).pop(name, None)
        if deployment is not None and not deployment.deleted:
            self.by_name[name] = deployment
            self.by_stream.setdefault(deployment.stream, {})[name] = deployment

    def for_stream(self, stream: str) -> list[Deployment]:
        """The deployments serving `stream`; raises `NoDeploymentError` if there are none."""
        deployments = self.by_stream.get(stream)
        if not deployments:
            raise NoDeploymentError(stream)
        return list(deployments.values())

    def model_uris(self) -> set[str]:
        """Every model URI a live deployment uses."""
        return {v.model_uri for d in self.by_name.values() for v in d.variants}

    def __len__(self) -> int:
        return len(self.by_name)


class VariantsFailedError(DriftlineError):
    """Some variants could not answer an event (the others' predictions were still sent)."""

    def __init__(self, failures: list[tuple[str, str, ModelError]]) -> None:
        self.failures = failures
        super().__init__(
            "; ".join(
                f"{error} (deployment {deployment!r}, variant {variant!r})"
                for deployment, variant, error in failures
            )
        )
