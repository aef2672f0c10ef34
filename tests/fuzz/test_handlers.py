"""Each service's pure per-event logic fed decoded hostile records: only declared errors
(`DriftlineError`) escape, and the state it keeps stays finite and readable."""

from __future__ import annotations

import asyncio
import math
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.drift.detectors import Detector
from services.drift.logic import AlertGate, Monitor, error_of, feature_subject, feature_values
from services.feedback.logic import Joiner, JoinPolicy, JoinState, Origin
from services.ingestion.logic import (
    bucket_key,
    event_timestamp,
    ingest_event,
)
from services.ingestion.state import PartitionState
from services.learner.logic import OnlineLearner, learner_for, training_examples
from shared.backends import Answer, ModelBackend
from shared.errors import DriftlineError
from shared.events import (
    Deployment,
    Event,
    FeatureEvent,
    Feedback,
    LabeledPrediction,
    OnlineModelSpec,
    Prediction,
    Provenance,
    RawEvent,
    StreamSchema,
    decode,
    encode,
)
from shared.routing import DeploymentIndex, answer_calls, plan_calls
from shared.validation import validate_features
from tests.fuzz.strategies import HOSTILE_NUMBERS, JSON_VALUES, mutated, schema_shaped
from tests.support.samples import AT, SAMPLES

pytestmark = pytest.mark.fuzz


def hostile(schema: type[Event]) -> st.SearchStrategy[bytes]:
    """Mutated and schema-shaped records of `schema` on the wire."""
    return st.one_of(mutated(SAMPLES[schema]), schema_shaped(SAMPLES[schema]))


def declared(schema: type[Event], data: bytes) -> Any:
    """The decoded record, or None when it is refused with a declared error."""
    try:
        return decode(schema, data, "fuzz")
    except DriftlineError:
        return None


def finite(*numbers: float) -> bool:
    return all(math.isfinite(n) for n in numbers)


@given(
    raws=st.lists(hostile(RawEvent), min_size=1, max_size=6),
    schema=st.one_of(st.just(encode(SAMPLES[StreamSchema])), schema_shaped(SAMPLES[StreamSchema])),
)
def test_ingestion(raws: list[bytes], schema: bytes) -> None:
    """Validation, event time and windows: any refusal is declared, a refused event leaves no
    trace (not seen, not counted), every window stays finite."""
    declaration = declared(StreamSchema, schema)
    if declaration is None:
        return
    state = PartitionState(0, dedup_window_s=600, bucket_s=60, horizon_s=3600)
    now = AT.timestamp()
    for offset, data in enumerate(raws):
        raw = declared(RawEvent, data)
        if raw is None:
            continue
        try:
            features = validate_features(raw, declaration)
            stamp = event_timestamp(raw, now, max_ahead_s=300)
            built = ingest_event(raw, declaration, features, stamp, offset, state, "fuzz")
        except DriftlineError:
            assert state.seal() is None, "a refused event changed the state"
            continue
        if built is not None:
            assert decode(FeatureEvent, encode(built), "fuzz") == built
        state.seal()
        for spec in declaration.aggregates:
            key = bucket_key(raw.stream, raw.entity_id, spec.field)
            assert finite(*state.window(key, stamp, spec.minutes))


JOINER = Joiner(JoinPolicy(prediction_ttl_s=100, early_feedback_ttl_s=10, remember_s=50), "fuzz")
JOINED_AT = Provenance(topic="predictions", partition=0, offset=0)


@given(
    steps=st.lists(
        st.tuples(st.booleans(), st.one_of(hostile(Prediction), hostile(Feedback))),
        min_size=1,
        max_size=8,
    )
)
def test_feedback_join(steps: list[tuple[bool, bytes]]) -> None:
    """Every state the join stores reads back from its JSON, so a sweep can always read it."""
    state: JoinState | None = None
    watermark = -math.inf
    for is_prediction, data in steps:
        try:
            if is_prediction and (prediction := declared(Prediction, data)) is not None:
                watermark = max(watermark, prediction.event_time.timestamp())
                state, _ = JOINER.on_prediction(state, prediction, JOINED_AT, watermark)
            elif (feedback := declared(Feedback, data)) is not None:
                origin = Origin(topic="feedback", partition=0, offset=0, value=data)
                clock = watermark if watermark > -math.inf else feedback.label_time.timestamp()
                state, _ = JOINER.on_feedback(state, feedback, origin, clock)
        except DriftlineError as exc:
            assert str(exc)
        if state is not None:
            assert JoinState.model_validate_json(state.model_dump_json()) == state


