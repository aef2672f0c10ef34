"""The console's logic without a broker or a browser: who a request is, form tokens, errors per
variant over time, the chart, and the deployment form read by the CLI's own code."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from services.console.distributions import Distributions
from services.console.logic import (
    ErrorSeries,
    LiveView,
    User,
    authenticate,
    csrf_ok,
    csrf_token,
    deployment_from_form,
    error_chart,
    first_event,
    form_values,
    policy_fields,
)
from shared.errors import DriftlineError
from shared.events import (
    DriftAlert,
    LabeledPrediction,
    OnlineModelSpec,
    PromotionPolicy,
    RetrainSpec,
    VariantOutput,
    encode,
)
from shared.settings import ConsoleSettings
from tests.support.samples import SAMPLES

SETTINGS = ConsoleSettings(
    viewer_token=SecretStr("see"),
    editor_token=SecretStr("change"),
    trusted_user_header=None,
)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_tokens_make_viewers_and_editors_and_nothing_else_lets_anyone_in() -> None:
    assert authenticate(_basic("alice", "change"), SETTINGS) == User("alice", "editor")
    assert authenticate(_basic("bob", "see"), SETTINGS) == User("bob", "viewer")
    assert authenticate({"Authorization": "Bearer see"}, SETTINGS) == User("viewer token", "viewer")
    assert authenticate(_basic("alice", "wrong"), SETTINGS) is None
    assert authenticate({"Authorization": "Bearer "}, SETTINGS) is None
    assert authenticate({"Authorization": "Basic %%%"}, SETTINGS) is None
    assert authenticate({}, SETTINGS) is None


def test_the_proxy_header_counts_only_when_configured() -> None:
    proxied = {"X-Forwarded-User": "carol", "X-Forwarded-Groups": "ops, driftline-editors"}
    assert authenticate(proxied, SETTINGS) is None
    behind_proxy = ConsoleSettings(trusted_user_header="X-Forwarded-User")
    assert authenticate(proxied, behind_proxy) == User("carol", "editor")
    assert authenticate({"X-Forwarded-User": "dan"}, behind_proxy) == User("dan", "viewer")
    assert not ConsoleSettings().authenticates


def test_a_form_token_belongs_to_its_user_and_key() -> None:
    alice = User("alice", "editor")
    token = csrf_token(b"key", alice)
    assert csrf_ok(b"key", alice, token)
    assert not csrf_ok(b"other key", alice, token)
    assert not csrf_ok(b"key", User("mallory", "editor"), token)
    assert not csrf_ok(b"key", alice, "")


def _labeled(at: float, champion: int, challenger: int | None, label: int) -> LabeledPrediction:
    outcomes = [
        VariantOutput(
            variant="champion", role="champion", served=True, model_name="m",
            model_version="1", output=champion,
        ),
        VariantOutput(
            variant="challenger", role="shadow", served=False, model_name="m",
            model_version="2", output=challenger,
        ),
    ]  # fmt: skip
    return LabeledPrediction(
        event_id=f"e{at}", entity_id="u", stream="s", deployment="d", features={},
        outcomes=outcomes, label=label, event_time=datetime.fromtimestamp(at, UTC),
        label_time=datetime.fromtimestamp(at, UTC), feedback_delay_s=0,
    )  # fmt: skip


def test_errors_are_counted_per_variant_and_bucket_and_old_buckets_go() -> None:
    errors = ErrorSeries(bucket_s=60, horizon_s=120)
    errors.add(_labeled(0, champion=1, challenger=0, label=0))
    errors.add(_labeled(10, champion=0, challenger=None, label=0))
    errors.add(_labeled(70, champion=1, challenger=1, label=1))
    assert errors.series("d") == {
        "challenger v2": [(0.0, 0.0), (60.0, 0.0)],
        "champion v1": [(0.0, 0.5), (60.0, 0.0)],
    }
    assert errors.recent("d", buckets=1) == {"challenger v2": (0.0, 1), "champion v1": (0.0, 1)}
    errors.add(_labeled(200, champion=0, challenger=0, label=0))
    assert [t for t, _ in errors.series("d")["champion v1"]] == [60.0, 180.0]
    assert errors.series("other") == {}


def test_the_chart_draws_each_series_and_escapes_names() -> None:
    chart = error_chart({"<b>": [(0.0, 0.5), (60.0, 0.25)], "x": [(0.0, 0.1)]})
    assert chart.startswith("<svg") and chart.count("<polyline") == 2
    assert "&lt;b&gt;" in chart and "<b>" not in chart
    assert error_chart({}) == ""


def _alert(alert_id: str, level: str, at: float, window_from: float | None) -> DriftAlert:
    """The sample alert at `at` (epoch seconds), its window from `window_from` if any."""
    sample = SAMPLES[DriftAlert]
    assert isinstance(sample, DriftAlert) and sample.window is not None
    window = (
        None
        if window_from is None
        else sample.window.model_copy(
            update={"start_time": datetime.fromtimestamp(window_from, UTC)}
        )
    )
    update = {"alert_id": alert_id, "level": level, "key": "concept:<m>:1", "window": window}
    return sample.model_copy(update={**update, "event_time": datetime.fromtimestamp(at, UTC)})


def test_the_chart_puts_drift_alerts_and_their_windows_on_the_time_axis() -> None:
    series = {"champion v1": [(1000.0, 0.2), (1060.0, 0.5)]}
    alerts = [
        _alert("a1", "drift", at=1045.0, window_from=1030.0),
        _alert("w1", "warning", at=1040.0, window_from=None),  # warnings are not drawn
        _alert("early", "drift", at=990.0, window_from=None),  # widens the axis to show it
    ]
    chart = error_chart(series, alerts, width=700)

    assert chart.count('class="alert-mark"') == 2
    assert 'data-alert="a1"' in chart and 'data-alert="w1"' not in chart
    # 700 px wide, 30 px padding: the axis runs from t=990 (x=30) to t=1060 (x=670).
    assert '<line x1="532.9" y1="30" x2="532.9"' in chart  # a1 at t=1045
    assert '<rect class="window" x="395.7" y="30" width="137.1"' in chart  # from t=1030
    assert '<line x1="30.0" y1="30" x2="30.0"' in chart  # early, at the axis' start
    assert "concept:&lt;m&gt;:1" in chart
    assert (
        error_chart({}, [_alert("only", "drift", at=5.0, window_from=1.0)]).count("alert-mark") == 1
    )


def test_the_form_is_read_by_the_cli_code_and_keeps_the_live_policies() -> None:
    form = {
        "name": "fraud",
        "stream": "payments",
        "champion": "models:/fraud@champion",
        "canary": "models:/fraud/3",
        "canary_weight": "0.2",
        "rules": "tier==premium=models:/fraud@premium\n\n",
        "shadows": "online:hat\n",
    }
    new = deployment_from_form(form, None)
    assert [(v.name, v.role, v.model_uri) for v in new.variants] == [
        ("champion", "champion", "models:/fraud@champion"),
        ("canary", "canary", "models:/fraud/3"),
        ("rule-1", "rule", "models:/fraud@premium"),
        ("shadow-1", "shadow", "online:hat"),
    ]
    assert form_values(new) == form_values(None) | form | {
        "rules": "tier==premium=models:/fraud@premium",
        "shadows": "online:hat",
    }
    online = [OnlineModelSpec(model_id="hat", model_type="hoeffding_tree")]
    live = new.model_copy(
        update={"promotion": PromotionPolicy(min_samples=7), "online_models": online}
    )
    again = deployment_from_form(form_values(live), live)
    assert (again.promotion.min_samples, again.online_models) == (7, online)
    with pytest.raises(DriftlineError, match="canary weight 'lots'"):
        deployment_from_form(form | {"canary_weight": "lots"}, None)
    with pytest.raises(DriftlineError, match="rule 'tier'"):
        deployment_from_form(form | {"rules": "tier"}, None)


def test_the_form_edits_both_policies_and_checks_them_as_the_cli_does() -> None:
    form = form_values(None) | {
        "name": "fraud",
        "stream": "payments",
        "champion": "models:/fraud@champion",
        "promotion.min_samples": " 300 ",
        "promotion.tier_feature": "plan",
        "retrain.deploy_as": "canary",
        "retrain.model_name": "",
    }
    new = deployment_from_form(form, None)
    assert new.promotion == PromotionPolicy(min_samples=300, tier_feature="plan")
    assert new.retrain == RetrainSpec(deploy_as="canary")
    assert form_values(new)["promotion.min_samples"] == "300"
    assert form_values(new)["retrain.model_name"] == ""
    blank = {key: "" for key in form if "." in key}
    assert deployment_from_form(form | blank, None).promotion == PromotionPolicy()
    with pytest.raises(DriftlineError, match=r"promotion\.alpha: .*less than 1"):
        deployment_from_form(form | {"promotion.alpha": "1.5"}, None)
    with pytest.raises(DriftlineError, match=r"retrain\.deploy_as"):
        deployment_from_form(form | {"retrain.deploy_as": "champion"}, None)
    with pytest.raises(DriftlineError, match=r"promotion\.max_looks: .*integer"):
        deployment_from_form(form | {"promotion.max_looks": "many"}, None)
    fields = policy_fields()
    assert {f.key for f in fields} >= {"promotion.min_samples", "retrain.trainer"}
    assert all(f.help for f in fields)


def test_the_view_keeps_records_and_finds_open_alerts() -> None:
    view = LiveView(
        "p.", history=2, errors=ErrorSeries(60, 600), distributions=Distributions(10, 4)
    )
    alerts = [
        DriftAlert(
            alert_id=f"a{i}", kind="concept", level=level, key="concept:m:1", deployment="d",
            detector="hddm_a", position=i, event_time=datetime.now(UTC),
        )
        for i, level in enumerate(["warning", "drift", "drift"])
    ]  # fmt: skip
    for alert in alerts:
        assert view.apply("p.alerts", alert.key.encode(), encode(alert)) == alert
    assert [a.alert_id for a in view.alerts] == ["a1", "a2"]
    assert [a.alert_id for a in view.open_alerts()] == ["a2"]
    with pytest.raises(DriftlineError):
        view.apply("p.alerts", b"k", b"not json")
    assert first_event([(5, "late"), (1, None), (3, "early")]) == "early"
