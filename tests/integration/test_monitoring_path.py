"""The monitoring path on the real broker: concept and data drift alerts at River's indices,
warning before drift, cooldown, signed webhooks with retries and dead letters, a webhook in
flight when its worker is killed announced by the successor, the CLI reading alerts back, and a
restarted detector that continues where it stopped."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import Callable

import orjson
import pytest
from pydantic import SecretStr
from river import tree
from river.datasets import synth
from river.drift import ADWIN
from river.drift.binary import DDM
from typer.testing import CliRunner

from services.cli import app as cli
from services.drift.detectors import PSI
from shared.events import FeatureEvent, LabeledPrediction
from shared.signing import KeyRing
from shared.topics import ALERTS, DEADLETTER, FEATURES, PREDICTIONS_LABELED
from shared.webhooks import ID_HEADER
from tests.support.kafka import Record, consume_until, count_of, produce
from tests.support.pipeline import Pipeline
from tests.support.records import champion_labeled, stored_state
from tests.support.signals import interruptible
from tests.support.webhook_server import WebhookReceiver

pytestmark = pytest.mark.integration

T0 = 1_780_000_000.0
DRIFT_AT = 1000
"""Where the concept changes in the labeled stream (SEA variant 0 to 3, seeded)."""
HOOK_KEY = "monitoring-test-key"


def _concept_errors_and_predictions(n: int = 1300) -> tuple[list[int], list[LabeledPrediction]]:
    """A tree trained on SEA's first concept answers a stream that switches concept at DRIFT_AT."""
    model = tree.HoeffdingTreeClassifier(grace_period=50)
    for x, y in synth.SEA(variant=0, noise=0.05, seed=101).take(3000):
        model.learn_one(x, y)
    stream = synth.ConceptDriftStream(
        stream=synth.SEA(variant=0, noise=0.05, seed=1),
        drift_stream=synth.SEA(variant=3, noise=0.05, seed=51),
        position=DRIFT_AT,
        width=10,
        seed=1,
    )
    errors, records = [], []
    for i, (x, y) in enumerate(stream.take(n)):
        output = model.predict_one(x)
        errors.append(int(output != y))
        records.append(
            champion_labeled(
                i,
                output=output,
                label=y,
                at=T0 + i,
                model=("sea", "3"),
                deployment="sea-dep",
                stream="sea",
                entities=7,
                features={f"x{k}": v for k, v in x.items()},
            )
        )
    return errors, records


