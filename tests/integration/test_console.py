"""The operator console in a real browser (Debian's Chromium driven by Playwright) against a live
router on the real broker and MLflow: each page loads; a deployment made through the form is
served by the router, and a promotion-policy field changed through it reaches the record; the
stream page shows its features' distributions; the router's answers, labeled, make each
variant's error; an alert arrives on an open page without a reload and is filtered; the
launchpad counts dead letters, rates and lag; a challenger is promoted from its page, a retrain
runs on an alert's window from its page and its version is rolled back; access needs a token,
viewers cannot change anything and a form without its token is refused. Screenshots of each page
go to the test's temporary directory, or to the directory DRIFTLINE_CONSOLE_SCREENSHOTS names
(`DRIFTLINE_CONSOLE_SCREENSHOTS=docs/img` renews the docs'), so a test run leaves the checkout as
it was."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from playwright.async_api import Browser, Page, async_playwright, expect
from sklearn.linear_model import LogisticRegression

from services.processes import ServiceStartError
from shared.admin import publish
from shared.events import (
    DataWindow,
    Deployment,
    DriftAlert,
    FeatureEvent,
    FeatureSpec,
    LabeledPrediction,
    Prediction,
    PromotionDecision,
    RetrainSpec,
    StreamSchema,
    Variant,
    decode,
    encode,
)
from shared.registry import MlflowRegistry, register_sklearn_model
from shared.rollout import REJECTED_TAG
from shared.topics import (
    ALERTS,
    DECISIONS,
    DEPLOYMENTS,
    FEATURES,
    PREDICTIONS,
    PREDICTIONS_LABELED,
    STREAMS,
)
from tests.support.kafka import Record, consume_until, produce
from tests.support.pipeline import Pipeline
from tests.support.workers import Worker

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("DRIFTLINE_CONSOLE_SCREENSHOTS")
EDITOR, VIEWER = "editor-secret", "viewer-secret"
WAIT_MS = 60_000
expect.set_options(timeout=WAIT_MS)  # the machine is shared and busy: conditions, with room


def _model(cut: float) -> LogisticRegression:
    amounts = np.linspace(0, 1, 400)
    return LogisticRegression(C=1000).fit(
        pd.DataFrame({"amount": amounts}), (amounts > cut).astype(int)
    )


@dataclass
class Live:
    """The running pipeline, the console's address and the registered model's name."""

    pipeline: Pipeline
    url: str
    model: str
    mlflow_uri: str


async def _declare(pipeline: Pipeline, *streams: str) -> None:
    for stream in streams:
        schema = StreamSchema(name=stream, features=[FeatureSpec(name="amount", min=0, max=1)])
        await publish(pipeline.settings, STREAMS, stream, encode(schema))


def _features(prefix: str, stream: str, n: int) -> list[tuple[str, FeatureEvent]]:
    return [
        (
            f"user-{i}",
            FeatureEvent(
                event_id=f"{prefix}-{i}",
                stream=stream,
                entity_id=f"user-{i}",
                event_time=datetime.now(UTC),
                features={"amount": i / n},
            ),
        )
        for i in range(n)
    ]


@pytest.fixture
async def live(pipeline: Pipeline, mlflow_uri: str) -> AsyncIterator[Live]:
    """A router worker and the console, started while a fresh model gets versions 1 (champion)
    and 2 (challenger, the same artifacts registered again), and a deployment ``fraud`` that
    serves version 2 in shadow."""
    await _declare(pipeline, "payments", "loans")
    tracking = {"DRIFTLINE_MLFLOW_TRACKING_URI": mlflow_uri}
    router = Worker(
        "router",
        {**pipeline.env, **tracking, "DRIFTLINE_ROUTER_MODEL_REFRESH_SECONDS": "1"},
        pipeline.workdir / "router.log",
    )
    console = Worker(
        "console",
        {
            **pipeline.env,
            **tracking,
            "DRIFTLINE_CONSOLE_EDITOR_TOKEN": EDITOR,
            "DRIFTLINE_CONSOLE_VIEWER_TOKEN": VIEWER,
            "DRIFTLINE_CONSOLE_REFRESH_S": "1",
            "DRIFTLINE_HEALTH_URLS": json.dumps(
                {"router": f"http://127.0.0.1:{router.port}/health"}
            ),
        },
        pipeline.workdir / "console.log",
        argv=["-m", "services.cli", "console"],
    )
    pipeline.workers.extend([router, console])
    router.spawn()
    console.spawn()

    name = f"fraud-{uuid.uuid4().hex[:8]}"
    register_sklearn_model(mlflow_uri, name, _model(0.8), pd.DataFrame({"amount": [0.1]}))
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.register_model(MlflowClient(mlflow_uri).get_model_version(name, "1").source, name)
    registry = MlflowRegistry(mlflow_uri)
    registry.set_alias(name, "champion", "1")
    registry.set_alias(name, "challenger", "2")
    fraud = Deployment(
        name="fraud",
        stream="payments",
        variants=[
            Variant(name="champion", role="champion", model_uri=f"models:/{name}@champion"),
            Variant(name="challenger", role="shadow", model_uri=f"models:/{name}/2"),
        ],
        retrain=RetrainSpec(min_samples=20),
    )
    await publish(pipeline.settings, DEPLOYMENTS, "fraud", encode(fraud))
    for worker in (router, console):
        try:
            worker.wait_ready(120)
        except ServiceStartError as exc:
            raise AssertionError(f"{exc}:\n{worker.tail()}") from None
    yield Live(pipeline, f"http://127.0.0.1:{console.port}", name, mlflow_uri)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium from Debian, driven by Playwright (no browser download)."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def _reload_until(page: Page, path: str, selector: str, text: str) -> None:
    """Load `path` again until `selector` shows `text`: the console shows a record once its
    reader got it, a moment after it was produced."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        await page.goto(path)
        if text in await page.locator(selector).inner_text() or time.monotonic() > deadline:
            break
        await page.wait_for_timeout(500)
    await expect(page.locator(selector)).to_contain_text(text)


