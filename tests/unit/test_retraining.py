"""Retraining's pure parts: which alerts it acts on, which model it joins, the frame it trains on,
the honest holdout score, the deployment it publishes, and the webhook job's answers."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from datetime import UTC, datetime

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LinearRegression, LogisticRegression
from structlog.testing import CapturingLogger

import services.tools.retrain_job
import shared.retraining
from services.processes import free_port
from services.tools.retrain_job import RetrainJob
from shared.errors import DriftlineError
from shared.events import Deployment, DriftAlert, Variant, alert_id_for, encode
from shared.registry import UnsearchableError, filter_value
from shared.retraining import (
    CHALLENGER,
    HOLDOUT_SHARE,
    EarlierRetrain,
    NotEnoughLabelsError,
    NotRetrainableError,
    RetrainResult,
    build_frame,
    check_retrainable,
    fit_and_evaluate,
    needs_redeploy,
    one_per_event,
    registered_model_name,
    with_challenger,
)
from shared.settings import DriftlineSettings, RetrainSettings
from shared.trainers import TrainerNotAllowedError, gradient_boosting, load_trainer
from shared.webhooks import WebhookSender, signed_headers
from tests.support.retraining import concept_alert, labeled, loans_deployment
from tests.support.webhook_server import WebhookReceiver

OFFSETS = {"predictions.labeled": {0: 5}}


def test_a_concept_drift_alert_with_window_and_deployment_is_retrainable() -> None:
    alert = concept_alert(OFFSETS, start=1000.0)
    assert check_retrainable(alert) == alert.window


@pytest.mark.parametrize(
    ("alert", "reason"),
    [
        (concept_alert(OFFSETS, 1000.0, kind="data"), "only concept-drift alerts"),
        (concept_alert(OFFSETS, 1000.0, level="warning"), "its level is 'warning'"),
        (concept_alert(OFFSETS, 1000.0, deployment=None), "names no deployment"),
        (concept_alert(OFFSETS, 1000.0).model_copy(update={"window": None}), "no data window"),
    ],
)
def test_other_alerts_are_refused_with_the_reason(alert: object, reason: str) -> None:
    with pytest.raises(NotRetrainableError) as caught:
        check_retrainable(alert)  # type: ignore[arg-type]
    assert reason in caught.value.reason
    assert str(caught.value).startswith("alert 'alert-1' cannot be retrained on: ")


def test_the_new_version_joins_the_named_model_or_the_champions() -> None:
    assert registered_model_name(loans_deployment()) == "loans"
    assert registered_model_name(loans_deployment(model_name="loans-v2")) == "loans-v2"
    pinned = loans_deployment().model_copy(
        update={"variants": [Variant(name="c", role="champion", model_uri="models:/credit/4")]}
    )
    assert registered_model_name(pinned) == "credit"
    online = loans_deployment().model_copy(
        update={"variants": [Variant(name="c", role="champion", model_uri="online:loans-lr")]}
    )
    with pytest.raises(DriftlineError, match=r"set retrain\.model_name"):
        registered_model_name(online)


def test_the_frame_keeps_numbers_and_flags_every_row_has_in_row_order() -> None:
    rows = [labeled(i, x=float(i), label=i > 1, at=1000.0 + i) for i in range(4)]
    rows[2] = rows[2].model_copy(update={"features": {**rows[2].features, "extra": 1.0}})
    features, labels = build_frame(rows)
    assert list(features.columns) == ["flag", "x"]
    assert features.dtypes.tolist() == [np.float64, np.float64]
    assert features["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert features["flag"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert labels.tolist() == [False, False, True, True]


def test_an_event_labeled_once_per_variant_is_one_training_row() -> None:
    """The feedback join writes a labeled record per answering variant (champion, shadows)."""
    first, shadow, other = (labeled(1, 0.5, True, 1000.0), labeled(1, 0.5, True, 1000.0),
                            labeled(2, 0.7, False, 1001.0))  # fmt: skip
    found = [(0, 12, shadow), (0, 10, first), (1, 3, other)]
    rows = one_per_event(found)
    assert [row.event_id for row in rows] == ["ev-1", "ev-2"]
    assert rows[0] is first


def _logistic(features: pd.DataFrame, labels: pd.Series) -> LogisticRegression:
    return LogisticRegression().fit(features, labels)


def test_the_holdout_is_the_windows_tail_so_a_late_concept_flip_shows_in_the_score() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    split = len(x) - math.floor(len(x) * HOLDOUT_SHARE)
    labels = pd.Series(np.where(np.arange(len(x)) < split, x > 0, x <= 0))
    features = pd.DataFrame({"x": x})
    model, metrics = fit_and_evaluate(_logistic, features, labels)
    on_head = _logistic(features.iloc[:split], labels.iloc[:split])
    expected = float(np.mean(on_head.predict(features.iloc[split:]) == labels.iloc[split:]))
    assert metrics["holdout_rows"] == len(x) - split == 100
    assert metrics["fit_rows"] == len(x)
    assert metrics["holdout_accuracy"] == pytest.approx(expected)
    assert metrics["holdout_accuracy"] < 0.1, "a head-fit model must fail on the flipped tail"
    assert metrics["holdout_error_rate"] == pytest.approx(1 - expected)
    assert model.n_features_in_ == 1


def test_regressors_are_scored_by_mean_absolute_error_and_tiny_windows_not_at_all() -> None:
    x = np.arange(20, dtype=float)
    features, labels = pd.DataFrame({"x": x}), pd.Series(2 * x + 1)
    _, metrics = fit_and_evaluate(lambda f, y: LinearRegression().fit(f, y), features, labels)
    assert metrics["holdout_mae"] == pytest.approx(0.0, abs=1e-9)
    _, tiny = fit_and_evaluate(_logistic, features.head(4), (labels.head(4) > 3))
    assert tiny == {"fit_rows": 4.0, "holdout_rows": 0.0}


def test_the_challenger_joins_as_configured_and_replaces_earlier_ones() -> None:
    shadowed = with_challenger(loans_deployment(), "loans", "2")
    assert [(v.name, v.role, v.model_uri, v.weight) for v in shadowed.variants] == [
        ("champion", "champion", "models:/loans@champion", 0.0),
        (CHALLENGER, "shadow", "models:/loans/2", 0.0),
    ]
    canary = loans_deployment(deploy_as="canary", canary_weight=0.25)
    canary = canary.model_copy(
        update={
            "variants": [
                *canary.variants,
                Variant(name="manual", role="canary", model_uri="models:/loans/1", weight=0.1),
                Variant(name="online", role="shadow", model_uri="online:loans-lr"),
                Variant(name="other", role="shadow", model_uri="models:/credit@champion"),
            ]
        }
    )
    again = with_challenger(with_challenger(canary, "loans", "2"), "loans", "3")
    assert [(v.name, v.role, v.model_uri, v.weight) for v in again.variants] == [
        ("champion", "champion", "models:/loans@champion", 0.0),
        ("online", "shadow", "online:loans-lr", 0.0),
        ("other", "shadow", "models:/credit@champion", 0.0),
        (CHALLENGER, "canary", "models:/loans/3", 0.25),
    ]
    assert again.updated_at >= canary.updated_at


def test_a_challenger_canary_that_overflows_the_traffic_is_a_clear_error() -> None:
    full = loans_deployment(deploy_as="canary", canary_weight=0.5).model_copy(
        update={
            "variants": [
                *loans_deployment().variants,
                Variant(name="canary", role="canary", model_uri="models:/credit/1", weight=0.8),
            ]
        }
    )
    with pytest.raises(DriftlineError, match=r"challenger: .*canary weights add up"):
        with_challenger(full, "loans", "2")


def _earlier(aliases: dict[str, str], rejected: bool = False) -> EarlierRetrain:
    return EarlierRetrain("2", params={}, metrics={}, aliases=aliases, rejected=rejected)


def test_an_earlier_version_is_redeployed_only_when_lost_and_still_current() -> None:
    deployment = loans_deployment()
    assert needs_redeploy(deployment, "loans", _earlier({"champion": "1"}))
    assert needs_redeploy(deployment, "loans", _earlier({"champion": "1", CHALLENGER: "2"}))
    assert not needs_redeploy(deployment, "loans", _earlier({"champion": "2"}))
    assert not needs_redeploy(deployment, "loans", _earlier({"champion": "1", CHALLENGER: "3"}))
    assert not needs_redeploy(deployment, "loans", _earlier({"champion": "1"}, rejected=True))
    served = with_challenger(deployment, "loans", "2")
    assert not needs_redeploy(served, "loans", _earlier({"champion": "1", CHALLENGER: "2"}))


def test_not_enough_labels_says_how_many_are_there_needed_and_since_when() -> None:
    since = datetime(2026, 11, 28, 12, 0, 5, tzinfo=UTC)
    error = NotEnoughLabelsError("alert-1", "loans", have=120, need=500, since=since)
    assert str(error) == (
        "not enough labels to retrain 'loans' on alert 'alert-1': 120 labeled events since "
        "2026-11-28T12:00:05+00:00, 500 needed (retrain.min_samples); retry when more labels "
        "have arrived"
    )
    assert (error.have, error.need, error.since) == (120, 500, since)
    assert (error.exit_code, NotRetrainableError("a", "b").exit_code) == (3, 2)


def test_a_result_survives_its_json_for_ci() -> None:
    alert = concept_alert(OFFSETS, 1000.0)
    assert alert.window is not None
    result = RetrainResult(
        "alert-1", "loans", "credit", "4", 512, alert.window, {0: 10}, {0: 600},
        {"holdout_accuracy": 0.93}, new=True, deployed=True,
    )  # fmt: skip
    assert RetrainResult.from_json(result.to_json()) == result


def _signed(body: bytes, settings: DriftlineSettings, at: float | None = None) -> dict[str, str]:
    """Headers the drift service would send with `body` (now, unless `at` says when)."""
    sent_at = time.time() if at is None else at
    return signed_headers("alert-1", body, settings.webhook_hmac_key, sent_at)


async def _post(job: RetrainJob, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    async with TestClient(TestServer(job.web_app())) as client:
        response = await client.post("/retrain", data=body, headers=headers)
        return response.status, await response.json()


async def test_the_job_answers_401_400_ignores_other_alerts_and_202_once_per_alert() -> None:
    common = DriftlineSettings()
    job = RetrainJob(common, RetrainSettings())
    good = encode(concept_alert(OFFSETS, 1000.0))
    assert await _post(job, good, {}) == (
        401,
        {
            "error": "webhook refused: missing header webhook-id, webhook-timestamp, "
            "webhook-signature"
        },
    )
    assert (await _post(job, good, _signed(good + b" ", common)))[0] == 401
    stale = await _post(job, good, _signed(good, common, at=time.time() - 301))
    assert stale[0] == 401 and "outside the tolerance of 300 s" in stale[1]["error"]
    assert (await _post(job, b"{}", _signed(b"{}", common)))[0] == 400
    data = encode(concept_alert(OFFSETS, 1000.0, kind="data", alert_id="data-1"))
    status, answer = await _post(job, data, _signed(data, common))
    assert (status, answer["alert_id"], answer["status"]) == (200, "data-1", "ignored")
    assert "only concept-drift alerts" in answer["reason"]
    for _ in range(2):
        assert await _post(job, good, _signed(good, common)) == (
            202,
            {"alert_id": "alert-1", "status": "accepted"},
        )
    async with TestClient(TestServer(job.web_app())) as client:
        health = await (await client.get("/health")).json()
    assert health == {"status": "ok", "pending": 1}, "a repeated post is not queued again"


async def test_a_captured_post_replayed_past_the_tolerance_is_refused() -> None:
    """A post the drift service really sent, captured on the way and replayed to the job: within
    the tolerance it is the same delivery again (same id); past it, 401."""
    common = DriftlineSettings(webhook_tolerance_s=1)
    own = RetrainSettings(web_port=free_port())
    job = RetrainJob(common, own)
    body = encode(concept_alert(OFFSETS, 1000.0, kind="data", alert_id="data-1"))
    await job.start()
    try:
        async with WebhookReceiver(keys=common.webhook_keys) as wire:
            sender = WebhookSender([wire.url("/retrain")], common.webhook_hmac_key)
            await sender.start()
            failed = await sender.deliver("data:pay:amount", body, "data-1")
            [captured] = wire.on("/retrain")
            await sender.stop()
        url = f"http://127.0.0.1:{own.web_port}/retrain"
        async with httpx.AsyncClient() as http:
            at_once = await http.post(url, content=captured.body, headers=captured.headers)
            await asyncio.sleep(2.5)
            later = await http.post(url, content=captured.body, headers=captured.headers)
    finally:
        await job.stop()

    assert (at_once.status_code, at_once.json()["status"]) == (200, "ignored")
    assert later.status_code == 401
    assert "outside the tolerance of 1 s (a replay, or a clock is wrong)" in later.json()["error"]
    assert not failed


async def test_the_job_answers_400_to_an_alert_whose_time_lies_outside_utc() -> None:
    """A signed alert whose time text cannot be held in UTC is a bad request, not a crash."""
    common = DriftlineSettings()
    job = RetrainJob(common, RetrainSettings())
    alert = orjson.loads(encode(concept_alert(OFFSETS, 1000.0)))
    alert["event_time"] = "0001-01-01T00:00:00+14:00"
    body = orjson.dumps(alert)
    status, answer = await _post(job, body, _signed(body, common))
    assert status == 400
    assert "event_time" in answer["error"] and "outside years 1 to 9999" in answer["error"]


async def test_the_job_retrains_once_on_an_alert_delivered_again_after_it_finished(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A drift worker replayed after a crash posts the same alert (same id) again: the job
    answers that it is done and does not retrain (nor redeploy) a second time."""
    common = DriftlineSettings()
    calls: list[str] = []
    done = asyncio.Event()

    async def retrain(settings: DriftlineSettings, alert: DriftAlert) -> RetrainResult:
        calls.append(alert.alert_id)
        done.set()
        assert alert.window is not None
        return RetrainResult(
            alert.alert_id, "loans", "credit", "4", 512, alert.window, {0: 10}, {0: 600},
            {}, new=True, deployed=True,
        )  # fmt: skip

    monkeypatch.setattr(services.tools.retrain_job, "retrain", retrain)
    job = RetrainJob(common, RetrainSettings(web_port=free_port()))
    body = encode(concept_alert(OFFSETS, 1000.0))
    retrained = {"outcome": "retrained"}
    counted = REGISTRY.get_sample_value("driftline_retrain_attempts_total", retrained) or 0
    await job.start()
    try:
        first = await _post(job, body, _signed(body, common))
        await asyncio.wait_for(done.wait(), 10)
        assert job.pending == 0, "finished as soon as retrain returned"
        again = await _post(job, body, _signed(body, common))
        await asyncio.sleep(0.1)
        async with TestClient(TestServer(job.web_app())) as client:
            exposed = await (await client.get("/metrics")).text()
    finally:
        await job.stop()

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposed)
        for s in family.samples
    }
    outcome = (("outcome", "retrained"),)
    assert samples[("driftline_retrain_attempts_total", outcome)] == counted + 1, "once"
    assert samples[("driftline_retrain_pending", ())] == 0
    assert any(name == "driftline_build_info" and ("service", "retrain") in labels
               for name, labels in samples)  # fmt: skip

    assert first == (202, {"alert_id": "alert-1", "status": "accepted"})
    assert again == (
        200,
        {"alert_id": "alert-1", "status": "done", "outcome": "retrained: version 4"},
    )
    assert calls == ["alert-1"]


