"""Model backends behind one small interface, picked by the model URI's scheme (MLServer-style).

- ``models:/<name>@<alias>`` or ``models:/<name>/<version>``: an MLflow registry model, loaded as
  pyfunc in a worker thread; `refresh` re-resolves the alias and reloads when it moved.
- ``online:<model id>``: a River model whose latest signed snapshot came on ``model-snapshots``;
  an entity's own model (``<model id>/<entity id>``) wins over the shared one.
- ``v2+http(s)://<host>:<port>/<model>``: a model on an Open Inference Protocol server
  (`shared.v2`), one request per micro-batch.

`ModelCache` keeps one loaded backend per URI, however many deployments use it.
"""

from __future__ import annotations

import asyncio
import pickle
import time
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from shared import metrics
from shared.errors import (
    DriftlineError,
    ModelError,
    SignatureError,
    UnknownModelError,
    WrongFeaturesError,
)
from shared.events import FeatureValue, Label, ModelSnapshot, decode
from shared.logging import get_logger
from shared.model_uris import (
    MLFLOW_FORM,
    ONLINE_FORM,
    ONLINE_PREFIX,
    V2_PREFIXES,
    RegistryUri,
    check_model_uri,
    pinned_uri,
)
from shared.signing import KeyRing, verify_snapshot

if TYPE_CHECKING:
    from shared.settings import ModelServingSettings
    from shared.v2 import V2Options

log = get_logger(__name__)
# The classifier path below passes arrays in the model's own input order on purpose.
warnings.filterwarnings(
    "ignore", message="X does not have valid feature names", category=UserWarning
)

Probabilities = dict[str, float] | None
Row = tuple[dict[str, FeatureValue], str]
"""One event's features and entity id, as a model backend takes them."""


COLD_VERSION = "cold"
"""Version of an online variant's answer before its model has any snapshot (no output)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One model's answer for one event."""

    model_name: str
    """The registered model's name, or the online model id that answered."""
    version: str
    output: Label | None
    probabilities: Probabilities