async def _shot(page: Page, name: str) -> None:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else Path(tempfile.gettempdir()) / "driftline-console"
    folder.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(folder / f"console-{name}.png"), full_page=True)


async def _predicted_and_labeled(pipeline: Pipeline, prefix: str, n: int) -> None:
    """`n` events of ``payments``, answered by both variants of the router, then labeled as the
    feedback service labels them (``amount > 0.5``), on ``predictions.labeled``."""
    features = _features(prefix, "payments", n)
    await produce(pipeline.bootstrap, pipeline.topic(FEATURES), features)
    topic = pipeline.topic(PREDICTIONS)

    def ours(records: list[Record]) -> list[Prediction]:
        return [
            decode(Prediction, r.value, topic)
            for r in records
            if r.key and r.key.startswith(prefix.encode())
        ]

    records = await consume_until(
        pipeline.bootstrap, [topic], lambda rs: len(ours(rs)) >= 2 * n, timeout=120
    )
    outcomes: dict[str, list[Prediction]] = {}
    for prediction in ours(records):
        outcomes.setdefault(prediction.event_id, []).append(prediction)
    labeled = [
        (
            event.event_id,
            LabeledPrediction(
                event_id=event.event_id,
                entity_id=event.entity_id,
                stream=event.stream,
                deployment="fraud",
                features=event.features,
                outcomes=[p.outcome for p in outcomes[event.event_id]],
                label=int(event.features["amount"] > 0.5),
                event_time=event.event_time,
                label_time=datetime.now(UTC),
                feedback_delay_s=1.0,
            ),
        )
        for _, event in features
    ]
    await produce(pipeline.bootstrap, pipeline.topic(PREDICTIONS_LABELED), labeled)