@pytest.mark.parametrize(
    "value",
    ["loans' and name != '", 'say "hi"', "back\\slash", "tick`", "new\nline", "", "x" * 257],
)
def test_a_value_that_mlflow_filters_cannot_hold_safely_is_refused(value: str) -> None:
    with pytest.raises(UnsearchableError, match=r"model name .* cannot be searched for in MLflow"):
        filter_value("model name", value)


def test_names_and_ids_are_quoted_into_filters() -> None:
    alert_id = alert_id_for("concept:loans:1", "loans", "DDM", "drift", 12)
    assert filter_value("alert id", alert_id) == f"'{alert_id}'"
    assert filter_value("model name", "driftline-demo_loans v2.1") == "'driftline-demo_loans v2.1'"


def test_only_allowed_trainers_are_loaded_and_others_are_never_imported() -> None:
    allowed = DriftlineSettings().allowed_trainers
    assert load_trainer("shared.trainers:gradient_boosting", allowed) is gradient_boosting
    sys.modules.pop("this", None)
    with pytest.raises(TrainerNotAllowedError) as caught:
        load_trainer("this:s", allowed)
    assert "this" not in sys.modules, "refused before its module is imported"
    assert str(caught.value) == (
        "trainer 'this:s' is not allowed: retraining runs only the trainers in "
        "DRIFTLINE_ALLOWED_TRAINERS (shared.trainers:gradient_boosting)"
    )
    with pytest.raises(DriftlineError, match=r"'no\.such:module' not found"):
        load_trainer("no.such:module", {"no.such:module"})


