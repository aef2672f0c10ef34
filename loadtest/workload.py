"""What the load generator sends and what the pipeline needs before it can answer: a declared
stream, deployments whose champion is an online River model, and that model's signed snapshot.

Feature values are a cheap deterministic function of the event number, so a run is reproducible
and the generator spends its time producing, not drawing random numbers.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass

import orjson
from river import compose, linear_model, preprocessing

from shared.events import (
    Deployment,
    FeatureSpec,
    ModelSnapshot,
    OnlineModelSpec,
    StreamSchema,
    Variant,
    WindowedAggregate,
    encode,
)
from shared.signing import KeyRing, sign_snapshot
from shared.topics import DEPLOYMENTS, MODEL_SNAPSHOTS, STREAMS, Topic

Record = tuple[bytes, bytes]
"""A Kafka record's (key, value)."""
MODEL_ID = "bench"
"""The online model every benchmark deployment's champion asks (per entity: its entities')."""


@dataclass(frozen=True)
class Workload:
    """The shape of the generated events."""

    run: str
    """Prefix of every event id, so two runs never share one."""
    stream: str = "bench"
    """Stream name; with `streams` > 1, event i belongs to ``<stream>-<i % streams>``."""
    streams: int = 1
    entities: int = 1000
    """Distinct entity ids (keys of ``events.raw`` and ``features``)."""
    features: int = 8
    """Numeric features per event, declared in the stream."""
    payload_bytes: int = 0
    """Pad each raw event with an undeclared field to at least this many bytes."""
    aggregate_minutes: int = 5
    """Window of the declared per-entity mean of the first feature (0: no aggregate)."""
    shift_at: int | None = None
    """From this event on, ``f2``'s mean moves from 0.5 to 0.75 (data drift) and the label rule
    flips (concept drift); None: one behaviour throughout."""

    def stream_of(self, i: int) -> str:
        """The stream event `i` belongs to."""
        return self.stream if self.streams == 1 else f"{self.stream}-{i % self.streams}"

    def stream_names(self) -> list[str]:
        """Every stream the workload sends on."""
        return [self.stream_of(i) for i in range(self.streams)]

    def entity_of(self, i: int) -> str:
        """The entity id of event `i`."""
        return f"entity-{i % self.entities}"

    def event_id(self, i: int) -> str:
        """The id of event `i`."""
        return f"{self.run}-{i}"

    def shifted(self, i: int) -> bool:
        """Whether event `i` comes after the workload's drift."""
        return self.shift_at is not None and i >= self.shift_at

    def values(self, i: int) -> dict[str, float]:
        """The feature values of event `i`, each in [0, 1)."""
        values = {
            f"f{j}": ((i + 1) * (2 * j + 3) * 2654435761 % 1000) / 1000
            for j in range(self.features)
        }
        if self.shifted(i) and "f2" in values:
            values["f2"] = 0.5 + values["f2"] / 2
        return values

    def label(self, i: int) -> bool:
        """Ground truth of event `i`: a linear rule the online model can learn (the opposite
        one after the drift)."""
        values = self.values(i)
        return (values["f0"] + values.get("f1", 0.5) > 1.0) != self.shifted(i)

    def raw_event(self, i: int, event_time: float | None = None) -> Record:
        """Event `i` for ``events.raw``, keyed by entity; `event_time` defaults to now."""
        data: dict[str, object] = dict(self.values(i))
        entity = self.entity_of(i)
        value = {
            "event_id": self.event_id(i),
            "stream": self.stream_of(i),
            "entity_id": entity,
            "event_time": time.time() if event_time is None else event_time,
            "data": data,
        }
        encoded = orjson.dumps(value)
        if len(encoded) < self.payload_bytes:
            data["padding"] = "x" * (self.payload_bytes - len(encoded) - 13)
            encoded = orjson.dumps(value)
        return entity.encode(), encoded

    def feature_event(self, i: int, event_time: float | None = None) -> Record:
        """Event `i` as ingestion would write it to ``features``, for router-only scenarios."""
        now = time.time()
        entity = self.entity_of(i)
        value = {
            "event_id": self.event_id(i),
            "stream": self.stream_of(i),
            "entity_id": entity,
            "event_time": now if event_time is None else event_time,
            "features": self.values(i),
            "ingested_at": now,
        }
        return entity.encode(), orjson.dumps(value)

    def feedback(self, i: int) -> Record:
        """Ground truth of event `i` for ``feedback``, keyed by its event id."""
        event_id = self.event_id(i)
        value = {"event_id": event_id, "label": self.label(i), "label_time": time.time()}
        return event_id.encode(), orjson.dumps(value)

    def schema(self, name: str) -> StreamSchema:
        """The declaration of one of the workload's streams."""
        aggregates = (
            [WindowedAggregate(field="f0", minutes=self.aggregate_minutes)]
            if self.aggregate_minutes
            else []
        )
        return StreamSchema(
            name=name,
            features=[FeatureSpec(name=f"f{j}", min=0.0, max=1.0) for j in range(self.features)],
            aggregates=aggregates,
        )


def deployment(name: str, stream: str, model_id: str, per_entity: bool = False) -> Deployment:
    """A deployment of `stream` whose champion is the online model `model_id`."""
    return Deployment(
        name=name,
        stream=stream,
        variants=[Variant(name="champion", role="champion", model_uri=f"online:{model_id}")],
        online_models=[
            OnlineModelSpec(
                model_id=model_id, model_type="logistic_regression", per_entity=per_entity
            )
        ],
    )


def trained_model(workload: Workload, samples: int = 200) -> compose.Pipeline:
    """A River scaler + logistic regression that has learned a few of the workload's events."""
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for i in range(samples):
        model.learn_one(workload.values(i), workload.label(i))
    return model


def snapshot(model_id: str, payload: bytes, keys: KeyRing) -> ModelSnapshot:
    """A signed snapshot of a pickled model, as the learner would publish it."""
    unsigned = ModelSnapshot(
        model_id=model_id,
        model_type="logistic_regression",
        sequence=1,
        n_learned=0,
        payload=payload,
    )
    return sign_snapshot(unsigned, keys)


def setup_records(
    workload: Workload,
    models: dict[str, str],
    keys: KeyRing,
    per_entity: bool = False,
    entity_snapshots: bool = False,
) -> dict[Topic, list[Record]]:
    """What must be on the topics of record before events flow: the workload's stream
    declarations, a deployment per entry of `models` (deployment name -> model id, one stream
    each, in order) and a trained, signed snapshot per model id (and per entity of `MODEL_ID`
    with `entity_snapshots`)."""
    streams = [(n.encode(), encode(workload.schema(n))) for n in workload.stream_names()]
    deployments = [
        (name.encode(), encode(deployment(name, stream, model_id, per_entity)))
        for (name, model_id), stream in zip(models.items(), workload.stream_names(), strict=True)
    ]
    model_ids = list(dict.fromkeys(models.values()))
    if entity_snapshots:
        model_ids += [f"{MODEL_ID}/{workload.entity_of(i)}" for i in range(workload.entities)]
    payload = pickle.dumps(trained_model(workload))
    snapshots = [(m.encode(), encode(snapshot(m, payload, keys))) for m in model_ids]
    return {STREAMS: streams, DEPLOYMENTS: deployments, MODEL_SNAPSHOTS: snapshots}
