"""The Open Inference Protocol (KServe V2 REST) of the gateway, without HTTP or Kafka.

A request names a deployment (the V2 model name) and carries one input tensor per feature of the
deployment's stream, each of shape ``[n]`` (or ``[n, 1]``): n rows, n events. Its ``id`` is the
event id (``<id>:<row>`` for each row of a batch; a fresh one when absent), its parameters may
give the ``entity_id`` of every row (the event id when absent) and the ``event_time`` (now when
absent). Each row is checked against the stream's declaration as ingestion checks raw events
(`shared.validation`), so a request that breaks it is refused (400) with the same reason.
A version in the URL names one variant of the deployment: it alone answers, as the served one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from shared.errors import DriftlineError
from shared.events import (
    Deployment,
    FeatureEvent,
    Prediction,
    RawEvent,
    StreamSchema,
    describe_problem,
    utc_now,
)
from shared.routing import Call, Failure, choose_variants
from shared.validation import validate_features

V2_DATATYPES = frozenset(
    {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    }
)
"""The tensor datatypes the protocol names."""
OUTPUTS = ("output", "probabilities", "classes", "variant", "model_version", "event_id")
"""The output tensors an answer may hold, in order; a request's ``outputs`` picks some."""
_FEATURE_DATATYPES = {"numeric": "FP64", "categorical": "BYTES", "boolean": "BOOL"}


class V2Error(DriftlineError):
    """A request the gateway cannot answer, with the HTTP status the protocol gives it; its
    message is the ``error`` of the V2 error body."""

    code = "request_refused"

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)

    def body(self) -> bytes:
        """The protocol's error body."""
        return orjson.dumps({"error": str(self)})


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """A parsed inference request: its rows of input values by input name."""

    id: str
    rows: list[dict[str, Any]]
    entity_id: str | None
    event_time: datetime
    outputs: list[str] | None
    """The output tensors asked for (None: all)."""

    def event_ids(self) -> list[str]:
        """Each row's event id: the request id for one row, ``<id>:<row>`` for a batch."""
        if len(self.rows) == 1:
            return [self.id]
        return [f"{self.id}:{i}" for i in range(len(self.rows))]


def _bad(message: str) -> V2Error:
    return V2Error(400, message)