@given(records=st.lists(st.one_of(hostile(FeatureEvent), hostile(LabeledPrediction)), max_size=8))
def test_drift_detectors(records: list[bytes]) -> None:
    """Feature values and regression errors of accepted records keep every detector finite."""
    gate = AlertGate(cooldown_s=0, escalate_after=3, escalate_within_s=60)
    values = Monitor(
        Detector.from_setting("f", {"kind": "adwin"}, accepts=("value",)),
        gate,
        feature_subject("payments", "amount"),
        "fuzz",
    )
    for offset, data in enumerate(records):
        event = declared(FeatureEvent, data)
        labeled = declared(LabeledPrediction, data)
        try:
            if event is not None:
                for value in feature_values(event).values():
                    if isinstance(value, float):
                        values.update(value, event.event_time, 0, offset)
            elif labeled is not None and isinstance(labeled.label, int | float):
                for outcome in labeled.outcomes:
                    if outcome.output is not None:
                        error = error_of(outcome, float(labeled.label), "regression")
                        values.update(error, labeled.event_time, 0, offset)
        except DriftlineError as exc:
            assert str(exc)
    stats = pickle.loads(pickle.dumps(values))._stats()
    assert finite(*stats.values())


LEARNER_DEPLOYMENT = Deployment.model_validate(
    SAMPLES[Deployment].model_dump()
    | {
        "online_models": [
            OnlineModelSpec(model_id="reg", model_type="linear_regression", task="regression"),
            OnlineModelSpec(model_id="cls", model_type="logistic_regression"),
        ]
    }
)


@given(records=st.lists(hostile(LabeledPrediction), min_size=1, max_size=6))
def test_learner(records: list[bytes]) -> None:
    """Training examples and predict-then-learn: declared refusals, finite metrics."""
    learners: dict[str, OnlineLearner] = {}
    for offset, data in enumerate(records):
        labeled = declared(LabeledPrediction, data)
        if labeled is None:
            continue
        try:
            examples = training_examples(labeled, LEARNER_DEPLOYMENT, "labeled", 0, offset)
            for example in examples:
                learner = learner_for(learners.get(example.model_key), example.spec, 50)
                learners[example.model_key] = learner
                learner.learn(example)
        except DriftlineError as exc:
            assert str(exc)
    for learner in learners.values():
        assert finite(*learner.metric_values().values())


class Hostile(ModelBackend):
    """Answers whatever the test draws."""

    def __init__(self, uri: str, answers: list[tuple[Any, Any]]) -> None:
        super().__init__(uri)
        self.answers = answers

    async def load(self) -> None:
        """Nothing to load."""

    async def unload(self) -> None:
        """Nothing to free."""

    def predict(self, features: dict[str, Any], entity_id: str) -> Answer:
        output, probabilities = self.answers.pop() if self.answers else (None, None)
        return Answer(self.uri, "1", output, probabilities)


@given(
    events=st.lists(hostile(FeatureEvent), min_size=1, max_size=4),
    answers=st.lists(
        st.tuples(
            st.one_of(HOSTILE_NUMBERS, JSON_VALUES),
            st.one_of(st.none(), st.dictionaries(st.text(max_size=3), HOSTILE_NUMBERS)),
        ),
        max_size=8,
    ),
)
def test_router(events: list[bytes], answers: list[tuple[Any, Any]]) -> None:
    """Whatever a model answers, the batch goes on: the event's variant fails with a declared
    `ModelError`, and every prediction made reads back from its wire form."""
    index = DeploymentIndex.empty()
    deployment = SAMPLES[Deployment]
    assert isinstance(deployment, Deployment)
    index.apply(deployment.name, deployment)
    decoded = [(i, e) for i, data in enumerate(events) if (e := declared(FeatureEvent, data))]
    calls, _ = plan_calls(decoded, index)
    backends = {uri: Hostile(uri, list(answers)) for uri in index.model_uris()}
    predictions, failures = asyncio.run(answer_calls(calls, backends))
    for prediction in predictions:
        assert decode(Prediction, encode(prediction), "fuzz") == prediction
    assert all(isinstance(error, DriftlineError) for f in failures.values() for *_, error in f)