class ModelBackend(ABC):
    """A model the router asks for predictions.

    The router's `ModelCache` calls `load` once before first use and `refresh` on its timer, both
    on the event loop (heavy work belongs in a thread); the router calls `predict_many` once per
    micro-batch, and `predict` raises a `ModelError` when the model cannot answer one event (that
    event is dead-lettered, the router goes on).
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri

    @abstractmethod
    async def load(self) -> None:
        """Make the model ready; raise `UnknownModelError` if there is no such model."""

    @abstractmethod
    def predict(self, features: dict[str, FeatureValue], entity_id: str) -> Answer:
        """The model's answer for one event's features."""

    async def predict_many(self, rows: Sequence[Row]) -> list[Answer | ModelError]:
        """An answer or the error for each row, in order; one row's error spares the others.
        Backends whose model scores a whole batch in one call faster override this; those that
        wait on a network (a V2 endpoint) await it here, and the router asks its models at once."""
        return [self._predict_or_error(features, entity_id) for features, entity_id in rows]

    def _predict_or_error(
        self, features: dict[str, FeatureValue], entity_id: str
    ) -> Answer | ModelError:
        try:
            return self.predict(features, entity_id)
        except ModelError as exc:
            return exc

    async def refresh(self) -> bool:
        """Pick up a newer version if the URI now points to one; True if it did."""
        return False

    @abstractmethod
    async def unload(self) -> None:
        """Let go of the model (no deployment uses it any more)."""


class MlflowBackend(ModelBackend):
    """An MLflow registry model (by alias or version) served as pyfunc."""

    def __init__(self, uri: str, tracking_uri: str) -> None:
        super().__init__(uri)
        parsed = RegistryUri.parse(uri)
        if parsed is None:
            raise UnknownModelError(uri, MLFLOW_FORM)
        self.name = parsed.name
        self.alias = parsed.alias
        self.pinned_version = parsed.version
        self.tracking_uri = tracking_uri
        self.version = ""
        self._model: Any = None
        self._inputs: list[str] | None = None
        self._classifier: Any = None

    async def load(self) -> None:
        """Resolve the version and load it (both in a thread: MLflow calls block)."""
        version = await asyncio.to_thread(self._resolve)
        await self._load_version(version)

    async def refresh(self) -> bool:
        """Reload when the alias moved to another version."""
        if self.alias is None:
            return False
        version = await asyncio.to_thread(self._resolve)
        if version == self.version:
            return False
        await self._load_version(version)
        log.info("model alias moved", uri=self.uri, version=version)
        return True

    async def unload(self) -> None:
        """Drop the loaded model."""
        self._model = self._classifier = None

    async def predict_many(self, rows: Sequence[Row]) -> list[Answer | ModelError]:
        """A classifier scores every row in one `predict_proba` call on one array (scikit-learn's
        cost is mostly per call); a failing batch, or another model, goes row by row."""
        if self._classifier is None or self._inputs is None or len(rows) == 1:
            return await super().predict_many(rows)
        inputs = self._inputs
        try:
            table = np.asarray([[f[name] for name in inputs] for f, _ in rows], dtype=float)
            scores = self._classifier.predict_proba(table)
        except Exception:
            return await super().predict_many(rows)
        classes = self._classifier.classes_
        labels = [str(c) for c in classes]
        return [
            Answer(
                self.name,
                self.version,
                _plain(classes[row.argmax()]),
                dict(zip(labels, row.tolist(), strict=True)),
            )
            for row in scores
        ]

    def predict(self, features: dict[str, FeatureValue], entity_id: str) -> Answer:
        """Predict with the model; probabilities when it is a classifier."""
        if self._inputs is not None:
            missing = [name for name in self._inputs if name not in features]
            if missing:
                raise WrongFeaturesError(self.uri, f"event lacks {', '.join(missing)}")
            values = [[features[name] for name in self._inputs]]
        try:
            if self._classifier is not None and self._inputs is not None:
                # One pass, on a plain array in the model's input order: a one-row DataFrame
                # costs scikit-learn ~20x more in validation than the prediction itself.
                row = self._classifier.predict_proba(np.asarray(values, dtype=float))[0]
                classes = self._classifier.classes_
                probabilities = {str(c): float(p) for c, p in zip(classes, row, strict=True)}
                return Answer(self.name, self.version, _plain(classes[row.argmax()]), probabilities)
            frame = (
                pd.DataFrame(values, columns=self._inputs)
                if self._inputs is not None
                else pd.DataFrame([features])
            )
            output = self._model.predict(frame)[0]
        except Exception as exc:
            raise ModelError(self.uri, f"{type(exc).__name__}: {exc}") from exc
        return Answer(self.name, self.version, _plain(output), None)

    def _resolve(self) -> str:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        try:
            if self.alias is not None:
                return str(client.get_model_version_by_alias(self.name, self.alias).version)
            return str(client.get_model_version(self.name, self.pinned_version).version)
        except MlflowException as exc:
            raise UnknownModelError(self.uri, exc.message.splitlines()[0]) from None

    async def _load_version(self, version: str) -> None:
        model = await asyncio.to_thread(self._load_pyfunc, version)
        schema = model.metadata.get_input_schema()
        raw = _raw_model(model)
        self._inputs = (
            schema.input_names()
            if schema is not None
            else list(getattr(raw, "feature_names_in_", [])) or None
        )
        is_classifier = hasattr(raw, "predict_proba") and hasattr(raw, "classes_")
        self._classifier = raw if is_classifier else None
        # The raw model (when the flavor exposes one) answers about 3x faster than the pyfunc
        # wrapper, whose per-call schema enforcement the input-name check above stands in for.
        self._model = raw if hasattr(raw, "predict") else model
        self.version = version
        metrics.MODEL_LOADS.labels(self.uri).inc()

    def _load_pyfunc(self, version: str) -> Any:
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return mlflow.pyfunc.load_model(pinned_uri(self.name, version))


class SnapshotStore:
    """Online models' latest verified snapshots, unpickled lazily and kept in a bounded cache.

    The router's table of ``model-snapshots`` tells `apply` of every record it stores or reads
    from its changelog; only those whose signature verifies for their key, and whose sequence is
    not older than the one held, replace it. Anything else (written straight to the changelog,
    say) is refused with an error log and the previous snapshot keeps serving. A snapshot is
    verified again and unpickled the first time a prediction needs it.
    """

    def __init__(self, keys: KeyRing, cache_size: int, table: str = "model_snapshots") -> None:
        self.keys = keys
        self.cache_size = cache_size
        self.table = table
        self._verified: dict[bytes, bytes] = {}
        self._models: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()

    def accept(self, value: bytes | None, topic: str) -> ModelSnapshot | None:
        """Check a snapshot before it may replace the held one.

        Returns the snapshot if it is not older than the held one, None if it is (ignored);
        raises `SignatureError` (unsigned, or signed as another model, sequence or payload) or
        `EventDecodeError` (not a snapshot).
        """
        snapshot = self._verify(decode(ModelSnapshot, value, topic))
        current = self._verified.get(snapshot.model_id.encode())
        if current is not None and orjson.loads(current)["sequence"] > snapshot.sequence:
            return None
        return snapshot

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Hold `value` as the snapshot of model `key` if `accept` lets it through under that
        key; else log the refusal (table and key) and keep the held one serving."""
        try:
            if value is None:
                raise SignatureError(
                    key.decode(errors="replace"), "tombstone", "a tombstone (never written)"
                )
            snapshot = self.accept(value, self.table)
            if snapshot is not None and snapshot.model_id.encode() != key:
                raise SignatureError(snapshot.model_id, "wrong_key", f"stored under key {key!r}")
        except DriftlineError as exc:
            metrics.REFUSED_SNAPSHOTS.labels(exc.code).inc()
            log.error(
                "stored snapshot refused; the previous one keeps serving",
                table=self.table,
                key=key.decode(errors="replace"),
                reason=str(exc),
            )
            return
        if snapshot is not None:
            self._verified[key] = value
            self._models.pop(key, None)

    def model(self, model_id: str) -> tuple[Any, int] | None:
        """The unpickled model and its sequence number, or None if it has no snapshot."""
        key = model_id.encode()
        found = self._models.get(key)
        if found is not None:
            self._models.move_to_end(key)
            return found
        stored = self._verified.get(key)
        if stored is None:
            return None
        snapshot = self._verify(ModelSnapshot.model_validate_json(stored))
        found = pickle.loads(snapshot.payload), snapshot.sequence
        self._models[key] = found
        if len(self._models) > self.cache_size:
            self._models.popitem(last=False)
        return found

    def _verify(self, snapshot: ModelSnapshot) -> ModelSnapshot:
        if not verify_snapshot(snapshot, self.keys):
            if not snapshot.signature:
                raise SignatureError(snapshot.model_id, "unsigned", "unsigned")
            raise SignatureError(snapshot.model_id, "bad_signature", "bad signature")
        return snapshot


