"""The Helm chart: lint, rendering of every ci/ scenario, and agreement with shared/."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import typing
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from shared import access
from shared.settings import (
    SERVICE_SETTINGS,
    ConsoleSettings,
    DriftlineSettings,
    GatewaySettings,
    RetrainSettings,
    env_variables,
)
from shared.specs import Spec, read_specs
from shared.topics import ALL_TOPICS
from tests.deploy import manifests as m
from tests.deploy.conftest import CHART, KUBE_VERSION, ROOT, SCENARIOS, helm_template, run, tool

Load = Callable[[Path], list[m.Manifest]]
ALERT_RULES = ROOT / "deploy" / "prometheus" / "rules" / "driftline-alerts.yml"


def test_there_are_scenarios() -> None:
    assert "default-values.yaml" in SCENARIOS and len(SCENARIOS) >= 3


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_chart_lints(scenario: str) -> None:
    run(
        [
            tool("helm"),
            "lint",
            "--strict",
            "--kube-version",
            KUBE_VERSION,
            CHART,
            "--values",
            CHART / "ci" / scenario,
        ]
    )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_workloads_have_settings_secrets_probes_and_a_writable_data_dir(
    scenario: str, helm_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(helm_renderings[scenario])
    m.check_settings_names(docs)
    m.check_custom_kinds(docs)
    m.check_no_dev_key(docs)
    for workload, container in m.workloads(docs):
        m.check_workload(docs, workload, container)
    services = [
        m.check_worker(docs, d, c) for d, c in m.workloads(docs) if d["kind"] == "Deployment"
    ]
    values = yaml.safe_load((CHART / "ci" / scenario).read_text()) or {}
    disabled = {s for s, v in values.get("services", {}).items() if v.get("enabled") is False}
    retrain = {m.RETRAIN} if values.get("retrainJob", {}).get("enabled") else set()
    console = {m.CONSOLE} if values.get("console", {}).get("enabled") else set()
    gateway = {m.GATEWAY} if values.get("gateway", {}).get("enabled", True) else set()
    expected = set(SERVICE_SETTINGS) - disabled | retrain | console | gateway
    assert sorted(services) == sorted(expected)
    if retrain:
        m.check_retrain_job(docs)
    if gateway:
        m.check_gateway(docs)
    m.check_autoscalers(docs)
    m.check_scaled_objects(docs)
    m.check_disruption_budgets(docs)
    if m.of_kind(docs, "NetworkPolicy"):
        m.check_network_policy(docs)
    if m.of_kind(docs, "ServiceMonitor"):
        m.check_service_monitor(docs)
    if m.of_kind(docs, "PrometheusRule"):
        m.check_prometheus_rule(docs, ALERT_RULES)
    if m.of_kind(docs, "KafkaTopic"):
        m.check_topics(docs)


def test_defaults_make_topics_with_the_job_and_keep_the_hmac_secret(
    helm_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(helm_renderings["default-values.yaml"])
    (job,) = m.of_kind(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "serviceAccountName" not in job["spec"]["template"]["spec"], "made after pre hooks"
    env = m.container_env(docs, job["spec"]["template"]["spec"]["containers"][0])
    assert all(variable.source != "configmap" for variable in env.values()), "made after hooks"
    (secret,) = m.of_kind(docs, "Secret")
    assert set(secret["data"]) == {"snapshot-key", "webhook-key", "state-key"}
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    autoscaled = len(m.of_kind(docs, "HorizontalPodAutoscaler"))
    assert len(m.of_kind(docs, "Deployment")) == autoscaled + 1  # the gateway: no HPA
    assert m.of_kind(docs, "NetworkPolicy") and not m.of_kind(docs, "KafkaTopic")
    assert not m.of_kind(docs, "PrometheusRule"), "opt-in: its CRD may be missing"
    assert not [c for _, c in m.workloads(docs) if m.component_of(c) == m.RETRAIN], "opt-in"
    assert not [s for s in m.of_kind(docs, "Service") if s["metadata"]["name"].endswith("retrain")]


def _drift_webhook_urls(docs: list[m.Manifest]) -> list[str]:
    (container,) = [c for _, c in m.workloads(docs) if m.service_of(c) == "drift"]
    return json.loads(m.container_env(docs, container)["DRIFTLINE_DRIFT_WEBHOOK_URLS"].value or "")


def test_retrain_job_runs_retrain_serve_with_its_settings_and_takes_the_drift_webhook(
    helm_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(helm_renderings["retrain-job-values.yaml"])
    deployment = m.by_name(docs, "Deployment")["driftline-retrain"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["retrain", "serve"]
    env = m.container_env(docs, container)
    own = {name: v.value for name, v in env.items() if name.startswith("DRIFTLINE_RETRAIN_")}
    assert own == {
        "DRIFTLINE_RETRAIN_WEB_PORT": "6067",
        "DRIFTLINE_RETRAIN_RETRY_EVERY_S": "120",
        "DRIFTLINE_RETRAIN_RETRY_FOR_S": "7200",
    }
    assert set(own) <= set(env_variables())
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi"}
    service = m.by_name(docs, "Service")["driftline-retrain"]
    assert service["spec"]["ports"][0]["port"] == 6067
    assert _drift_webhook_urls(docs) == ["http://driftline-retrain:6067/retrain"]
    policies = [p for p in m.of_kind(docs, "NetworkPolicy") if not m.is_helm_test(p)]
    assert {p["metadata"]["name"] for p in policies} == {
        "driftline", "driftline-retrain", "driftline-drift-to-retrain", "driftline-gateway"
    }  # fmt: skip


def test_specs_in_values_are_applied_by_a_hook_as_the_files_of_deploy_specs_are(
    helm_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(helm_renderings["specs-values.yaml"])
    rendered = m.check_specs_job(docs)
    [job] = [j for j in m.of_kind(docs, "Job") if m.name_of(j).endswith("-specs")]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][3:] == ["--prune", "--yes"]
    examples = read_specs([ROOT / "deploy" / "specs"])
    loans = [s for s in rendered if s.record.name == "loans"]
    assert sorted(_as_written(s) for s in rendered if s not in loans) == sorted(
        _as_written(s) for s in examples
    )
    assert [s.kind for s in loans] == ["Deployment"]


def _as_written(spec: Spec) -> tuple[str, str]:
    return spec.kind, spec.record.model_dump_json(exclude={"updated_at"})


def test_kafka_and_mlflow_ports_are_open_only_towards_the_peers_of_the_values() -> None:
    kafka = [{"podSelector": {"matchLabels": {"app": "kafka"}}}]
    mlflow = [{"namespaceSelector": {"matchLabels": {"team": "ml"}}}]
    docs = m.load_all(
        helm_template(
            "--set-json", f"networkPolicy.kafkaTo={json.dumps(kafka)}",
            "--set-json", f"networkPolicy.mlflowTo={json.dumps(mlflow)}",
            "--set-json", "networkPolicy.egressPorts=[]",
        )
    )  # fmt: skip
    [policy] = [p for p in m.of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == "driftline"]
    to = {
        tuple(p["port"] for p in rule["ports"]): rule.get("to") for rule in policy["spec"]["egress"]
    }
    assert to == {(53, 53): to[(53, 53)], (9092, 9093): kafka, (5000, 443): mlflow}


def test_the_retrain_url_joins_the_drift_webhook_urls_of_the_values(
    helm_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(helm_renderings["strimzi-sasl-values.yaml"])
    assert _drift_webhook_urls(docs) == [
        "https://ci.example.internal/hooks/retrain",
        "http://driftline-retrain:6067/retrain",
    ]
    as_json = m.load_all(
        helm_template(
            "--set", "retrainJob.enabled=true,retrainJob.port=7000,fullnameOverride=dl",
            "--set-string", 'services.drift.settings.webhookUrls=["https://ci/hook"]',
        )
    )  # fmt: skip
    assert _drift_webhook_urls(as_json) == ["https://ci/hook", "http://dl-retrain:7000/retrain"]
    m.check_retrain_job(as_json)


def kafka_users(docs: list[m.Manifest]) -> dict[str, list[dict[str, typing.Any]]]:
    """Each rendered KafkaUser's ACLs by the principal it is for."""
    users = {}
    for user in m.of_kind(docs, "KafkaUser"):
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert user["spec"]["authorization"]["type"] == "simple"
        users[user["metadata"]["annotations"]["driftline.io/principal"]] = user
    return users


