"""The plain manifests of k8s/ (kustomize base and dev overlay) and their agreement with shared/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from shared.settings import SERVICE_SETTINGS
from tests.deploy import manifests as m
from tests.deploy.conftest import KUSTOMIZATIONS

Load = Callable[[Path], list[m.Manifest]]


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
    assert sorted(components) == sorted(m.COMPONENT_SETTINGS)
    for service, cls in m.COMPONENT_SETTINGS.items():
        (deployment,) = [d for d, c in m.workloads(docs) if m.component_of(c) == service]
        env = m.container_env(docs, deployment["spec"]["template"]["spec"]["containers"][0])
        default = cls.model_fields["web_port"].default
        assert env[f"DRIFTLINE_{service.upper()}_WEB_PORT"].value == str(default)
    m.check_topics(docs)
    m.check_autoscalers(docs)
    m.check_disruption_budgets(docs)
    m.check_network_policy(docs)
    m.check_service_monitor(docs)
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