class OnlineBackend(ModelBackend):
    """A River model from the learner's snapshots: the entity's own if any, else the shared one."""

    def __init__(self, uri: str, snapshots: SnapshotStore) -> None:
        super().__init__(uri)
        self.model_id = uri.removeprefix(ONLINE_PREFIX)
        if not self.model_id:
            raise UnknownModelError(uri, ONLINE_FORM)
        self.snapshots = snapshots

    async def load(self) -> None:
        """Nothing to load: snapshots arrive on their own topic."""

    async def unload(self) -> None:
        """Nothing to free: snapshots are shared by every online variant."""

    def predict(self, features: dict[str, FeatureValue], entity_id: str) -> Answer:
        """Ask the newest snapshot; no snapshot yet gives an empty answer, so labels can arrive
        and the learner can start (it learns from labeled predictions)."""
        own_id = f"{self.model_id}/{entity_id}"
        model_id, found = own_id, self.snapshots.model(own_id)
        if found is None:
            model_id, found = self.model_id, self.snapshots.model(self.model_id)
        if found is None:
            metrics.child(metrics.COLD_ONLINE_MODELS, self.model_id).inc()
            return Answer(self.model_id, COLD_VERSION, None, None)
        model, sequence = found
        try:
            if hasattr(model, "predict_proba_one"):
                proba = model.predict_proba_one(features)
                probabilities = {str(k): float(v) for k, v in proba.items()}
                output = max(proba, key=proba.get) if proba else None
            else:
                probabilities, output = None, model.predict_one(features)
        except Exception as exc:
            raise ModelError(self.uri, f"{type(exc).__name__}: {exc}") from exc
        return Answer(model_id, str(sequence), _plain(output), probabilities or None)


