"""Checking an event's data against its stream's declaration (`StreamSchema`), without Kafka.

Ingestion checks raw events with it and the V2 gateway checks inference requests with it, so a
value one refuses the other refuses too, for the same reason. The reason starts with the kind of
fault (``missing field: ...``) so metrics can be labelled by it.
"""

from __future__ import annotations

import math
from typing import Literal

from shared.errors import DriftlineError
from shared.events import FeatureSpec, FeatureValue, RawEvent, StreamSchema, check_number


class UnknownStreamError(DriftlineError):
    """A raw event names a stream nobody declared."""

    code = "unknown_stream"

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(
            f"unknown stream: {stream!r} is not declared; declare it with "
            "`driftline streams declare --file <schema.json>`"
        )


Fault = Literal[
    "missing field",
    "wrong type",
    "unknown category",
    "not finite",
    "too large",
    "out of range",
    "future event time",
]
"""What can be wrong with a raw event's content."""


class InvalidEventError(DriftlineError):
    """A raw event breaks its stream's declaration; `kind` names the fault for metrics."""

    def __init__(self, kind: Fault, raw: RawEvent, detail: str) -> None:
        self.kind = kind
        self.code = kind.replace(" ", "_")
        self.event_id = raw.event_id
        self.stream = raw.stream
        super().__init__(f"{kind}: event {raw.event_id!r} of stream {raw.stream!r}: {detail}")


def validate_features(raw: RawEvent, schema: StreamSchema) -> dict[str, FeatureValue]:
    """The declared features of `raw`, checked; undeclared fields are left out."""
    features: dict[str, FeatureValue] = {}
    for spec in schema.features:
        if spec.name not in raw.data or raw.data[spec.name] is None:
            if spec.required:
                raise InvalidEventError("missing field", raw, f"required {spec.name!r} is absent")
            continue
        features[spec.name] = _checked_value(spec, raw.data[spec.name], raw)
    return features


def _checked_value(spec: FeatureSpec, value: object, raw: RawEvent) -> FeatureValue:
    shown = f"{spec.name}={value!r}"
    if spec.type == "boolean":
        if not isinstance(value, bool):
            raise InvalidEventError("wrong type", raw, f"{shown} is not a boolean")
        return value
    if spec.type == "categorical":
        if not isinstance(value, str):
            raise InvalidEventError("wrong type", raw, f"{shown} is not text")
        if spec.categories is not None and value not in spec.categories:
            allowed = ", ".join(spec.categories)
            raise InvalidEventError("unknown category", raw, f"{shown} is not one of {allowed}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEventError("wrong type", raw, f"{shown} is not a number")
    try:
        number = check_number(value)
    except ValueError as exc:
        kind: Fault = (
            "not finite" if isinstance(value, float) and not math.isfinite(value) else "too large"
        )
        raise InvalidEventError(kind, raw, f"{spec.name}: {exc}") from None
    if (spec.min is not None and number < spec.min) or (spec.max is not None and number > spec.max):
        raise InvalidEventError("out of range", raw, f"{shown} is outside [{spec.min}, {spec.max}]")
    return number
