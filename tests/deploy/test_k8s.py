"""The plain manifests of k8s/ (kustomize base and dev overlay) and their agreement with shared/.

The retrain job is a kustomize Component (k8s/components/retrain-job), opt-in like the chart's
``retrainJob.enabled``: the base renders without it, the dev overlay adds it. The V2 gateway is in
the base (k8s/base/services/gateway), on like the chart's ``gateway.enabled``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.settings import SERVICE_SETTINGS, ConsoleSettings, GatewaySettings, RetrainSettings
from tests.deploy import manifests as m
from tests.deploy.conftest import KUSTOMIZATIONS, ROOT, run, tool

Load = Callable[[Path], list[m.Manifest]]

RETRAIN_COMPONENT = ROOT / "k8s" / "components" / "retrain-job"
WITH_RETRAIN_JOB = {"k8s/base": False, "k8s/overlays/dev": True}
"""Whether each kustomization of conftest.KUSTOMIZATIONS adds the retrain job component."""
WITH_CONSOLE = {"k8s/base": False, "k8s/overlays/dev": True}
"""Whether each kustomization adds the console component (k8s/components/console)."""
RETRAIN_URL = f"http://driftline-retrain:{RetrainSettings.model_fields['web_port'].default}/retrain"


@pytest.mark.parametrize("folder", KUSTOMIZATIONS)
def test_manifests_agree_with_shared(
    folder: str, kustomize_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(kustomize_renderings[folder])
    m.check_settings_names(docs)
    m.check_custom_kinds(docs)
    m.check_no_dev_key(docs)
    for workload, container in m.workloads(docs):
        m.check_workload(docs, workload, container)
    components = [m.check_worker(docs, d, c) for d, c in m.workloads(docs)]
    expected = {**SERVICE_SETTINGS, m.GATEWAY: GatewaySettings}
    if WITH_RETRAIN_JOB[folder]:
        expected[m.RETRAIN] = RetrainSettings
    if WITH_CONSOLE[folder]:
        expected[m.CONSOLE] = ConsoleSettings
    assert sorted(components) == sorted(expected)
    for service, cls in expected.items():
        (deployment,) = [d for d, c in m.workloads(docs) if m.component_of(c) == service]
        env = m.container_env(docs, deployment["spec"]["template"]["spec"]["containers"][0])
        default = cls.model_fields["web_port"].default
        assert env[f"DRIFTLINE_{service.upper()}_WEB_PORT"].value == str(default)
    m.check_topics(docs)
    m.check_autoscalers(docs)
    m.check_disruption_budgets(docs)
    m.check_network_policy(docs)
    m.check_service_monitor(docs)
    m.check_gateway(docs)
    if WITH_RETRAIN_JOB[folder]:
        m.check_retrain_job(docs)
    assert len(m.of_kind(docs, "PodDisruptionBudget")) == len(SERVICE_SETTINGS)
    assert len(m.of_kind(docs, "HorizontalPodAutoscaler")) == len(SERVICE_SETTINGS)


def test_base_leaves_the_hmac_secret_to_the_operator(
    kustomize_renderings: dict[str, Path], load: Load
) -> None:
    assert not m.of_kind(load(kustomize_renderings["k8s/base"]), "Secret")


def test_dev_overlay_keeps_topics_and_settings_in_step(
    kustomize_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(kustomize_renderings["k8s/overlays/dev"])
    assert m.settings_configmap(docs)["DRIFTLINE_TOPIC_REPLICATION_FACTOR"] == "1"
    assert {t["spec"]["replicas"] for t in m.of_kind(docs, "KafkaTopic")} == {1}
    assert {d["metadata"].get("namespace") for d in docs} == {"driftline-dev", None}


def test_kustomizations_are_the_ones_checked() -> None:
    assert set(WITH_RETRAIN_JOB) == set(KUSTOMIZATIONS)


def _drift_webhook_urls(docs: list[m.Manifest]) -> list[str] | None:
    (container,) = [c for _, c in m.workloads(docs) if m.service_of(c) == "drift"]
    variable = m.container_env(docs, container).get("DRIFTLINE_DRIFT_WEBHOOK_URLS")
    return None if variable is None else json.loads(variable.value or "")


def test_base_leaves_the_retrain_job_out(kustomize_renderings: dict[str, Path], load: Load) -> None:
    docs = load(kustomize_renderings["k8s/base"])
    assert not [c for _, c in m.workloads(docs) if m.component_of(c) == m.RETRAIN], "opt-in"
    assert not [d for d in docs if "retrain" in d["metadata"]["name"]]
    assert _drift_webhook_urls(docs) is None, "drift posts to a job that is not there"
    policies = {p["metadata"]["name"] for p in m.of_kind(docs, "NetworkPolicy")}
    assert policies == {"driftline", "driftline-gateway"}


def test_dev_overlay_adds_the_retrain_job_behind_the_drift_webhook(
    kustomize_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(kustomize_renderings["k8s/overlays/dev"])
    deployment = m.by_name(docs, "Deployment")["driftline-retrain"]
    assert deployment["metadata"]["namespace"] == "driftline-dev"
    assert deployment["spec"]["replicas"] == 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["retrain", "serve"]
    drift = m.by_name(docs, "Deployment")["driftline-drift"]
    assert container["image"] == drift["spec"]["template"]["spec"]["containers"][0]["image"]
    service = m.by_name(docs, "Service")["driftline-retrain"]
    assert [p["port"] for p in service["spec"]["ports"]] == [
        RetrainSettings.model_fields["web_port"].default
    ]
    assert _drift_webhook_urls(docs) == [RETRAIN_URL]
    assert {p["metadata"]["name"] for p in m.of_kind(docs, "NetworkPolicy")} == {
        "driftline", "driftline-retrain", "driftline-drift-to-retrain", "driftline-console",
        "driftline-gateway",
    }  # fmt: skip
    m.check_retrain_job(docs)


def test_the_retrain_job_component_adds_to_the_base_alone(tmp_path: Path, load: Load) -> None:
    """What a production overlay does: the base plus the component, nothing of the dev overlay."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(ROOT / 'k8s' / 'base', overlay)}\n"
        f"components:\n  - {os.path.relpath(RETRAIN_COMPONENT, overlay)}\n"
    )
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(run([tool("kustomize"), "build", overlay]))
    docs = load(rendered)
    components = [m.check_worker(docs, d, c) for d, c in m.workloads(docs)]
    assert sorted(components) == sorted(m.COMPONENT_SETTINGS)
    for workload, container in m.workloads(docs):
        m.check_workload(docs, workload, container)
    images = {c["image"] for _, c in m.workloads(docs)}
    assert len(images) == 1, f"the job's image differs from the base's: {images}"
    m.check_network_policy(docs)
    m.check_service_monitor(docs)
    m.check_retrain_job(docs)
    assert _drift_webhook_urls(docs) == [RETRAIN_URL]


def test_dev_overlay_adds_the_console_behind_its_tokens(
    kustomize_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(kustomize_renderings["k8s/overlays/dev"])
    deployment = m.by_name(docs, "Deployment")["driftline-console"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["console"]
    env = m.container_env(docs, container)
    assert env["DRIFTLINE_CONSOLE_EDITOR_TOKEN"].source == "secret"
    assert set(json.loads(env["DRIFTLINE_HEALTH_URLS"].value or "{}")) == set(SERVICE_SETTINGS)
    policies = m.by_name(docs, "NetworkPolicy")
    console_peer = {"app.kubernetes.io/name": "driftline", "app.kubernetes.io/component": "console"}
    peers = [
        peer.get("podSelector", {}) for peer in policies["driftline"]["spec"]["ingress"][0]["from"]
    ]
    assert {"matchLabels": console_peer} in peers
