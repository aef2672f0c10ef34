"""The feedback join's state machine: late, early, duplicate, expired and unknown feedback, and
variants whose predictions come after the label, with no broker."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime

import pytest

from services.feedback import logic
from services.feedback.logic import (
    DeadlineIndex,
    FeedbackPastExpiryError,
    Joiner,
    JoinPolicy,
    JoinState,
    Origin,
)
from shared.events import Feedback, Prediction, Provenance, VariantOutput, prediction_id_for

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
JOINER = Joiner(JoinPolicy(prediction_ttl_s=100, early_feedback_ttl_s=10, remember_s=50), "test")
ORIGIN = Origin(topic="feedback", partition=0, offset=7, key=b"e1", value=b"{}")
AT = Provenance(topic="predictions", partition=0, offset=3)


def prediction(
    event_id: str = "e1", variant: str = "champion", at: float = T0, version: str = "1"
) -> Prediction:
    outcome = VariantOutput(
        variant=variant,
        role="champion" if variant == "champion" else "shadow",
        served=variant == "champion",
        model_name=f"model-{variant}",
        model_version=version,
        output=True,
    )
    return Prediction(
        prediction_id=prediction_id_for(event_id, "fraud", outcome),
        event_id=event_id,
        entity_id="u1",
        stream="payments",
        deployment="fraud",
        outcome=outcome,
        features={"amount": 1.0},
        latency_ms=1.0,
        event_time=datetime.fromtimestamp(at, UTC),
    )


def feedback(label: bool = True) -> Feedback:
    return Feedback(event_id="e1", label=label, label_time=datetime.fromtimestamp(T0 + 30, UTC))


def test_late_feedback_joins_every_waiting_variant_once() -> None:
    state, _ = JOINER.on_prediction(None, prediction(), AT, T0)
    state, _ = JOINER.on_prediction(state, prediction(variant="shadow"), AT, T0 + 5)
    state, again = JOINER.on_prediction(state, prediction(variant="shadow"), AT, T0 + 5)
    state, outcome = JOINER.on_feedback(state, feedback(), ORIGIN, T0 + 99)

    assert again.labeled == []
    [labeled] = outcome.labeled
    assert [o.variant for o in labeled.outcomes] == ["champion", "shadow"]
    assert (labeled.label, labeled.feedback_delay_s) == (True, 30.0)
    assert state is not None and state.status == "labeled"


def test_early_feedback_waits_and_joins_each_variant_as_it_comes() -> None:
    state, _ = JOINER.on_feedback(None, feedback(), ORIGIN, T0)
    assert state is not None and state.status == "early"
    state, first = JOINER.on_prediction(state, prediction(), AT, T0 + 1)
    state, second = JOINER.on_prediction(state, prediction(variant="shadow"), AT, T0 + 2)
    state, repeat = JOINER.on_prediction(state, prediction(variant="shadow"), AT, T0 + 3)

    assert [[o.variant for o in r.outcomes] for r in first.labeled + second.labeled] == [
        ["champion"],
        ["shadow"],
    ]
    assert repeat.labeled == []


def test_duplicate_feedback_is_applied_once() -> None:
    state, _ = JOINER.on_prediction(None, prediction(), AT, T0)
    state, first = JOINER.on_feedback(state, feedback(True), ORIGIN, T0 + 1)
    state, second = JOINER.on_feedback(state, feedback(False), ORIGIN, T0 + 2)

    assert len(first.labeled) == 1
    assert (second.labeled, second.duplicate_feedback) == ([], 1)


@pytest.mark.parametrize("label_first", [False, True], ids=["pending", "early"])
def test_a_prediction_resent_by_a_router_replay_is_a_duplicate_in_every_state(
    label_first: bool,
) -> None:
    """A replayed router re-sends the same prediction (same id); a replay answered by a newer
    model version is the same variant too: one labeled record per (event, variant) either way."""
    original = prediction()
    state = None
    if label_first:
        state, _ = JOINER.on_feedback(state, feedback(), ORIGIN, T0)
    state, first = JOINER.on_prediction(state, original, AT, T0)
    resent = prediction()
    assert resent.prediction_id == original.prediction_id
    state, again = JOINER.on_prediction(state, resent, AT, T0 + 1)
    state, newer = JOINER.on_prediction(state, prediction(version="2"), AT, T0 + 2)
    if not label_first:
        state, first = JOINER.on_feedback(state, feedback(), ORIGIN, T0 + 3)
    state, after_label = JOINER.on_prediction(state, resent, AT, T0 + 4)

    assert [[o.variant for o in r.outcomes] for r in first.labeled] == [["champion"]]
    assert [o.model_version for o in first.labeled[0].outcomes] == ["1"]
    for duplicate in (again, newer, after_label):
        assert (duplicate.labeled, duplicate.expired, duplicate.duplicate_predictions) == (
            [],
            [],
            1,
        )
    _, expired = JOINER.expire(state, T0 + 1_000)
    assert expired.expired == []


def test_expired_predictions_are_counted_and_later_feedback_is_past_expiry() -> None:
    state, _ = JOINER.on_prediction(None, prediction(), AT, T0)
    state, outcome = JOINER.expire(state, T0 + 100)

    assert [p.outcome.model_name for p in outcome.expired] == ["model-champion"]
    assert state is not None and state.status == "expired"
    with pytest.raises(FeedbackPastExpiryError, match=r"feedback past expiry.*'e1'"):
        JOINER.on_feedback(state, feedback(), ORIGIN, T0 + 120)
    _, late_variant = JOINER.on_prediction(state, prediction(variant="shadow"), AT, T0 + 120)
    assert [p.outcome.variant for p in late_variant.expired] == ["shadow"]
    forgotten, _ = JOINER.expire(state, T0 + 150)
    assert forgotten is None


def test_feedback_for_an_unknown_event_is_dead_lettered_once_its_wait_is_over() -> None:
    state, _ = JOINER.on_feedback(None, feedback(), ORIGIN, T0)
    still, nothing = JOINER.expire(state, T0 + 9)
    gone, outcome = JOINER.expire(still, T0 + 10)

    assert nothing.dead_letters == []
    assert gone is None
    [letter] = outcome.dead_letters
    assert letter.reason.startswith("unknown event: no prediction for event 'e1'")
    assert (letter.source_topic, letter.offset, letter.value) == ("feedback", 7, b"{}")


def test_a_labeled_event_is_forgotten_after_its_memory_span() -> None:
    state, _ = JOINER.on_prediction(None, prediction(), AT, T0)
    state, _ = JOINER.on_feedback(state, feedback(), ORIGIN, T0)
    kept, _ = JOINER.expire(state, T0 + 149)
    gone, _ = JOINER.expire(state, T0 + 150)

    assert kept is state
    assert gone is None


def test_each_deployment_gets_its_own_labeled_record() -> None:
    other = prediction().model_copy(update={"deployment": "fraud-v2"})
    state, _ = JOINER.on_prediction(None, prediction(), AT, T0)
    state, _ = JOINER.on_prediction(state, other, AT, T0)
    _, outcome = JOINER.on_feedback(state, feedback(), ORIGIN, T0)

    assert sorted(r.deployment for r in outcome.labeled) == ["fraud", "fraud-v2"]


def test_the_state_survives_its_json_form() -> None:
    state, _ = JOINER.on_feedback(None, feedback(), ORIGIN, T0)
    assert state is not None
    assert JoinState.model_validate_json(state.model_dump_json()) == state


def test_each_labeled_record_names_the_message_that_completed_its_join() -> None:
    state, _ = JOINER.on_prediction(None, prediction(), AT, T0)
    state, by_feedback = JOINER.on_feedback(state, feedback(), ORIGIN, T0 + 1)
    late_at = Provenance(topic="predictions", partition=0, offset=9)
    _, by_late_variant = JOINER.on_prediction(state, prediction(variant="shadow"), late_at, T0 + 2)

    assert [r.provenance for r in by_feedback.labeled] == [ORIGIN.provenance]
    assert [r.provenance for r in by_late_variant.labeled] == [late_at]
    assert [r.late_variant for r in by_feedback.labeled + by_late_variant.labeled] == [False, True]


def test_the_deadline_index_yields_due_keys_earliest_first_and_once() -> None:
    index = DeadlineIndex()
    for key, deadline in ((b"a", 30.0), (b"b", 10.0), (b"c", 20.0), (b"a", 5.0)):
        index.add(key, deadline)

    assert list(index.due(4.0)) == []
    assert list(index.due(20.0)) == [b"a", b"b", b"c"], "a stale entry is a candidate too"
    assert list(index.due(20.0)) == []
    assert list(index.due(30.0)) == [b"a"]
    assert len(index) == 0


def test_the_deadline_index_agrees_with_its_doctest() -> None:
    assert doctest.testmod(logic).failed == 0
