"""Joining predictions and feedback by event id, in event time, without Kafka.

Each event id has at most one `JoinState` in the worker's table. Time is the partition's
watermark: the latest prediction event time seen on it (feedback carries no event time of its
own, and a label producer's clock says nothing about the stream's; only before the partition's
first prediction does a label time stand in). A state's `deadline` on that clock decides what
happens to it next:

- ``pending``: predictions waiting for feedback; at the deadline (event time + prediction TTL)
  they expire, are counted per model, and the event becomes ``expired``.
- ``early``: feedback waiting for its prediction; at the deadline (watermark on arrival + early
  TTL) it is dead-lettered as feedback for an unknown event.
- ``labeled``: joined; kept until event time + TTL + memory so that duplicate feedback is
  dropped and a variant whose prediction comes after the label is still joined, once.
- ``expired``: kept for the memory span so late feedback is dead-lettered as past expiry.

Every (event, deployment, variant) is emitted at most once: the router writes one prediction per
variant of every deployment of the stream, all keyed by event id, so they share a partition with
the feedback, and any of them may come after the label. A label joins one labeled record per
deployment (it is keyed by deployment downstream). A prediction for a variant the event already
had (a router replay after a crash re-sends its predictions with the same ids) is counted as a
duplicate and dropped, so a labeled record's identity is (event id, deployment variant).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.errors import DriftlineError
from shared.events import (
    DeadLetter,
    Feedback,
    LabeledPrediction,
    Prediction,
    Provenance,
    WireBytes,
)

Status = Literal["pending", "early", "labeled", "expired"]


class FeedbackPastExpiryError(DriftlineError):
    """Feedback came after its event's predictions had expired unlabeled."""

    code = "feedback_past_expiry"

    def __init__(self, event_id: str, deadline: float) -> None:
        self.event_id = event_id
        when = datetime.fromtimestamp(deadline, UTC).isoformat()
        super().__init__(
            f"feedback past expiry: the predictions of event {event_id!r} expired at {when}"
            " (event time); raise DRIFTLINE_FEEDBACK_PREDICTION_TTL_S to wait longer"
        )


class UnmatchedFeedbackError(DriftlineError):
    """Feedback waited for its event's prediction in vain (a wrong event id, or a lost event)."""

    code = "unknown_event"

    def __init__(self, event_id: str, waited_s: float) -> None:
        self.event_id = event_id
        super().__init__(
            f"unknown event: no prediction for event {event_id!r} came within {waited_s:g}s"
            " (event time) of its feedback"
        )


@dataclass(frozen=True, slots=True)
class JoinPolicy:
    """How long each kind of state lives, in event-time seconds (from `FeedbackSettings`)."""

    prediction_ttl_s: float
    early_feedback_ttl_s: float
    remember_s: float