async def test_the_job_refuses_a_deployment_whose_trainer_is_not_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whoever writes `deployments` must not choose the code the job runs: the retrain fails
    with the reason, in the log and in the job's answer to the alert posted again."""
    common = DriftlineSettings()
    hostile = loans_deployment(trainer="os:system")

    async def live_deployments(_: DriftlineSettings) -> dict[str, Deployment]:
        return {hostile.name: hostile}

    monkeypatch.setattr(shared.retraining, "live_deployments", live_deployments)
    # the job's own logger, whatever an earlier test configured (structlog caches loggers)
    logged = CapturingLogger()
    monkeypatch.setattr(services.tools.retrain_job, "log", logged)
    job = RetrainJob(common, RetrainSettings(web_port=free_port()))
    body = encode(concept_alert(OFFSETS, 1000.0))
    await job.start()
    try:
        assert (await _post(job, body, _signed(body, common)))[0] == 202
        async with asyncio.timeout(10):
            while job.pending:
                await asyncio.sleep(0.05)
        status, answer = await _post(job, body, _signed(body, common))
    finally:
        await job.stop()
    assert (status, answer["status"]) == (200, "done")
    assert answer["outcome"].startswith("failed: trainer 'os:system' is not allowed")
    [failed] = [c for c in logged.calls if c.args == ("retrain failed",)]
    assert (failed.method_name, failed.kwargs["alert_id"]) == ("error", "alert-1")
    assert "trainer 'os:system' is not allowed" in failed.kwargs["reason"]


async def test_the_job_answers_live_like_the_workers_for_the_liveness_probe() -> None:
    job = RetrainJob(DriftlineSettings(), RetrainSettings())
    async with TestClient(TestServer(job.web_app())) as client:
        response = await client.get("/live")
        assert (response.status, await response.json()) == (200, {"status": "alive"})