async def test_the_console_shows_the_pipeline_and_changes_it_in_a_browser(
    live: Live, browser: Browser
) -> None:
    pipeline = live.pipeline
    await _predicted_and_labeled(pipeline, "seen", 40)
    context = await browser.new_context(
        base_url=live.url,
        http_credentials={"username": "alice", "password": EDITOR},
        viewport={"width": 1280, "height": 900},
    )
    page = await context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    page.set_default_timeout(WAIT_MS)

    # launchpad: services with health, the deployment with champion and challenger, errors
    await page.goto("/")
    await expect(page.locator("#services")).to_contain_text("router")
    await expect(page.locator("#services tr", has_text="router")).to_contain_text("ok")
    fraud_row = page.locator("#deployments tr", has_text="fraud")
    await expect(fraud_row).to_contain_text(f"models:/{live.model}@champion")
    await expect(fraud_row).to_contain_text(f"challenger (shadow): models:/{live.model}/2")
    await expect(fraud_row).to_contain_text("champion v1: 0.300 (n=40)")
    await _shot(page, "launchpad")

    # the form: a mistake is refused by the CLI's own check; a good deployment is published
    await page.goto("/deploy")
    await page.fill("input[name=name]", "loans")
    await page.select_option("select[name=stream]", "loans")
    await page.fill("input[name=champion]", "models:/no-such-model@champion")
    await page.click("#preview")
    await expect(page.locator("#error")).to_contain_text("no-such-model")
    await page.fill("input[name=champion]", f"models:/{live.model}@champion")
    await page.fill("textarea[name=shadows]", f"models:/{live.model}/2")
    await _shot(page, "deploy-form")
    await page.click("#preview")
    await expect(page.locator("#diff")).to_contain_text('+  "name": "loans"')
    await _shot(page, "deploy-diff")
    await page.click("#publish")
    await expect(page.locator("#notice")).to_contain_text("created loans as alice")
    await produce(pipeline.bootstrap, pipeline.topic(FEATURES), _features("loan", "loans", 3))

    def served_loans(records: list[Record]) -> bool:
        return any(r.json()["deployment"] == "loans" for r in records)

    await consume_until(pipeline.bootstrap, [pipeline.topic(PREDICTIONS)], served_loans, 120)

    # a promotion-policy field changed through the form: in the diff, then in the record
    await page.goto("/deployments/loans/edit")
    await page.fill("input[name='promotion.min_samples']", "250")
    await page.click("#preview")
    await expect(page.locator("#diff")).to_contain_text('+    "min_samples": 250,')
    await page.click("#publish")
    await expect(page.locator("#notice")).to_contain_text("changed loans as alice")

    def policy_changed(records: list[Record]) -> bool:
        return any(
            r.key == b"loans" and r.json()["promotion"]["min_samples"] == 250 for r in records
        )

    await consume_until(pipeline.bootstrap, [pipeline.topic(DEPLOYMENTS)], policy_changed, 60)

    # alerts arrive live on an open page, without a reload
    await page.goto("/alerts")
    await expect(page.locator("#live")).to_have_text("live")
    await page.evaluate("window.notReloaded = true")
    labeled = pipeline.topic(PREDICTIONS_LABELED)
    alert = DriftAlert(
        alert_id=f"alert-{uuid.uuid4().hex[:8]}",
        kind="concept",
        level="drift",
        key=f"concept:{live.model}:1",
        model_name=live.model,
        model_version="1",
        deployment="fraud",
        detector="hddm_a",
        position=40,
        event_time=datetime.now(UTC),
        window=DataWindow(
            start_time=datetime.now(UTC),
            start_position=1,
            estimated_by="warning_start",
            offsets={labeled: {0: 0, 1: 0}},
        ),
    )
    await produce(pipeline.bootstrap, pipeline.topic(ALERTS), [(alert.key, alert)])
    row = page.locator("#alerts tr", has_text=alert.key)
    await expect(row).to_contain_text("drift")
    assert await page.evaluate("window.notReloaded") is True
    await _shot(page, "alerts")
    await page.select_option("#filter select[name=kind]", "data")
    await page.click("#filter button")
    await expect(page.locator("#alerts")).not_to_contain_text(alert.key)
    await page.select_option("#filter select[name=kind]", "concept")
    await page.fill("#filter input[name=q]", alert.key)
    await page.click("#filter button")
    await expect(page.locator("#alerts tr", has_text=alert.key)).to_contain_text("drift")

    # the alert's window, and the trace of its first event
    await row.get_by_text("window since").click()
    await expect(page.locator("#window")).to_contain_text("warning_start")
    await _shot(page, "alert")
    await page.get_by_text("trace its first event").click()
    await expect(page.locator("#journey")).to_contain_text("predictions.labeled")
    assert "event_id=seen-" in page.url
    await _shot(page, "trace")

    # the launchpad: the open alert, a dead letter by service and reason, the router's rates and lag
    await produce(pipeline.bootstrap, pipeline.topic(FEATURES), [("bad", b"not json")])
    await _reload_until(page, "/", "#deadletters", "router")
    await expect(page.locator("#alerts")).to_contain_text(alert.key)
    await expect(
        page.locator("#deadletters tr", has_text="router").locator("td").nth(2)
    ).to_have_text("1")
    router_cells = page.locator("#services tr", has_text="router").locator("td")
    await expect(router_cells.nth(2)).to_have_text(re.compile(r"^\d+\.\d$"))
    await expect(router_cells.nth(4)).to_have_text(re.compile(r"^\d+$"))

    # the stream page, and a declaration changed through its form
    await page.goto("/streams/payments")
    await expect(page.locator("#features")).to_contain_text("amount")
    amount = page.locator("#distributions svg.distribution[data-feature=amount]")
    await expect(amount).to_contain_text("reference n=40, recent n=40")
    await _shot(page, "stream")
    await page.goto("/streams/loans/edit")
    await page.fill("textarea[name=declaration]", '{"name": "loans", "features": [{"name": 1}]}')
    await page.click("#preview")
    await expect(page.locator("#error")).to_contain_text("is not a stream declaration")
    declaration = {
        "name": "loans",
        "features": [
            {"name": "amount", "min": 0, "max": 1},
            {"name": "tier", "type": "categorical", "categories": ["basic", "premium"]},
        ],
    }
    await page.fill("textarea[name=declaration]", json.dumps(declaration))
    await page.click("#preview")
    await expect(page.locator("#diff")).to_contain_text('+      "name": "tier",')
    await page.click("#publish")
    await expect(page.locator("#features")).to_contain_text("premium")
    await expect(page.get_by_text("by alice")).to_be_visible()

    # the deployment page: variants, errors over time, the trial's looks, then promote
    look = PromotionDecision(
        deployment="fraud", model_name=live.model, champion_version="1", challenger_version="2",
        challenger_variant="challenger", action="wait", reason="fewer than 500 labeled outcomes",
        champion_error=0.3, challenger_error=0.3, champion_samples=40, challenger_samples=40,
        z=0.0, p_value=0.5,
    )  # fmt: skip
    await produce(pipeline.bootstrap, pipeline.topic(DECISIONS), [("fraud", look)])
    await _reload_until(page, "/deployments/fraud", "#trial", "fewer than 500 labeled outcomes")
    await expect(page.locator("#variants")).to_contain_text(f"models:/{live.model}/2")
    await expect(page.locator("svg.chart")).to_be_visible()
    mark = page.locator(f"svg.chart g.alert-mark[data-alert='{alert.alert_id}']")
    await expect(mark).to_have_count(1)  # the alert on the errors' time axis, with its window
    await _shot(page, "deployment")
    await page.click("#promote")
    await expect(page.locator("#notice")).to_contain_text(
        f"promoted {live.model} version 2 in fraud (champion was 1)"
    )
    await expect(page.locator("#trial")).to_contain_text("operator (alice)")
    assert MlflowRegistry(live.mlflow_uri).aliases(live.model) == {"champion": "2"}
    topic = pipeline.topic(DECISIONS)
    records = await consume_until(pipeline.bootstrap, [topic], lambda rs: len(rs) >= 2)
    decision = decode(PromotionDecision, records[-1].value, topic)
    assert (decision.action, decision.decided_by, decision.operator) == (
        "promote",
        "operator",
        "alice",
    )

    # retrain on the alert's window from its page; the new version is rolled back from its page
    await page.goto(f"/alerts/{alert.alert_id}")
    await page.get_by_text("Retrain on this window").click()
    await expect(page.locator(".notice")).to_contain_text(
        f"retrained {live.model} on 40 rows of alert {alert.alert_id}'s window: "
        "version 3 deployed as the challenger of fraud"
    )
    await _reload_until(page, "/deployments/fraud", "#variants", f"models:/{live.model}/3")
    await page.click("#rollback")
    await expect(page.locator("#notice")).to_contain_text(
        f"rolled back {live.model} version 3 in fraud (champion stays 2)"
    )
    assert MlflowRegistry(live.mlflow_uri).aliases(live.model) == {"champion": "2"}
    tags = MlflowClient(live.mlflow_uri).get_model_version(live.model, "3").tags
    assert tags[REJECTED_TAG] == "operator override"
    records = await consume_until(pipeline.bootstrap, [topic], lambda rs: len(rs) >= 4)
    assert [
        (d.action, d.challenger_version, d.operator)
        for d in (decode(PromotionDecision, r.value, topic) for r in records[-2:])
    ] == [("retrain", "3", "alice"), ("rollback", "3", "alice")]
    await context.close()
    await _access_is_checked(live)


