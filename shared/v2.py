"""A model on an Open Inference Protocol (KServe V2) server, asked over REST: MLServer, Triton,
KServe runtimes. URI: ``v2+http(s)://<host>[:<port>]/<model>[/versions/<version>]``.

The endpoint's metadata (``GET /v2/models/<model>[/versions/<v>]``) says which inputs the model
takes, in which order and of which type: one input per feature, named as the feature (MLServer's
``model-settings.json`` declares them). A micro-batch becomes one ``/infer`` request with one
tensor per input, a row per event, asking for the declared outputs. A classifier's probabilities
come from an output named ``predict_proba`` (MLServer's scikit-learn runtime) or one whose
metadata parameters list its ``classes``; its columns are those classes in order, so the
probabilities are read only when the metadata declares them (a column index is not a label).

Failure behaviour (docs/v2.md):
- every request has a timeout; at most `V2Options.max_concurrency` requests per endpoint are in
  flight (the others wait their turn);
- metadata reads are retried with backoff (they change nothing); an inference is retried only
  when the connection failed before any answer (refused, or dropped before the response began),
  never after a timeout: the server may still be computing, and asking again would double the
  load of a struggling server;
- a circuit breaker (`shared.breaker`) opens after `breaker_failures` outages in a row, and
  every batch then fails at once until one probe after `breaker_reset_s` finds the server back;
- each failed event gets a `ModelError` naming the URI and why, so the router dead-letters it and
  counts it in ``driftline_model_failures_total`` by `kind`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import orjson

from shared import metrics
from shared.backends import Answer, ModelBackend, Probabilities, Row
from shared.breaker import CircuitBreaker
from shared.errors import (
    CircuitOpenError,
    EndpointError,
    EndpointRefusedError,
    ModelError,
    UnknownModelError,
    WrongFeaturesError,
)
from shared.events import FeatureValue, Label, StreamSchema
from shared.logging import get_logger
from shared.model_uris import V2_FORM, V2Uri

log = get_logger(__name__)
T = TypeVar("T")

LABEL_OUTPUT = "predict"
PROBA_OUTPUT = "predict_proba"
"""MLServer's scikit-learn runtime's outputs: `predict()` and `predict_proba()`."""
UNVERSIONED = "unversioned"
"""Version of an answer when neither the server nor the URI names one."""
_FLOATS = frozenset({"FP16", "FP32", "FP64"})
_INTS = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})


@dataclass(frozen=True, slots=True)
class V2Options:
    """How the router talks to V2 endpoints (from `shared.settings.RouterSettings`)."""

    timeout_s: float = 5.0
    """Longest one request may take, connection included."""
    max_concurrency: int = 4
    """Requests in flight per endpoint at most."""
    breaker_failures: int = 3
    """Outages in a row that open an endpoint's circuit."""
    breaker_reset_s: float = 2.0
    """Seconds an open circuit refuses before one probe may go through."""
    metadata_attempts: int = 3
    """Tries of a metadata read (safe to repeat) before the endpoint counts as down."""


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One declared input or output of a V2 model."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What a V2 endpoint says about its model, as far as the router needs it."""

    name: str
    versions: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @classmethod
    def parse(cls, uri: str, body: Any) -> ModelMetadata:
        """Read a metadata response; raises `EndpointRefusedError` if it is not one."""
        try:
            return cls(
                name=str(body["name"]),
                versions=tuple(str(v) for v in body.get("versions") or ()),
                inputs=tuple(_tensor_spec(t) for t in body.get("inputs") or ()),
                outputs=tuple(_tensor_spec(t) for t in body.get("outputs") or ()),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise EndpointRefusedError(uri, f"metadata is not V2 metadata ({exc!r})") from None

    @property
    def classes(self) -> list[Label] | None:
        """The class of each probability column, if the metadata declares them."""
        spec = self.probability_output
        if spec is None:
            return None
        classes = spec.parameters.get("classes")
        return list(classes) if isinstance(classes, list) else None

    @property
    def probability_output(self) -> TensorSpec | None:
        """The declared output holding class probabilities, if any."""
        return next(
            (
                o
                for o in self.outputs
                if o.name == PROBA_OUTPUT or isinstance(o.parameters.get("classes"), list)
            ),
            None,
        )

    @property
    def label_output(self) -> str | None:
        """The declared output holding the prediction (``predict``, else the first that is not
        the probabilities); None when only probabilities are declared."""
        proba = self.probability_output
        names = [o.name for o in self.outputs if o is not proba]
        return LABEL_OUTPUT if LABEL_OUTPUT in names else next(iter(names), None)


_ACCEPTS: dict[str, frozenset[str]] = {
    "numeric": _FLOATS | _INTS,
    "categorical": frozenset({"BYTES"}),
    "boolean": frozenset({"BOOL"}) | _INTS,
}
"""The input datatypes each declared feature type can fill."""


def input_problems(metadata: ModelMetadata, stream: StreamSchema) -> list[str]:
    """Why `stream`'s feature events cannot fill the model's inputs (empty when they can): an
    input no feature of that name, or a feature whose type cannot fill it."""
    if not metadata.inputs:
        return [
            "its metadata declares no inputs (declare one per feature, e.g. in MLServer's "
            "model-settings.json)"
        ]
    types = {f.name: f.type for f in stream.features}
    types.update({n: "numeric" for a in stream.aggregates for n in a.feature_names})
    problems = []
    missing = [spec.name for spec in metadata.inputs if spec.name not in types]
    if missing:
        problems.append(
            f"it takes {', '.join(missing)}, which stream {stream.name!r} does not declare "
            f"(it has {', '.join(stream.feature_names)})"
        )
    for spec in metadata.inputs:
        kind = types.get(spec.name)
        if kind is not None and spec.datatype not in _ACCEPTS[kind]:
            problems.append(f"input {spec.name} is {spec.datatype}, feature {spec.name} is {kind}")
    return problems


def _tensor_spec(body: Any) -> TensorSpec:
    return TensorSpec(
        name=str(body["name"]),
        datatype=str(body["datatype"]).upper(),
        shape=tuple(int(d) for d in body.get("shape") or ()),
        parameters=dict(body.get("parameters") or {}),
    )


def inference_request(
    metadata: ModelMetadata, rows: Sequence[dict[str, FeatureValue]]
) -> dict[str, Any]:
    """The ``/infer`` body of `rows` (every row must hold every input, see `encode_row`): one
    tensor per declared input, in declared order, one row per event; the declared outputs
    asked for by name; MLServer's ``pd`` content type so its runtimes see one column per input."""
    inputs = []
    for spec in metadata.inputs:
        shape = [len(rows), 1] if len(spec.shape) == 2 else [len(rows)]
        tensor: dict[str, Any] = {
            "name": spec.name,
            "datatype": spec.datatype,
            "shape": shape,
            "data": [row[spec.name] for row in rows],
        }
        if spec.datatype == "BYTES":
            tensor["parameters"] = {"content_type": "str"}
        inputs.append(tensor)
    body: dict[str, Any] = {"inputs": inputs, "parameters": {"content_type": "pd"}}
    if metadata.outputs:
        body["outputs"] = [{"name": o.name} for o in metadata.outputs]
    return body


def encode_row(
    uri: str, metadata: ModelMetadata, features: dict[str, FeatureValue]
) -> dict[str, FeatureValue]:
    """One event's values of the declared inputs, in each input's type; raises
    `WrongFeaturesError` when the event lacks an input or holds a value of another type."""
    missing = [spec.name for spec in metadata.inputs if spec.name not in features]
    if missing:
        raise WrongFeaturesError(uri, f"event lacks {', '.join(missing)}")
    row: dict[str, FeatureValue] = {}
    for spec in metadata.inputs:
        value = features[spec.name]
        try:
            row[spec.name] = _typed(spec.datatype, value)
        except (TypeError, ValueError):
            raise WrongFeaturesError(
                uri, f"{spec.name}={value!r} is not {spec.datatype} as the endpoint declares"
            ) from None
    return row


def _typed(datatype: str, value: FeatureValue) -> FeatureValue:
    if datatype in _FLOATS:
        if isinstance(value, str):
            raise TypeError(datatype)
        return float(value)
    if datatype in _INTS:
        if isinstance(value, str) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError(datatype)
        return int(value)
    if datatype == "BOOL":
        if not isinstance(value, bool):
            raise TypeError(datatype)
        return value
    if datatype == "BYTES":
        return value if isinstance(value, str) else str(value)
    raise ValueError(datatype)


def read_answers(
    uri: str, metadata: ModelMetadata, body: Any, rows: int
) -> list[tuple[Label | None, Probabilities]]:
    """Each row's output and probabilities from an ``/infer`` response; raises
    `EndpointRefusedError` when the response is not a V2 answer for `rows` rows."""
    try:
        outputs = {str(o["name"]): o for o in body["outputs"]}
        proba_spec = metadata.probability_output
        classes = metadata.classes
        label_name = metadata.label_output
        if label_name is None and proba_spec is None:
            label_name = next(iter(outputs))
        labels = _columns(outputs[label_name], rows) if label_name is not None else None
        if labels is not None and any(len(row) != 1 for row in labels):
            raise ValueError(f"{label_name} has more than one value per row")
        scores = None
        if proba_spec is not None and classes is not None and proba_spec.name in outputs:
            scores = _columns(outputs[proba_spec.name], rows)
            if any(len(row) != len(classes) for row in scores):
                raise ValueError(f"{proba_spec.name} has not one column per declared class")
        answers: list[tuple[Label | None, Probabilities]] = []
        for i in range(rows):
            probabilities, output = None, None
            if scores is not None and classes is not None:
                row = [float(p) for p in scores[i]]  # a value that is not a number: refused
                probabilities = dict(zip(map(str, classes), row, strict=True))
                output = classes[row.index(max(row))]
            if labels is not None:
                output = labels[i][0]
            answers.append((output, probabilities))
    except (KeyError, TypeError, ValueError, OverflowError, StopIteration) as exc:
        raise EndpointRefusedError(uri, f"unreadable inference answer ({exc!r})") from None
    return answers


def _columns(tensor: Any, rows: int) -> list[list[Any]]:
    """A response tensor's flat data as `rows` rows (row-major, as V2 sends it)."""
    data = tensor["data"]
    if not isinstance(data, list) or rows == 0 or len(data) % rows:
        raise ValueError(f"output {tensor['name']!r} holds {len(data)} values for {rows} rows")
    width = len(data) // rows
    return [data[i * width : (i + 1) * width] for i in range(rows)]


class V2Backend(ModelBackend):
    """A model on a V2 inference server (see the module's docstring)."""

    def __init__(self, uri: str, options: V2Options) -> None:
        super().__init__(uri)
        parsed = V2Uri.parse(uri)
        if parsed is None:
            raise UnknownModelError(uri, V2_FORM)
        self.endpoint = parsed
        self.options = options
        self.breaker = CircuitBreaker(options.breaker_failures, options.breaker_reset_s)
        self.metadata: ModelMetadata | None = None
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(options.max_concurrency)

    async def load(self) -> None:
        """Read the model's metadata; a server that is down now is asked again on first use
        (its breaker decides when), a model it does not know raises `UnknownModelError`."""
        try:
            self.metadata = await self._read_metadata()
        except EndpointError as exc:
            log.warning("V2 endpoint down at load; asked again on first use", reason=str(exc))
        metrics.MODEL_LOADS.labels(self.uri).inc()

    async def refresh(self) -> bool:
        """Read the metadata again: a new model version behind the same name may declare other
        inputs or outputs. True when they changed."""
        if not self.breaker.allow():
            return False
        metadata = await self._guarded(self._read_metadata())
        changed = metadata != self.metadata
        self.metadata = metadata
        return changed

    async def unload(self) -> None:
        """Close the HTTP connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def predict(self, features: dict[str, FeatureValue], entity_id: str) -> Answer:
        """Not used: a network model answers batches (`predict_many`) on the event loop."""
        raise ModelError(self.uri, "a V2 endpoint answers through predict_many only")

    async def predict_many(self, rows: Sequence[Row]) -> list[Answer | ModelError]:
        """One ``/infer`` request for every row that holds the model's inputs; the others, or
        all of them when the endpoint fails, get the `ModelError` saying why."""
        try:
            if not self.breaker.allow():
                raise self._circuit_open()
            if self.metadata is None:
                self.metadata = await self._guarded(self._read_metadata())
        except ModelError as exc:
            return [exc] * len(rows)
        metadata = self.metadata
        answers: dict[int, Answer | ModelError] = {}
        encoded: dict[int, dict[str, FeatureValue]] = {}
        for i, (features, _) in enumerate(rows):
            try:
                encoded[i] = encode_row(self.uri, metadata, features)
            except ModelError as exc:
                answers[i] = exc
        if encoded:
            try:
                answered = await self._infer(metadata, list(encoded.values()))
            except ModelError as exc:
                answers.update((i, exc) for i in encoded)
            else:
                answers.update(zip(encoded, answered, strict=True))
        return [answers[i] for i in range(len(rows))]

    async def _infer(
        self, metadata: ModelMetadata, rows: list[dict[str, FeatureValue]]
    ) -> list[Answer]:
        body = inference_request(metadata, rows)
        url = f"{self.endpoint.base_url}{self.endpoint.model_path}/infer"
        answer = await self._guarded(self._request("POST", url, body, retry_connect=True))
        read = read_answers(self.uri, metadata, answer, len(rows))
        version = str(answer.get("model_version") or self.endpoint.version or UNVERSIONED)
        name = str(answer.get("model_name") or self.endpoint.model)
        return [Answer(name, version, output, probabilities) for output, probabilities in read]

    async def _read_metadata(self) -> ModelMetadata:
        """The model's metadata, tried `metadata_attempts` times with backoff (a read is safe to
        repeat)."""
        url = f"{self.endpoint.base_url}{self.endpoint.model_path}"
        for attempt in range(self.options.metadata_attempts - 1):
            try:
                return ModelMetadata.parse(self.uri, await self._request("GET", url, None, False))
            except EndpointError:
                await asyncio.sleep(0.1 * 2**attempt)
        return ModelMetadata.parse(self.uri, await self._request("GET", url, None, False))

    async def _guarded(self, request: Awaitable[T]) -> T:
        """Await `request`, telling the breaker whether the endpoint answered: a refusal (4xx)
        is an answer; anything that is not one (cancelled too) counts as an outage, so a
        half-open circuit never waits for a probe that will not report."""
        try:
            result = await request
        except CircuitOpenError:
            raise  # not asked: nothing to tell the breaker
        except EndpointError:
            self.breaker.failed()
            raise
        except ModelError:
            self.breaker.succeeded()
            raise
        except BaseException:
            self.breaker.failed()
            raise
        self.breaker.succeeded()
        return result

    async def check_serves(self, stream: StreamSchema) -> ModelMetadata:
        """The deploy-time check: the model is ready and takes inputs `stream`'s feature events
        hold, in types they can fill; raises `EndpointError` (down, not ready: exit 3),
        `UnknownModelError` or `WrongFeaturesError` (exit 2). Closes its connections."""
        try:
            url = f"{self.endpoint.base_url}{self.endpoint.model_path}/ready"
            status, text = await self._exchange("GET", url, None, retry_connect=True)
            if status == 404:
                raise UnknownModelError(self.uri, "the server does not serve this model")
            if status != 200:
                raise EndpointError(self.uri, f"not ready ({status}: {_error_text(text)})")
            metadata = await self._read_metadata()
        finally:
            await self.unload()
        problems = input_problems(metadata, stream)
        if problems:
            raise WrongFeaturesError(self.uri, "; ".join(problems))
        return metadata

    async def _request(self, method: str, url: str, body: Any, retry_connect: bool) -> Any:
        """The JSON answer of one exchange; raises `EndpointError` (no answer, 5xx),
        `UnknownModelError` (404) or `EndpointRefusedError` (another 4xx, not JSON)."""
        status, text = await self._exchange(method, url, body, retry_connect)
        return _json_answer(self.uri, method, status, text)

    async def _exchange(
        self, method: str, url: str, body: Any, retry_connect: bool
    ) -> tuple[int, str]:
        """One HTTP exchange within the timeout and the concurrency bound: status and body.
        Raises `EndpointError` when no answer came."""
        session = self._client()
        attempts = 2 if retry_connect else 1
        async with self._slots:
            if self.breaker.state == "open":
                # It opened while this request waited for a slot: fail now, not a timeout later.
                raise self._circuit_open()
            for attempt in range(1, attempts + 1):
                try:
                    async with session.request(method, url, json=body) as response:
                        text = await response.text()
                        status = response.status
                    break
                except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
                    # Nothing was computed: the connection failed before any answer began.
                    if attempt == attempts:
                        raise EndpointError(self.uri, f"{type(exc).__name__}: {exc}") from None
                except TimeoutError:
                    raise EndpointError(
                        self.uri, f"no answer within {self.options.timeout_s}s"
                    ) from None
                except aiohttp.ClientError as exc:
                    raise EndpointError(self.uri, f"{type(exc).__name__}: {exc}") from None
        return status, text

    def _circuit_open(self) -> CircuitOpenError:
        return CircuitOpenError(
            self.uri,
            f"{self.breaker.failures} failures in a row; "
            f"next try in {self.breaker.retry_in():.1f}s",
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.options.timeout_s),
                connector=aiohttp.TCPConnector(limit=self.options.max_concurrency),
                raise_for_status=False,
            )
        return self._session


def _json_answer(uri: str, method: str, status: int, text: str) -> Any:
    problem = _error_text(text)
    if status >= 500:
        raise EndpointError(uri, f"{method} answered {status}: {problem}")
    if status == 404:
        raise UnknownModelError(uri, f"the server does not serve this model ({problem})")
    if status >= 400:
        raise EndpointRefusedError(uri, f"{method} answered {status}: {problem}")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise EndpointRefusedError(uri, f"{method} answered {status} with no JSON") from None


def _error_text(text: str) -> str:
    """The ``error`` field of a V2 error body, else the body's start."""
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text[:200] or "empty body"
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])[:500]
    return text[:200]