def _feature_events(n: int, shifts: tuple[int, ...], seed: int) -> list[FeatureEvent]:
    """One entity (so one partition, one order): `amount` shifts its mean, `country` its mix."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        shifted = sum(i >= s for s in shifts)
        country = rng.choice(("NL", "NL", "DE") if not shifted else ("NL", "DE", "DE", "FR"))
        events.append(
            FeatureEvent(
                event_id=f"f-{i}",
                stream="pay",
                entity_id="u1",
                event_time=T0 + i,
                features={"amount": rng.gauss(2.0 * shifted, 1.0), "country": country},
            )
        )
    return events


def _fired(detector: ADWIN | DDM | PSI, values: list) -> list[int]:
    positions = []
    for i, value in enumerate(values, start=1):
        detector.update(value)
        if detector.drift_detected:
            positions.append(i)
    return positions


def stored_detectors_saw(changelog: str, n: int) -> Callable[[list[Record]], bool]:
    """A `done` predicate: the latest stored state of both of ``pay``'s detectors (``amount``,
    ``country``) has counted `n` values. The worker writes a detector once per micro-batch."""

    def done(records: list[Record]) -> bool:
        latest = {r.key: r.value for r in records if r.topic == changelog}
        seen = [stored_state("drift", "feature_to_monitor", k, v).n_seen for k, v in latest.items()]
        return len(seen) == 2 and all(count == n for count in seen)

    return done


def _alerts(records: list[Record], topic: str) -> list[dict]:
    return [r.json() for r in records if r.topic == topic]


async def test_drift_alerts_match_river_and_reach_webhooks_and_the_cli(pipeline: Pipeline) -> None:
    errors, labeled = _concept_errors_and_predictions()
    features = _feature_events(900, shifts=(400,), seed=4)
    amounts = [e.features["amount"] for e in features]
    countries = [e.features["country"] for e in features]
    concept_drifts = _fired(DDM(), errors)
    amount_drifts = _fired(ADWIN(delta=0.002), amounts)
    country_drifts = _fired(PSI(window=100), countries)
    assert concept_drifts[0] > DRIFT_AT and amount_drifts[0] > 400 and country_drifts
    n_drifts = len(concept_drifts) + len(amount_drifts) + len(country_drifts)
    alerts_topic, letters_topic = pipeline.topic(ALERTS), pipeline.topic(DEADLETTER)

    keys = KeyRing(SecretStr(HOOK_KEY))
    async with WebhookReceiver(status={"/down": 503}, keys=keys) as hooks:
        pipeline.start(
            "drift",
            DRIFTLINE_WEBHOOK_HMAC_KEY=HOOK_KEY,
            DRIFTLINE_DRIFT_COOLDOWN_S="0",
            DRIFTLINE_DRIFT_DETECTORS='{"categorical": {"kind": "psi", "window": 100}}',
            DRIFTLINE_DRIFT_CONCEPT_DETECTORS='{"classification": {"kind": "ddm"}}',
            DRIFTLINE_DRIFT_WEBHOOK_URLS=orjson.dumps(
                [hooks.url("/ok"), hooks.url("/down")]
            ).decode(),
            DRIFTLINE_DRIFT_WEBHOOK_LEVELS='["drift"]',
            DRIFTLINE_DRIFT_WEBHOOK_ATTEMPTS="2",
            DRIFTLINE_DRIFT_WEBHOOK_BACKOFF_S="0.05",
        )
        await produce(
            pipeline.bootstrap,
            pipeline.topic(PREDICTIONS_LABELED),
            [(r.deployment, r) for r in labeled],
        )
        await produce(
            pipeline.bootstrap, pipeline.topic(FEATURES), [(e.entity_id, e) for e in features]
        )

        def done(records: list[Record]) -> bool:
            drifts = [a for a in _alerts(records, alerts_topic) if a["level"] == "drift"]
            return len(drifts) >= n_drifts and len(_alerts(records, letters_topic)) >= n_drifts

        records = await consume_until(
            pipeline.bootstrap, [alerts_topic, letters_topic], done, timeout=180
        )
        delivered = await hooks.wait_for("/ok", n_drifts)

    alerts = _alerts(records, alerts_topic)
    concept = [a for a in alerts if a["kind"] == "concept"]
    assert all(a["position"] > DRIFT_AT for a in concept), "no concept alert before the drift"
    assert [a["position"] for a in concept if a["level"] == "drift"] == concept_drifts
    first_drift = next(i for i, a in enumerate(concept) if a["level"] == "drift")
    assert first_drift > 0 and {a["level"] for a in concept[:first_drift]} == {"warning"}
    assert {(a["key"], a["deployment"], a["detector"]) for a in concept} == {
        ("concept:sea:3", "sea-dep", "DDM")
    }

    data = {
        key: [a for a in alerts if a["key"] == key]
        for key in ("data:pay:amount", "data:pay:country")
    }
    assert [a["position"] for a in data["data:pay:amount"]] == amount_drifts
    assert [
        a["position"] for a in data["data:pay:country"] if a["level"] == "drift"
    ] == country_drifts

    drift_alerts = sorted(orjson.dumps(a) for a in alerts if a["level"] == "drift")
    assert sorted(orjson.dumps(orjson.loads(r.body)) for r in delivered) == drift_alerts
    assert not hooks.refused, "every post verifies under the drift worker's key"
    assert all(r.headers[ID_HEADER] == orjson.loads(r.body)["alert_id"] for r in delivered)
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    assert len(hooks.on("/down")) == 2 * n_drifts
    letters = _alerts(records, letters_topic)
    assert {(x["source_topic"], x["service"]) for x in letters} == {(alerts_topic, "drift")}
    assert all(x["reason"].endswith("failed after 2 attempts: HTTP 503") for x in letters)

    env = {"DRIFTLINE_KAFKA_BROKER": pipeline.bootstrap, "DRIFTLINE_TOPIC_PREFIX": pipeline.prefix}
    listed = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["alerts", "list", "--kind", "concept", "--level", "drift", "--json"],
        env=env,
    )
    assert listed.exit_code == 0, listed.output
    assert [orjson.loads(line)["position"] for line in listed.output.splitlines()] == concept_drifts

    tail = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "services.cli", "alerts", "tail", "--json", "--from-beginning"),
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=interruptible,
    )
    try:
        assert tail.stdout is not None
        tailed = [orjson.loads(await asyncio.wait_for(tail.stdout.readline(), 60)) for _ in alerts]
        tail.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(tail.wait(), 30) == 0
    finally:
        if tail.returncode is None:  # nothing is left running, whatever failed
            tail.kill()
            await tail.wait()
    assert sorted(a["alert_id"] for a in tailed) == sorted(a["alert_id"] for a in alerts)


async def test_a_restarted_detector_keeps_its_state_and_cooldown_drops_repeats(
    pipeline: Pipeline,
) -> None:
    features = _feature_events(1000, shifts=(300, 650), seed=8)
    amount_drifts = _fired(ADWIN(delta=0.002), [e.features["amount"] for e in features])
    assert len(amount_drifts) >= 2 and amount_drifts[0] > 300
    env = {
        "DRIFTLINE_DRIFT_COOLDOWN_S": "100000",
        "DRIFTLINE_DRIFT_DETECTORS": '{"categorical": {"kind": "psi", "window": 100000}}',
    }
    changelog = f"{pipeline.prefix}driftline-drift-feature_to_monitor-changelog"
    features_topic, alerts_topic = pipeline.topic(FEATURES), pipeline.topic(ALERTS)

    first = pipeline.start("drift", **env)
    await produce(pipeline.bootstrap, features_topic, [("u1", e) for e in features[:200]])
    await consume_until(pipeline.bootstrap, [changelog], stored_detectors_saw(changelog, 200))
    first.stop()
    second = pipeline.start("drift", **env)
    await produce(pipeline.bootstrap, features_topic, [("u1", e) for e in features[200:]])
    await consume_until(
        pipeline.bootstrap, [changelog], stored_detectors_saw(changelog, 1000), timeout=120
    )
    records = await consume_until(pipeline.bootstrap, [alerts_topic], count_of(alerts_topic, 1))

    alerts = _alerts(records, alerts_topic)
    assert [(a["key"], a["position"]) for a in alerts] == [("data:pay:amount", amount_drifts[0])]
    suppressed = 'driftline_alerts_suppressed_total{kind="data",level="drift",reason="cooldown"}'
    assert f"{suppressed} {float(len(amount_drifts) - 1)}" in second.metrics()


async def test_an_alert_announced_while_its_worker_is_killed_is_announced_by_the_successor(
    pipeline: Pipeline,
) -> None:
    """The alert is on ``alerts`` and its detector saved when the receiver hangs and the worker
    is SIGKILLed: the webhook must come from the alerts topic, not from the dead worker's
    memory, so the successor posts it (same ``webhook-id``)."""
    features = _feature_events(700, shifts=(300,), seed=8)
    assert _fired(ADWIN(delta=0.002), [e.features["amount"] for e in features])
    env = {
        "DRIFTLINE_DRIFT_COOLDOWN_S": "100000",
        "DRIFTLINE_DRIFT_DETECTORS": '{"categorical": {"kind": "psi", "window": 100000}}',
        "DRIFTLINE_DRIFT_WEBHOOK_TIMEOUT_S": "600",
    }
    changelog = f"{pipeline.prefix}driftline-drift-feature_to_monitor-changelog"
    alerts_topic = pipeline.topic(ALERTS)
    async with WebhookReceiver(hold={"/hook"}) as hooks:
        env["DRIFTLINE_DRIFT_WEBHOOK_URLS"] = orjson.dumps([hooks.url("/hook")]).decode()
        first = pipeline.start("drift", **env)
        await produce(pipeline.bootstrap, pipeline.topic(FEATURES), [("u1", e) for e in features])
        [in_flight] = await hooks.wait_held(1)
        records = await consume_until(
            pipeline.bootstrap, [alerts_topic, changelog], stored_detectors_saw(changelog, 700)
        )
        first.kill()
        hooks.release()
        pipeline.start("drift", **env)
        [announced] = await hooks.wait_for("/hook", 1, timeout=120)

    [alert] = _alerts(records, alerts_topic)
    assert in_flight.headers[ID_HEADER] == alert["alert_id"]
    assert announced.headers[ID_HEADER] == alert["alert_id"]
    assert orjson.loads(announced.body) == alert