async def _access_is_checked(live: Live) -> None:
    """No token, a wrong one: 401; a viewer sees but cannot change; a form without its token or
    from another site is refused; probes need no token and metrics show no secret."""
    async with httpx.AsyncClient(base_url=live.url) as client:
        assert (await client.get("/")).status_code == 401
        assert (await client.get("/", auth=("bob", "wrong"))).status_code == 401
        viewer = await client.get("/", headers={"Authorization": f"Bearer {VIEWER}"})
        assert viewer.status_code == 200
        assert "viewer token (viewer)" in viewer.text
        assert "Promote" not in (await client.get("/deployments/fraud", auth=("v", VIEWER))).text
        refused = await client.post(
            "/deployments/fraud/promote", auth=("v", VIEWER), data={"csrf": "x"}
        )
        assert refused.status_code == 403
        no_token = await client.post("/deployments/fraud/promote", auth=("e", EDITOR), data={})
        assert no_token.status_code == 403
        assert "token is missing or stale" in no_token.text
        other_site = await client.post(
            "/deployments/fraud/promote",
            auth=("e", EDITOR),
            headers={"Origin": "https://evil.example"},
            data={"csrf": "x"},
        )
        assert other_site.status_code == 403
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert EDITOR not in (await client.get("/metrics")).text