def parse_request(body: bytes, max_rows: int, now: datetime | None = None) -> InferenceRequest:
    """The request of a V2 JSON body, or a `V2Error` (400) saying what is wrong with it."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _bad("the body must be a JSON object with 'inputs'")
    request_id = document.get("id")
    if request_id is None or request_id == "":
        request_id = uuid.uuid4().hex
    elif not isinstance(request_id, str) or len(request_id) > 200:
        raise _bad("'id' must be a string of at most 200 characters (the event id)")
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _bad("'parameters' must be an object")
    entity_id = parameters.get("entity_id")
    if entity_id is not None and (not isinstance(entity_id, str) or not 0 < len(entity_id) <= 256):
        raise _bad("parameter 'entity_id' must be a string of 1 to 256 characters")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad("'inputs' must be a non-empty list of tensors, one per feature")
    columns = dict(_column(tensor) for tensor in inputs)
    if len(columns) != len(inputs):
        raise _bad("two inputs have the same name")
    sizes = {len(values) for values in columns.values()}
    if len(sizes) != 1:
        raise _bad("every input must hold the same number of rows (shape [n] or [n, 1])")
    n = sizes.pop()
    if not 0 < n <= max_rows:
        raise _bad(f"a request holds 1 to {max_rows} rows, this one {n}")
    return InferenceRequest(
        id=request_id,
        rows=[{name: values[i] for name, values in columns.items()} for i in range(n)],
        entity_id=entity_id,
        event_time=_event_time(parameters.get("event_time"), now),
        outputs=_outputs(document.get("outputs")),
    )


def _column(tensor: object) -> tuple[str, list[Any]]:
    """An input tensor's name and its values, one per row."""
    if not isinstance(tensor, dict):
        raise _bad("each input must be an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise _bad("an input has no name")
    shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if datatype not in V2_DATATYPES:
        raise _bad(f"input {name!r}: datatype {datatype!r} is not a V2 datatype")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise _bad(f"input {name!r}: shape {shape!r} is not [n] or [n, 1] (one value per row)")
    if not isinstance(data, list):
        raise _bad(f"input {name!r}: data must be a list")
    values = list(_flat(data))
    if len(values) != shape[0]:
        raise _bad(f"input {name!r}: shape {shape} holds {shape[0]} values, data {len(values)}")
    return name, values


def _flat(data: list[Any]) -> Iterator[Any]:
    """Row-major values of a tensor written flat or nested one level (``[[1], [2]]``)."""
    for value in data:
        if isinstance(value, list):
            yield from value
        else:
            yield value


def _event_time(value: object, now: datetime | None) -> datetime:
    if value is None:
        return now or utc_now()
    try:
        return RawEvent.model_validate(
            {"event_id": "e", "stream": "s", "entity_id": "e", "event_time": value, "data": {}}
        ).event_time
    except ValidationError as exc:
        raise _bad(f"parameter 'event_time': {describe_problem(exc)}") from None


def _outputs(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in value
    ):
        raise _bad("'outputs' must be a list of objects with a name")
    names = [o["name"] for o in value]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise _bad(f"no output named {', '.join(unknown)}; outputs: {', '.join(OUTPUTS)}")
    return names


def feature_events(
    request: InferenceRequest, schema: StreamSchema, deployment: Deployment
) -> list[FeatureEvent]:
    """The feature events of a request's rows, each checked against the stream's declaration
    and marked answered for `deployment` (routers will not predict them for it again)."""
    if schema.aggregates:
        raise V2Error(
            400,
            f"stream {schema.name!r} declares windowed aggregates, which only ingestion "
            "computes: send its events to events.raw",
        )
    declared = {f.name for f in schema.features}
    unknown = sorted(set(request.rows[0]) - declared)
    if unknown:
        raise _bad(
            f"no feature {', '.join(map(repr, unknown))} in stream {schema.name!r}; "
            f"its features: {', '.join(sorted(declared))}"
        )
    events = []
    for event_id, row in zip(request.event_ids(), request.rows, strict=True):
        entity_id = request.entity_id or event_id
        try:
            raw = RawEvent(
                event_id=event_id,
                stream=schema.name,
                entity_id=entity_id,
                event_time=request.event_time,
                data=row,
            )
            features = validate_features(raw, schema)
            events.append(
                FeatureEvent(
                    event_id=event_id,
                    stream=schema.name,
                    entity_id=entity_id,
                    event_time=request.event_time,
                    features=features,
                    answered_for=[deployment.name],
                )
            )
        except DriftlineError as exc:
            raise _bad(str(exc)) from None
        except ValidationError as exc:
            raise _bad(describe_problem(exc)) from None
    return events


def plan_request(
    events: Sequence[FeatureEvent], deployment: Deployment, variant: str | None
) -> list[Call]:
    """The variant calls of a request's events: routed as the router routes them (rules, canary,
    champion, shadows), or, when the URL names a variant (its version), that variant alone."""
    if variant is None:
        return [
            Call(position, event, deployment, chosen, served)
            for position, event in enumerate(events)
            for chosen, served in choose_variants(deployment, event)
        ]
    pinned = next((v for v in deployment.variants if v.name == variant), None)
    if pinned is None:
        raise V2Error(404, unknown_version(deployment, variant))
    return [
        Call(position, event, deployment, pinned, True) for position, event in enumerate(events)
    ]


def unknown_version(deployment: Deployment, version: str) -> str:
    """Why a version of a deployment cannot be found."""
    names = ", ".join(v.name for v in deployment.variants)
    return f"model {deployment.name!r} has no version {version!r} (its versions: {names})"


def served_predictions(
    events: Sequence[FeatureEvent],
    predictions: Sequence[Prediction],
    failures: dict[int, list[Failure]],
) -> list[Prediction]:
    """The served prediction of each event, in order; a `V2Error` (503) naming the variant and
    the reason when a served variant could not answer (a shadow's failure does not count)."""
    served = {p.event_id: p for p in predictions if p.outcome.served}
    answered = []
    for position, event in enumerate(events):
        prediction = served.get(event.event_id)
        if prediction is None:
            reasons = "; ".join(
                f"variant {variant!r}: {error}" for _, variant, error in failures.get(position, [])
            )
            raise V2Error(503, f"event {event.event_id!r} was not answered: {reasons}")
        answered.append(prediction)
    return answered


def answer_of(request: InferenceRequest, deployment: Deployment, served: list[Prediction]) -> dict:
    """The V2 inference response of a request whose events were `served` these predictions."""
    outcomes = [p.outcome for p in served]
    n = len(outcomes)
    tensors: dict[str, dict[str, Any]] = {}
    labels = [o.output for o in outcomes]
    if all(label is not None for label in labels):
        tensors["output"] = _tensor("output", [n], _datatype(labels), labels)
    classes = _shared_classes(served)
    if classes is not None:
        rows = [[p.outcome.probabilities[c] for c in classes] for p in served]  # type: ignore[index]
        flat = [value for row in rows for value in row]
        tensors["probabilities"] = _tensor("probabilities", [n, len(classes)], "FP64", flat)
        tensors["classes"] = _tensor("classes", [len(classes)], "BYTES", classes)
    tensors["variant"] = _tensor("variant", [n], "BYTES", [o.variant for o in outcomes])
    versions = [o.model_version for o in outcomes]
    tensors["model_version"] = _tensor("model_version", [n], "BYTES", versions)
    event_ids = [p.event_id for p in served]
    tensors["event_id"] = _tensor("event_id", [n], "BYTES", event_ids)
    wanted = request.outputs or list(tensors)
    answer: dict[str, Any] = {"model_name": deployment.name, "id": request.id}
    if len(set(versions)) == 1:
        answer["model_version"] = versions[0]
    answer["outputs"] = [tensors[name] for name in wanted if name in tensors]
    return answer


def _tensor(name: str, shape: list[int], datatype: str, data: list[Any]) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def _datatype(values: Sequence[Any]) -> str:
    """The V2 datatype of a model's outputs: BOOL, INT64, FP64, or BYTES for labels as text."""
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if any(isinstance(v, bool) for v in values):
        return "BYTES"
    if all(isinstance(v, int) for v in values):
        return "INT64"
    if all(isinstance(v, int | float) for v in values):
        return "FP64"
    return "BYTES"


def _shared_classes(served: Sequence[Prediction]) -> list[str] | None:
    """The classes every served prediction gave probabilities for, in one order; None when
    some gave none or others (no one tensor can hold them)."""
    first = served[0].outcome.probabilities
    if first is None:
        return None
    classes = list(first)
    for prediction in served[1:]:
        probabilities = prediction.outcome.probabilities
        if probabilities is None or list(probabilities) != classes:
            return None
    return classes


def has_cold_answer(request: InferenceRequest, served: Sequence[Prediction]) -> V2Error | None:
    """The error to answer with when a served variant gave no output (an online model before its
    first snapshot): the event and prediction are recorded (labels teach that model), but there
    is nothing to answer."""
    cold = [p.outcome.variant for p in served if p.outcome.output is None]
    if not cold:
        return None
    return V2Error(
        503,
        f"request {request.id!r}: variant {cold[0]!r} has no answer yet (an online model before "
        "its first snapshot); the events were recorded, so their labels will teach it",
    )


def model_metadata(deployment: Deployment, schema: StreamSchema | None) -> dict[str, Any]:
    """The V2 model metadata of a deployment: its variants as versions, its stream's declared
    features as inputs (none while the stream is undeclared)."""
    inputs = [
        {"name": f.name, "datatype": _FEATURE_DATATYPES[f.type], "shape": [-1]}
        for f in (schema.features if schema is not None else [])
    ]
    return {
        "name": deployment.name,
        "versions": [v.name for v in deployment.variants],
        "platform": "driftline",
        "inputs": inputs,
        "outputs": [
            {"name": "variant", "datatype": "BYTES", "shape": [-1]},
            {"name": "model_version", "datatype": "BYTES", "shape": [-1]},
            {"name": "event_id", "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {"stream": deployment.stream},
    }