def backend_for(
    uri: str, tracking_uri: str, snapshots: SnapshotStore, v2: V2Options | None = None
) -> ModelBackend:
    """The backend a model URI asks for, by its scheme."""
    from shared.v2 import V2Backend, V2Options  # it builds on this module's interface

    check_model_uri(uri)
    if uri.startswith(ONLINE_PREFIX):
        return OnlineBackend(uri, snapshots)
    if uri.startswith(V2_PREFIXES):
        return V2Backend(uri, v2 or V2Options())
    return MlflowBackend(uri, tracking_uri)


def model_cache(
    own: ModelServingSettings, tracking_uri: str, snapshots: SnapshotStore
) -> ModelCache:
    """The model cache of a process that serves models (router, gateway), configured by `own`."""
    from shared.v2 import V2Options  # it builds on this module's interface

    options = V2Options(
        timeout_s=own.v2_timeout_s,
        max_concurrency=own.v2_max_concurrency,
        breaker_failures=own.v2_breaker_failures,
        breaker_reset_s=own.v2_breaker_reset_s,
    )
    return ModelCache(
        lambda uri: backend_for(uri, tracking_uri, snapshots, options),
        retry_seconds=own.model_refresh_seconds,
    )


class ModelCache:
    """One loaded backend per URI; a failed load is remembered for `retry_seconds` so a missing
    model does not cost a registry call per event."""

    def __init__(self, factory: Callable[[str], ModelBackend], retry_seconds: float) -> None:
        self.factory = factory
        self.retry_seconds = retry_seconds
        self._backends: dict[str, ModelBackend] = {}
        self._failures: dict[str, tuple[float, ModelError]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._backends)

    async def get(self, uri: str) -> ModelBackend:
        """The loaded backend for `uri`, loading it on first use."""
        backend = self._backends.get(uri)
        if backend is not None:
            return backend
        async with self._locks.setdefault(uri, asyncio.Lock()):
            if uri in self._backends:
                return self._backends[uri]
            failed = self._failures.get(uri)
            if failed is not None and time.monotonic() - failed[0] < self.retry_seconds:
                raise failed[1]
            try:
                backend = self.factory(uri)
                await backend.load()
            except ModelError as exc:
                self._failures[uri] = (time.monotonic(), exc)
                raise
            self._failures.pop(uri, None)
            self._backends[uri] = backend
            return backend

    async def refresh(self, in_use: set[str]) -> None:
        """Unload models no deployment uses; let the others pick up moved aliases."""
        for uri in [u for u in self._backends if u not in in_use]:
            await self._backends.pop(uri).unload()
        for backend in list(self._backends.values()):
            try:
                await backend.refresh()
            except ModelError as exc:
                log.warning("model refresh failed; keeping the loaded version", reason=str(exc))


def _raw_model(model: Any) -> Any:
    try:
        return model.get_raw_model()
    except NotImplementedError:
        return None


def _plain(value: Any) -> Label | None:
    """A numpy scalar as the plain Python value it holds."""
    return value.item() if hasattr(value, "item") else value
