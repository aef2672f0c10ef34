"""Routing feature events to model variants, without Kafka: the router's and the gateway's rules.

For each deployment of an event's stream: the first rule variant whose rule matches serves the
event; otherwise a canary serves it if the entity's stable hash falls in the canary's share;
otherwise the champion. Shadows answer every event but are never served.
"""

from __future__ import annotations

import asyncio
import hashlib
import operator
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared import metrics
from shared.backends import Answer, ModelBackend
from shared.errors import DriftlineError, ModelError
from shared.events import (
    Deployment,
    FeatureEvent,
    FeatureValue,
    Prediction,
    RoutingRule,
    Variant,
    VariantOutput,
    describe_problem,
    prediction_id_for,
)
from shared.model_uris import ONLINE_PREFIX

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda value, allowed: value in allowed,
}


Failure = tuple[str, str, ModelError]
"""A variant that could not answer: deployment name, variant name, why."""


class NoDeploymentError(DriftlineError):
    """Events arrive for a stream that nothing is deployed on."""

    code = "no_deployment"

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
    """The prediction record of one variant's answer, with the id a replay of the event
    (same variant, same model version) gives again."""
    outcome = VariantOutput(
        variant=variant.name,
        role=variant.role,
        served=served,
        model_name=answer.model_name,
        model_version=answer.version,
        output=answer.output,
        probabilities=answer.probabilities,
        online=variant.model_uri.startswith(ONLINE_PREFIX),
    )
    return Prediction(
        prediction_id=prediction_id_for(event.event_id, deployment.name, outcome),
        event_id=event.event_id,
        entity_id=event.entity_id,
        stream=event.stream,
        deployment=deployment.name,
        outcome=outcome,
        features=event.features,
        latency_ms=latency_ms,
        event_time=event.event_time,
    )


@dataclass
class DeploymentIndex:
    """Live deployments by name and by stream, decoded once when they arrive."""

    by_name: dict[str, Deployment]
    by_stream: dict[str, dict[str, Deployment]]

    @classmethod
    def empty(cls) -> DeploymentIndex:
        """An index with no deployments."""
        return cls({}, {})

    def apply(self, name: str, deployment: Deployment | None) -> None:
        """Take the deployment now named `name`, or its removal (None)."""
        old = self.by_name.pop(name, None)
        if old is not None:
            self.by_stream.get(old.stream, {}).pop(name, None)
        if deployment is not None:
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

    code = "variants_failed"

    def __init__(self, failures: list[Failure]) -> None:
        self.failures = failures
        super().__init__(
            "; ".join(
                f"{error} (deployment {deployment!r}, variant {variant!r})"
                for deployment, variant, error in failures
            )
        )


@dataclass(frozen=True, slots=True)
class Call:
    """One variant asked about one event of a micro-batch."""

    position: int
    """The event's position in its batch."""
    event: FeatureEvent
    deployment: Deployment
    variant: Variant
    served: bool


def plan_calls(
    events: Sequence[tuple[int, FeatureEvent]], index: DeploymentIndex
) -> tuple[list[Call], dict[int, DriftlineError]]:
    """Every variant call of a batch's decoded events (with their positions), in event order,
    and the error of each event whose stream has no deployment. Deployments an event was
    answered for already (by the V2 gateway, `FeatureEvent.answered_for`) are not asked again."""
    calls: list[Call] = []
    unrouted: dict[int, DriftlineError] = {}
    for position, event in events:
        try:
            deployments = index.for_stream(event.stream)
        except NoDeploymentError as exc:
            unrouted[position] = exc
            continue
        for deployment in deployments:
            if deployment.name in event.answered_for:
                continue
            for variant, served in choose_variants(deployment, event):
                calls.append(Call(position, event, deployment, variant, served))
    return calls, unrouted


async def answer_calls(
    calls: Sequence[Call], backends: Mapping[str, ModelBackend | ModelError]
) -> tuple[list[Prediction], dict[int, list[Failure]]]:
    """Ask each model once for all its calls of the batch, every model at the same time; the
    predictions in call order, and the failures by event position (an event's other variants
    still predict).

    A prediction's `latency_ms` is its model call's time divided by the rows it scored.
    """
    by_uri: dict[str, list[int]] = {}
    for i, call in enumerate(calls):
        by_uri.setdefault(call.variant.model_uri, []).append(i)
    answers: list[Answer | ModelError | None] = [None] * len(calls)
    latency_ms = [0.0] * len(calls)

    async def ask(backend: ModelBackend, members: list[int]) -> None:
        started = time.perf_counter()
        results = await backend.predict_many(
            [(calls[i].event.features, calls[i].event.entity_id) for i in members]
        )
        share = (time.perf_counter() - started) * 1000 / len(members)
        for i, result in zip(members, results, strict=True):
            answers[i], latency_ms[i] = result, share

    asks = []
    for uri, members in by_uri.items():
        backend = backends[uri]
        if isinstance(backend, ModelError):
            for i in members:
                answers[i] = backend
        else:
            asks.append(ask(backend, members))
    await asyncio.gather(*asks)
    predictions: list[Prediction] = []
    failures: dict[int, list[Failure]] = {}
    for call, answer, latency in zip(calls, answers, latency_ms, strict=True):
        if isinstance(answer, Answer):
            answer = _prediction_or_error(call, answer, latency)
        if isinstance(answer, Prediction):
            predictions.append(answer)
        elif answer is not None:
            failures.setdefault(call.position, []).append(
                (call.deployment.name, call.variant.name, answer)
            )
    return predictions, failures


def _prediction_or_error(call: Call, answer: Answer, latency_ms: float) -> Prediction | ModelError:
    """The prediction of `answer`, or why it cannot be one: a model that answers NaN, infinity
    or a number beyond `shared.events.MAX_MAGNITUDE` has failed that event, like one that raised
    (no downstream state may hold such a number)."""
    try:
        return prediction_for(
            call.event, call.deployment, call.variant, call.served, answer, latency_ms
        )
    except ValidationError as exc:
        problem = describe_problem(exc)
        return ModelError(call.variant.model_uri, f"unusable answer: {problem}")


def count_answers(predictions: Sequence[Prediction], failures: Mapping[int, list[Failure]]) -> None:
    """Count a batch's predictions (by deployment, variant, served), their model time, and the
    variants that failed, as the router and the gateway report them alike."""
    served = Counter((p.deployment, p.outcome.variant, str(p.outcome.served)) for p in predictions)
    for labels, count in served.items():
        metrics.child(metrics.PREDICTIONS, *labels).inc(count)
    inference = metrics.MODEL_INFERENCE_SECONDS
    for p in predictions:
        metrics.child(inference, p.deployment, p.outcome.variant).observe(p.latency_ms / 1000)
    for failed in failures.values():
        for deployment, variant, exc in failed:
            metrics.child(metrics.MODEL_FAILURES, deployment, variant, exc.kind).inc()
