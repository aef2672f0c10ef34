"""A challenger's trial: which labeled outcomes count, per variant and tier, from the
challenger's deployment onward, and the decision record of a look."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from services.drift.trials import Trial
from shared.events import Label, LabeledPrediction, VariantOutput, VariantRole
from shared.promotion import Action, Decision

T = datetime(2026, 1, 1, tzinfo=UTC)


def _outcome(variant: str, role: VariantRole, version: str, output: Label | None) -> VariantOutput:
    return VariantOutput(
        variant=variant,
        role=role,
        served=role != "shadow",
        model_name="fraud",
        model_version=version,
        output=output,
    )


def _labeled(label: Label, *outcomes: VariantOutput, plan: str = "basic") -> LabeledPrediction:
    return LabeledPrediction(
        event_id="e",
        entity_id="u",
        stream="payments",
        deployment="fraud",
        features={"amount": 1.0, "plan": plan},
        outcomes=list(outcomes),
        label=label,
        event_time=T,
        label_time=T,
        feedback_delay_s=0.0,
    )


def champion(output: Label | None, version: str = "1") -> VariantOutput:
    return _outcome("champion", "champion", version, output)


def shadow(output: Label | None, version: str = "2") -> VariantOutput:
    return _outcome("challenger", "shadow", version, output)


def canary(output: Label | None, version: str = "2") -> VariantOutput:
    return _outcome("challenger", "canary", version, output)


def _trial() -> Trial:
    return Trial("fraud", "fraud", "challenger", "2")


def _at(label: Label, minute: int, *outcomes: VariantOutput) -> LabeledPrediction:
    return _labeled(label, *outcomes).model_copy(
        update={"event_time": T + timedelta(minutes=minute)}
    )


def _counts(trial: Trial) -> tuple[int, int, int, int]:
    champion, challenger = trial.champion.overall, trial.challenger.overall
    return champion.errors, champion.total, challenger.errors, challenger.total


def test_a_shadow_counts_from_its_first_answer_on_and_looks_at_its_own_outcomes() -> None:
    trial = _trial()
    assert not trial.count(_at(1, 0, champion(1)), None), "before the shadow was deployed"
    assert trial.count(_at(1, 1, champion(0), shadow(1)), None)
    assert trial.started_at == T + timedelta(minutes=1)
    assert not trial.count(_at(1, 0, champion(0)), None), "an event from before its deployment"
    assert not trial.count(_at(0, 2, champion(0)), None), "champion counted, no challenger"
    assert trial.count(_at(0, 2, shadow(1)), None), "the same event's shadow, labeled apart"
    assert _counts(trial) == (1, 2, 1, 2)
    assert trial.champion_version == "1"


def test_an_older_challenger_answer_from_another_partition_still_counts() -> None:
    trial = _trial()
    assert trial.count(_at(1, 5, champion(1), shadow(1)), None)
    assert trial.count(_at(0, 3, champion(0), shadow(1)), None), "older, read after"
    assert trial.started_at == T + timedelta(minutes=3)
    assert not trial.count(_at(1, 4, champion(1)), None)
    assert _counts(trial) == (0, 3, 1, 2)


def test_a_canary_and_the_champions_other_entities_count_alike() -> None:
    trial = _trial()
    assert not trial.count(_at(1, 0, champion(1)), None), "before the canary's first answer"
    assert trial.count(_at(1, 1, canary(1)), None)
    assert not trial.count(_at(1, 2, champion(0)), None)
    assert not trial.count(_at(0, 3, champion(0)), None)
    assert _counts(trial) == (1, 2, 0, 1)


def test_other_versions_cold_answers_and_regression_labels_are_not_evidence() -> None:
    trial = _trial()
    assert not trial.count(_labeled(1, champion(1), shadow(1, version="3")), None)
    assert not trial.count(_labeled(1.5, champion(1.0), shadow(1.5)), None)
    assert not trial.count(_labeled(1, champion(None), shadow(None)), None)
    assert trial.started_at is None
    assert trial.count(_labeled(1, champion(None), shadow(1)), None)
    assert not trial.count(_labeled(1, champion(1, version="2"), shadow(1)), None), "promoted"
    assert _counts(trial) == (0, 0, 0, 1)


def test_outcomes_are_counted_in_their_tier() -> None:
    trial = _trial()
    trial.count(_labeled(1, champion(0), shadow(1), plan="premium"), "plan")
    trial.count(_labeled(1, champion(1), shadow(0), plan="basic"), "plan")
    assert {t: c.errors for t, c in trial.champion.tiers.items()} == {"premium": 1, "basic": 0}
    assert {t: c.errors for t, c in trial.challenger.tiers.items()} == {"premium": 0, "basic": 1}


def test_a_redelivered_message_is_seen_once_per_partition() -> None:
    trial = _trial()
    assert not trial.already_seen("labeled[0]", 5)
    assert trial.already_seen("labeled[0]", 5)
    assert trial.already_seen("labeled[0]", 4)
    assert not trial.already_seen("labeled[1]", 0)


def _decision(action: Action) -> Decision:
    return Decision(action, "because", 0.3, 0.1, 200, 200, math.inf, math.nan)


def test_nothing_counts_once_settled_and_a_wait_settles_nothing() -> None:
    trial = _trial()
    assert not trial.settle(_decision("wait"))
    assert trial.count(_labeled(1, champion(0), shadow(1)), None)
    assert trial.settle(_decision("rollback"))
    assert (trial.decided, trial.reason, trial.executed) == ("rollback", "because", False)
    assert not trial.count(_labeled(1, champion(0), shadow(1)), None)


def test_the_decision_record_carries_the_numbers_and_no_infinities() -> None:
    trial = _trial()
    trial.count(_labeled(1, champion(0), shadow(1)), None)
    record = trial.decision_event(_decision("promote"))
    assert (record.deployment, record.model_name, record.champion_version) == (
        "fraud",
        "fraud",
        "1",
    )
    assert (record.challenger_version, record.challenger_variant) == ("2", "challenger")
    assert (record.action, record.reason, record.decided_by) == ("promote", "because", "policy")
    assert (record.champion_error, record.challenger_error) == (0.3, 0.1)
    assert (record.champion_samples, record.challenger_samples) == (200, 200)
    assert record.z is None and record.p_value is None


def test_a_challenger_on_another_backend_counts_a_champion_of_the_same_version_string() -> None:
    trial = Trial("fraud", "fraud-v2", "challenger", "1", swapped=True)
    v2 = _outcome("challenger", "canary", "1", 1).model_copy(update={"model_name": "fraud-v2"})
    assert trial.count(_at(1, 0, v2), None)
    assert not trial.count(_at(1, 1, champion(0, version="1")), None), "champion, no challenger"
    assert _counts(trial) == (1, 1, 0, 1), "MLflow's version 1 is not the endpoint's 1"