@pytest.mark.parametrize("prefix", ["prod.", ""])
def test_the_kafka_users_are_the_access_declaration(prefix: str) -> None:
    docs = m.load_all(
        helm_template(
            "--set", "strimzi.user.enabled=true,strimzi.topics.enabled=true",
            "--set", "topicsJob.enabled=false,kafka.securityProtocol=SASL_SSL",
            "--set", f"topics.prefix={prefix}",
        )
    )  # fmt: skip
    users = kafka_users(docs)
    assert {name: user["spec"]["authorization"]["acls"] for name, user in users.items()} == {
        p.name: [acl.strimzi() for acl in access.acls(p, prefix)] for p in access.PRINCIPALS
    }
    assert all(user["metadata"]["name"] == f"driftline-{name}" for name, user in users.items())


def test_strimzi_scenario_runs_each_workload_as_its_own_user(
    helm_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(helm_renderings["strimzi-sasl-values.yaml"])
    assert len(m.of_kind(docs, "KafkaTopic")) == len(ALL_TOPICS)
    assert not m.of_kind(docs, "Job")
    users = {user["metadata"]["name"] for user in m.of_kind(docs, "KafkaUser")}
    assert "DRIFTLINE_KAFKA_SASL_USERNAME" not in m.settings_configmap(docs)
    ran = set()
    for _, container in m.workloads(docs):
        env = m.container_env(docs, container)
        principal = m.component_of(container)
        ran.add(principal)
        assert env["DRIFTLINE_KAFKA_SASL_USERNAME"].value == f"driftline-prod-{principal}"
        assert env["DRIFTLINE_KAFKA_SASL_USERNAME"].value in users
        assert env["DRIFTLINE_KAFKA_SASL_PASSWORD"].source == "secret"
    assert ran == {*SERVICE_SETTINGS, "retrain", "gateway"}


def test_whole_numbers_of_values_files_reach_the_settings_without_an_exponent() -> None:
    """Values files give numbers as floats; 1000000 must not become "1e+06", which an integer
    setting refuses."""
    docs = m.load_all(
        helm_template(
            "--set", "retrainJob.enabled=true",
            "--set-json", 'services.ingestion.settings={"maxEventBytes": 1000000}',
            "--set-json", 'retrainJob.settings={"retryForS": 1000000, "retryEveryS": 0.5}',
        )
    )  # fmt: skip
    env = {
        name: variable.value
        for _, container in m.workloads(docs)
        for name, variable in m.container_env(docs, container).items()
    }
    assert env["DRIFTLINE_INGESTION_MAX_EVENT_BYTES"] == "1000000"
    assert env["DRIFTLINE_RETRAIN_RETRY_FOR_S"] == "1000000"
    assert env["DRIFTLINE_RETRAIN_RETRY_EVERY_S"] == "0.5"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("kafka.securityProtocol=SASL_SSL", "kafka.sasl.username"),
        ("strimzi.user.enabled=true,topicsJob.enabled=false", "SASL_PLAINTEXT or SASL_SSL"),
        ("topics.prefix=bad/prefix", "/topics/prefix"),
        ("kafka.securityProtocol=TLS", "/kafka/securityProtocol"),
        ("services.scorer.enabled=true", "'scorer' not allowed"),
        ("topics.partitions=0", "/topics/partitions"),
        ("retrainJob.enabled=yes", "/retrainJob/enabled"),
        ("retrainJob.replicas=2", "/retrainJob/replicas"),
        ("retrainJob.port=0", "/retrainJob/port"),
        ("retrainJob.trainer=x", "'trainer' not allowed"),
        ("gateway.enabled=yes", "/gateway/enabled"),
        ("gateway.port=0", "/gateway/port"),
        ("mlflow.existingSecret=", "mlflow.existingSecret: name the Secret"),
        ("keda.enabled=true,kafka.securityProtocol=SSL", "keda.authenticationRef"),
        ("keda.lagThreshold=0", "/keda/lagThreshold"),
        ("prometheusRule.enabled=yes", "/prometheusRule/enabled"),
        ("mlflow.allowAnonymous=yes", "/mlflow/allowAnonymous"),
        (
            "strimzi.user.enabled=true,kafka.securityProtocol=SASL_SSL,strimzi.topics.enabled=true",
            "topicsJob.enabled=false",
        ),
    ],
)
def test_values_that_cannot_work_stop_the_rendering(settings: str, message: str) -> None:
    done = subprocess.run(
        [str(tool("helm")), "template", "x", str(CHART), "--set", settings],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0 and message in done.stderr, done.stderr


def test_service_settings_in_values_are_settings_of_shared() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    scenario_values = [yaml.safe_load(p.read_text()) or {} for p in (CHART / "ci").glob("*.yaml")]
    known = set(env_variables())
    assert set(values["services"]) == set(SERVICE_SETTINGS)
    for service, cls in SERVICE_SETTINGS.items():
        assert values["services"][service]["port"] == cls.model_fields["web_port"].default
        for source in [values, *scenario_values]:
            for key in source.get("services", {}).get(service, {}).get("settings", {}):
                snake = re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()
                assert f"DRIFTLINE_{service.upper()}_{snake}" in known, f"{service}: {key}"
    assert values["retrainJob"]["port"] == RetrainSettings.model_fields["web_port"].default
    assert values["console"]["port"] == ConsoleSettings.model_fields["web_port"].default
    for source in [values, *scenario_values]:
        for key in source.get("console", {}).get("settings", {}):
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()
            assert f"DRIFTLINE_CONSOLE_{snake}" in known, f"console: {key}"
    for source in [values, *scenario_values]:
        for key in source.get("retrainJob", {}).get("settings", {}):
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()
            assert f"DRIFTLINE_RETRAIN_{snake}" in known, f"retrainJob: {key}"
    assert values["gateway"]["port"] == GatewaySettings.model_fields["web_port"].default
    for source in [values, *scenario_values]:
        for key in source.get("gateway", {}).get("settings", {}):
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()
            assert f"DRIFTLINE_GATEWAY_{snake}" in known, f"gateway: {key}"


def test_every_value_is_documented() -> None:
    """Every leaf of values.yaml has a ``# --`` comment on itself or on a parent key."""
    undocumented = []
    documented_at: list[tuple[int, bool]] = []
    comment = False
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = True
            continue
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        indent = len(line) - len(line.lstrip())
        while documented_at and documented_at[-1][0] >= indent:
            documented_at.pop()
        inherited = any(flag for _, flag in documented_at)
        key, _, rest = stripped.partition(":")
        if rest.strip() and not comment and not inherited:
            undocumented.append(key)
        documented_at.append((indent, comment or inherited))
        comment = False
    assert not undocumented, f"values without a `# --` comment: {undocumented}"


def test_keda_scales_on_consumer_lag_instead_of_cpu(
    helm_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(helm_renderings["keda-values.yaml"])
    scaled = m.by_name(docs, "ScaledObject")
    assert set(scaled) == {f"driftline-{s}" for s in SERVICE_SETTINGS if s != "learner"}
    trigger = scaled["driftline-router"]["spec"]["triggers"][0]["metadata"]
    assert trigger["consumerGroup"] == "staging.driftline-router"
    assert trigger["lagThreshold"] == "500"
    assert "replicas" in m.by_name(docs, "Deployment")["driftline-learner"]["spec"]
    secured = m.load_all(
        helm_template(
            "--set", "keda.enabled=true,keda.authenticationRef=kafka-scram",
            "--set", "kafka.securityProtocol=SSL",
        )
    )  # fmt: skip
    for scaled_object in m.of_kind(secured, "ScaledObject"):
        assert scaled_object["spec"]["triggers"][0]["authenticationRef"] == {"name": "kafka-scram"}


def test_chart_alert_rules_are_the_ones_in_deploy() -> None:
    chart_copy = CHART / "files" / "driftline-alerts.yml"
    assert chart_copy.read_bytes() == ALERT_RULES.read_bytes(), (
        "helm/driftline/files/driftline-alerts.yml differs from deploy/prometheus/rules/: "
        "cp deploy/prometheus/rules/driftline-alerts.yml helm/driftline/files/"
    )


def test_prometheus_rule_carries_the_alert_rules(
    helm_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(helm_renderings["strimzi-sasl-values.yaml"])
    m.check_prometheus_rule(docs, ALERT_RULES)
    (rule,) = m.of_kind(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_chart_dashboard_is_the_one_in_deploy() -> None:
    chart_copy = CHART / "files" / "driftline-dashboard.json"
    source = ROOT / "deploy" / "grafana" / "driftline-dashboard.json"
    assert chart_copy.read_bytes() == source.read_bytes(), (
        "helm/driftline/files/driftline-dashboard.json differs from deploy/grafana/: "
        "cp deploy/grafana/driftline-dashboard.json helm/driftline/files/"
    )


def test_dashboard_configmap_carries_the_dashboard(
    helm_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(helm_renderings["default-values.yaml"])
    (dashboard,) = [
        cm for cm in m.of_kind(docs, "ConfigMap") if "grafana_dashboard" in cm["metadata"]["labels"]
    ]
    text = (ROOT / "deploy" / "grafana" / "driftline-dashboard.json").read_text()
    assert dashboard["data"]["driftline-dashboard.json"] == text.rstrip("\n")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_notes_render(scenario: str, tmp_path: Path) -> None:
    """NOTES.txt renders for every scenario (`helm template` skips it, so it is rendered as a
    template of a copy of the chart)."""
    chart = tmp_path / "driftline"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes.tpl").write_text('{{- define "notes" -}}' + notes + "{{- end }}")
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "notes" . | quote }}\n'
    )
    out = run(
        [
            tool("helm"),
            "template",
            "driftline",
            chart,
            "--kube-version",
            KUBE_VERSION,
            "--show-only",
            "templates/notes.yaml",
            "--values",
            CHART / "ci" / scenario,
        ]
    )
    text = yaml.safe_load(out)["data"]["notes"]
    assert "Driftline" in text and "kubectl" in text


def test_values_schema_follows_shared_settings() -> None:
    """values.schema.json allows exactly the services and choices shared/settings.py has."""
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    assert set(schema["services"]["properties"]) == set(SERVICE_SETTINGS)
    fields = DriftlineSettings.model_fields
    choices = {
        ("kafka", "securityProtocol"): "kafka_security_protocol",
        ("settings", "processingGuarantee"): "processing_guarantee",
        ("settings", "logLevel"): "log_level",
        ("settings", "logFormat"): "log_format",
    }
    for (group, key), field in choices.items():
        allowed = set(typing.get_args(fields[field].annotation))
        assert set(schema[group]["properties"][key]["enum"]) == allowed, f"{group}.{key}"
    mechanism = schema["kafka"]["properties"]["sasl"]["properties"]["mechanism"]["enum"]
    assert set(mechanism) == set(typing.get_args(fields["kafka_sasl_mechanism"].annotation))


def test_extra_env_volumes_priority_and_digest_reach_every_pod(
    helm_renderings: dict[str, Path], load: Load
) -> None:
    docs = load(helm_renderings["extras-values.yaml"])
    digest = "sha256:" + "0123456789abcdef" * 4
    pods = [(d["spec"]["template"]["spec"], d) for d, _ in m.workloads(docs)]
    pods += [(p["spec"], p) for p in m.of_kind(docs, "Pod")]
    assert len(pods) == len(SERVICE_SETTINGS) + 4  # + retrain job, gateway, topics Job, test pod
    for pod, doc in pods:
        (container,) = pod["containers"]
        assert container["image"] == f"registry.example.internal/driftline@{digest}", m.name_of(doc)
    for workload, container in m.workloads(docs):
        pod = workload["spec"]["template"]["spec"]
        router = m.component_of(container) == "router"
        own = ["OMP_NUM_THREADS"] if m.component_of(container) in ("router", "retrain") else []
        names = [e["name"] for e in container["env"]]
        assert names[-1 - len(own) :] == ["HTTPS_PROXY", *own], m.name_of(workload)
        volumes = [v["name"] for v in pod["volumes"]]
        mounts = {v["name"]: v["mountPath"] for v in container["volumeMounts"]}
        assert volumes[-2 if router else -1 :] == [
            "corporate-ca",
            *(["models-cache"] if router else []),
        ]
        assert mounts["corporate-ca"] == "/etc/ssl/corporate"
        assert ("models-cache" in mounts) == router
        expected = "driftline-critical" if router else "driftline-workers"
        assert pod["priorityClassName"] == expected, m.name_of(workload)
    (retrain,) = [c for _, c in m.workloads(docs) if m.component_of(c) == m.RETRAIN]
    assert {"name": "OMP_NUM_THREADS", "value": "2"} in retrain["env"]
    default = load(helm_renderings["default-values.yaml"])
    for workload, container in m.workloads(default):
        assert "priorityClassName" not in workload["spec"]["template"]["spec"]
        assert container["image"] == "driftline:0.1.0"


def test_helm_test_pod_asks_every_running_component(
    helm_renderings: dict[str, Path], load: Load
) -> None:
    for scenario, fullname in (
        ("extras-values.yaml", "driftline"),
        ("existing-secrets-values.yaml", "dl"),
    ):
        docs = load(helm_renderings[scenario])
        (pod,) = m.of_kind(docs, "Pod")
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        (container,) = pod["spec"]["containers"]
        assert container["command"] == ["python", "/opt/driftline/healthcheck.py"]
        ports = {
            m.component_of(c): c["ports"][0]["containerPort"]
            for d, c in m.workloads(docs)
            if d["kind"] == "Deployment"
        }
        assert sorted(container["args"]) == sorted(
            f"http://{fullname}-{component}:{port}/health" for component, port in ports.items()
        )
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    docs = load(helm_renderings["extras-values.yaml"])
    tests = [p for p in m.of_kind(docs, "NetworkPolicy") if m.is_helm_test(p)]
    assert {p["metadata"]["annotations"]["helm.sh/hook-weight"] for p in tests} == {"-1"}
    assert not [
        p for p in m.of_kind(load(helm_renderings["existing-secrets-values.yaml"]), "NetworkPolicy")
    ]
    assert not m.of_kind(m.load_all(helm_template("--set", "helmTest.enabled=false")), "Pod")


def _hmac_secret(*args: str) -> dict[str, str]:
    (secret,) = m.of_kind(m.load_all(helm_template(*args)), "Secret")
    return secret["data"]


def test_hmac_keys_are_stable_across_renderings_or_the_rendering_stops() -> None:
    """Without cluster access (`helm template`, Argo CD) the chart cannot look its Secret up: given
    keys render the same Secret every time; with neither keys nor existingSecret it stops."""
    first, second = _hmac_secret(), _hmac_secret()
    assert first == second
    assert base64.b64decode(first["snapshot-key"]).decode().startswith("test-snapshot-key")
    chart_only = [str(tool("helm")), "template", "x", str(CHART), "--set",
                  "mlflow.existingSecret=m"]  # fmt: skip
    done = subprocess.run(chart_only, capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "cannot see the cluster" in done.stderr, done.stderr
    assert "hmac.existingSecret" in done.stderr
    partial = subprocess.run(
        [*chart_only, "--set", "hmac.keys.snapshot=" + "k" * 32],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert partial.returncode != 0 and "set all three" in partial.stderr, partial.stderr
    short = subprocess.run(
        [*chart_only, "--set", "hmac.keys.snapshot=short,hmac.keys.webhook=a,hmac.keys.state=b"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert short.returncode != 0 and "/hmac/keys" in short.stderr, short.stderr
    existing = m.load_all(run([*chart_only, "--set", "hmac.existingSecret=keys"]))
    assert not m.of_kind(existing, "Secret")