class Origin(BaseModel):
    """Where a message came from, kept so it can be dead-lettered later with its original bytes."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    key: WireBytes | None = None
    value: WireBytes

    @property
    def provenance(self) -> Provenance:
        """The message as the provenance of what it completes."""
        return Provenance(topic=self.topic, partition=self.partition, offset=self.offset)


class JoinState(BaseModel):
    """What the joiner knows about one event id (the table's value)."""

    model_config = ConfigDict(frozen=True)

    status: Status
    partition: int
    """The partition whose watermark and sweeps this entry follows."""
    deadline: float
    """Watermark (epoch seconds) at which the state moves on (see the module docstring)."""
    predictions: list[Prediction] = []
    """Pending predictions (``pending``), one per deployment variant."""
    variants: list[str] = []
    """`variant_id` of the predictions already labeled (``labeled``) or counted as expired
    (``expired``)."""
    feedback: Feedback | None = None
    origin: Origin | None = None
    """The early feedback's message (``early``)."""


@dataclass
class Outcome:
    """What a step asks the worker to do besides storing the new state."""

    labeled: list[LabeledPrediction] = field(default_factory=list)
    expired: list[Prediction] = field(default_factory=list)
    """Predictions that expired without feedback (counted per model)."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicate_feedback: int = 0
    duplicate_predictions: int = 0
    """Predictions of a variant the event already had: a router replay re-sends each prediction
    with its id (`shared.events.prediction_id_for`), and the join applies each variant once."""

    def merge(self, other: Outcome) -> None:
        """Add another step's outcome to this one."""
        self.labeled += other.labeled
        self.expired += other.expired
        self.dead_letters += other.dead_letters
        self.duplicate_feedback += other.duplicate_feedback
        self.duplicate_predictions += other.duplicate_predictions


def label_predictions(
    predictions: list[Prediction],
    feedback: Feedback,
    provenance: Provenance,
    late_variant: bool = False,
) -> LabeledPrediction:
    """One labeled record for an event: every given variant's output beside the ground truth,
    made by the message at `provenance` (`late_variant`: a prediction that came after the event
    was labeled)."""
    first = predictions[0]
    return LabeledPrediction(
        event_id=first.event_id,
        entity_id=first.entity_id,
        stream=first.stream,
        deployment=first.deployment,
        features=first.features,
        outcomes=[p.outcome for p in predictions],
        label=feedback.label,
        event_time=first.event_time,
        label_time=feedback.label_time,
        feedback_delay_s=(feedback.label_time - first.event_time).total_seconds(),
        provenance=provenance,
        late_variant=late_variant,
    )


def variant_id(prediction: Prediction) -> str:
    """What is labeled at most once per event: a deployment's variant."""
    return f"{prediction.deployment}/{prediction.outcome.variant}"


class Joiner:
    """The join's state machine: each step takes an event's state and the partition's watermark
    and returns the new state (None: forget the event) and what to emit.

    Parameters
    ----------
    policy
        How long each kind of state lives.
    service
        Named in the dead letters it makes.
    """

    def __init__(self, policy: JoinPolicy, service: str) -> None:
        self.policy = policy
        self.service = service

    def expire(self, state: JoinState | None, watermark: float) -> tuple[JoinState | None, Outcome]:
        """Move `state` past every deadline the watermark has reached."""
        outcome = Outcome()
        while state is not None and state.deadline <= watermark:
            if state.status == "pending":
                outcome.expired += state.predictions
                state = JoinState(
                    status="expired",
                    partition=state.partition,
                    deadline=state.deadline + self.policy.remember_s,
                    variants=[variant_id(p) for p in state.predictions],
                )
            elif state.status == "early":
                assert state.feedback is not None and state.origin is not None
                error = UnmatchedFeedbackError(
                    state.feedback.event_id, self.policy.early_feedback_ttl_s
                )
                outcome.dead_letters.append(self._letter(state.origin, error))
                state = None
            else:
                state = None
        return state, outcome

    def on_prediction(
        self,
        state: JoinState | None,
        prediction: Prediction,
        provenance: Provenance,
        watermark: float,
    ) -> tuple[JoinState | None, Outcome]:
        """A variant's prediction (the message at `provenance`): wait for feedback, or join the
        feedback already here."""
        partition = provenance.partition
        state, outcome = self.expire(state, watermark)
        variant = variant_id(prediction)
        if state is None:
            deadline = prediction.event_time.timestamp() + self.policy.prediction_ttl_s
            state = JoinState(
                status="pending", partition=partition, deadline=deadline, predictions=[prediction]
            )
            new, more = self.expire(state, watermark)
            outcome.merge(more)
            return new, outcome
        if state.status == "pending":
            if variant in {variant_id(p) for p in state.predictions}:
                outcome.duplicate_predictions += 1
            else:
                state = state.model_copy(update={"predictions": [*state.predictions, prediction]})
            return state, outcome
        if state.status == "early":
            assert state.feedback is not None
            outcome.labeled.append(label_predictions([prediction], state.feedback, provenance))
            return self._labeled(prediction, state.feedback, [variant], partition), outcome
        if variant in state.variants:
            outcome.duplicate_predictions += 1
            return state, outcome
        if state.status == "labeled":
            assert state.feedback is not None
            late = label_predictions([prediction], state.feedback, provenance, late_variant=True)
            outcome.labeled.append(late)
        else:
            outcome.expired.append(prediction)
        return state.model_copy(update={"variants": [*state.variants, variant]}), outcome

    def on_feedback(
        self, state: JoinState | None, feedback: Feedback, origin: Origin, watermark: float
    ) -> tuple[JoinState | None, Outcome]:
        """Ground truth: join the waiting predictions, or wait for them.

        Raises `FeedbackPastExpiryError` when the predictions expired before it came.
        """
        state, outcome = self.expire(state, watermark)
        if state is None:
            deadline = watermark + self.policy.early_feedback_ttl_s
            early = JoinState(
                status="early",
                partition=origin.partition,
                deadline=deadline,
                feedback=feedback,
                origin=origin,
            )
            return early, outcome
        if state.status == "pending":
            by_deployment: dict[str, list[Prediction]] = {}
            for prediction in state.predictions:
                by_deployment.setdefault(prediction.deployment, []).append(prediction)
            outcome.labeled += [
                label_predictions(ps, feedback, origin.provenance) for ps in by_deployment.values()
            ]
            first = state.predictions[0]
            variants = [variant_id(p) for p in state.predictions]
            return self._labeled(first, feedback, variants, state.partition), outcome
        if state.status == "expired":
            raise FeedbackPastExpiryError(
                feedback.event_id, state.deadline - self.policy.remember_s
            )
        outcome.duplicate_feedback += 1
        return state, outcome

    def _labeled(
        self,
        prediction: Prediction,
        feedback: Feedback,
        variants: list[str],
        partition: int,
    ) -> JoinState:
        deadline = (
            prediction.event_time.timestamp()
            + self.policy.prediction_ttl_s
            + self.policy.remember_s
        )
        return JoinState(
            status="labeled",
            partition=partition,
            deadline=deadline,
            variants=variants,
            feedback=feedback,
        )

    def _letter(self, origin: Origin, error: DriftlineError) -> DeadLetter:
        return DeadLetter(
            reason=str(error),
            code=error.code,
            service=self.service,
            source_topic=origin.topic,
            partition=origin.partition,
            offset=origin.offset,
            key=origin.key,
            value=origin.value,
        )


class DeadlineIndex:
    """When the join states of one partition fall due, so that a sweep reads only the states
    whose deadline the watermark passed instead of decoding the whole table (which holds every
    event of the last hours: a sweep cost grew with the table, and the worker fell behind).

    A state written again is added again; the entries it leaves behind are stale, so `due`
    yields candidates that the caller checks against the table before acting on one.

    Examples
    --------
    >>> index = DeadlineIndex()
    >>> index.add(b"e1", 30.0); index.add(b"e2", 10.0); index.add(b"e1", 50.0)
    >>> list(index.due(40.0)), len(index)
    ([b'e2', b'e1'], 1)

    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, bytes]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, key: bytes, deadline: float) -> None:
        """Remember that the state of `key` falls due at `deadline` (watermark seconds)."""
        heapq.heappush(self._heap, (deadline, key))

    def due(self, watermark: float) -> Iterator[bytes]:
        """Take out, earliest first, every key whose deadline `watermark` has reached."""
        while self._heap and self._heap[0][0] <= watermark:
            yield heapq.heappop(self._heap)[1]
