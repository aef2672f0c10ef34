"""Checks shared by the Helm chart and the plain manifests: what a rendered Driftline must hold so
that it agrees with ``shared/`` (topics, settings, web ports) and with the issue's rules (probes,
resources, security context, a writable data directory, Secrets for secrets).

Each check takes the parsed documents of one rendering and raises AssertionError naming the
resource and what is wrong.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import yaml

from shared.settings import (
    INSECURE_DEV_KEY,
    SERVICE_SETTINGS,
    GatewaySettings,
    RetrainSettings,
    ServiceSettings,
    env_variables,
)
from shared.topics import ALL_TOPICS

if TYPE_CHECKING:
    from shared.specs import Spec

Manifest = dict[str, Any]

RETRAIN = "retrain"
CONSOLE = "console"
"""The operator console's component name: ``args: [console]``."""
"""The webhook-triggered retrain job's component name: ``args: [retrain, serve]``."""
GATEWAY = "gateway"
"""The V2 inference gateway's component name: ``args: [gateway]``."""
COMPONENT_SETTINGS: dict[str, type[ServiceSettings]] = {
    **SERVICE_SETTINGS,
    RETRAIN: RetrainSettings,
    GATEWAY: GatewaySettings,
}
"""Settings of every long-running component (the services' workers, the retrain job and the
gateway)."""

TOPIC_SETTINGS = (
    "DRIFTLINE_KAFKA_BROKER",
    "DRIFTLINE_TOPIC_PREFIX",
    "DRIFTLINE_TOPIC_PARTITIONS",
    "DRIFTLINE_TOPIC_REPLICATION_FACTOR",
)
"""Settings `driftline topics create` needs."""
REQUIRED_SETTINGS = (
    *TOPIC_SETTINGS,
    "DRIFTLINE_STORE",
    "DRIFTLINE_MLFLOW_TRACKING_URI",
    "DRIFTLINE_SNAPSHOT_HMAC_KEY",
    "DRIFTLINE_WEBHOOK_HMAC_KEY",
    "DRIFTLINE_STATE_HMAC_KEY",
    "DRIFTLINE_DATA_DIR",
    "DRIFTLINE_WEB_HOST",
)
"""Settings every worker must be given explicitly."""
SECRET_SETTINGS = (
    "DRIFTLINE_SNAPSHOT_HMAC_KEY",
    "DRIFTLINE_WEBHOOK_HMAC_KEY",
    "DRIFTLINE_STATE_HMAC_KEY",
    "DRIFTLINE_KAFKA_SASL_PASSWORD",
)
"""Settings that may only come from a Secret, never from a literal or a ConfigMap."""
CUSTOM_KINDS = {
    ("kafka.strimzi.io/v1", "KafkaTopic"),
    ("kafka.strimzi.io/v1", "KafkaUser"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
"""Custom resources: no Kubernetes schema covers them, so their shape is checked here."""


def load_all(text: str) -> list[Manifest]:
    """The non-empty documents of a multi-document YAML text."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    """Documents of one kind."""
    return [doc for doc in docs if doc["kind"] == kind]


def by_name(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    """Documents of one kind, by name."""
    return {doc["metadata"]["name"]: doc for doc in of_kind(docs, kind)}


def is_helm_test(doc: Manifest) -> bool:
    """Whether a resource belongs to `helm test` (made when it runs, not at install)."""
    return doc["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"


def name_of(doc: Manifest) -> str:
    """``Kind/name`` for messages."""
    return f"{doc['kind']}/{doc['metadata']['name']}"


@dataclass(frozen=True)
class Variable:
    """One environment variable of a container and where its value comes from."""

    name: str
    value: str | None
    source: str
    """``literal``, ``configmap`` or ``secret``."""


def container_env(docs: list[Manifest], container: Manifest) -> dict[str, Variable]:
    """A container's variables, with envFrom ConfigMaps resolved from the same rendering."""
    configmaps = by_name(docs, "ConfigMap")
    variables: dict[str, Variable] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"envFrom only takes ConfigMaps here, got {source}"
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"container {container['name']}: no ConfigMap {name}"
        for key, value in configmaps[name]["data"].items():
            variables[key] = Variable(key, str(value), "configmap")
    for entry in container.get("env", []):
        if "value" in entry:
            variables[entry["name"]] = Variable(entry["name"], str(entry["value"]), "literal")
        else:
            assert "secretKeyRef" in entry["valueFrom"], f"{entry['name']}: unexpected source"
            variables[entry["name"]] = Variable(entry["name"], None, "secret")
    return variables


def workloads(docs: list[Manifest]) -> list[tuple[Manifest, Manifest]]:
    """(Deployment or Job, its one container) for every Driftline workload."""
    found = []
    for doc in of_kind(docs, "Deployment") + of_kind(docs, "Job"):
        containers = doc["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1, f"{name_of(doc)}: expected one container"
        found.append((doc, containers[0]))
    return found


def component_of(container: Manifest) -> str | None:
    """The long-running component a container runs: a service's worker (``args: [<service>,
    worker]``), the retrain job (``[retrain, serve]``), the console (``[console]``) or the
    gateway (``[gateway]``); None for the one-shot Jobs, ``topics create`` and ``apply --file
    <specs>``."""
    args = container.get("args", [])
    if len(args) == 2 and args[1] == "worker":
        assert args[0] in SERVICE_SETTINGS, f"unknown service in args {args}"
        return args[0]
    if args == [RETRAIN, "serve"]:
        return RETRAIN
    if args in ([CONSOLE], [GATEWAY]):
        return args[0]
    assert args == ["topics", "create"] or args[:2] == ["apply", "--file"], (
        f"a container runs neither a worker, the retrain job, the console, the gateway, topics"
        f" nor apply: {args}"
    )
    return None


def service_of(container: Manifest) -> str | None:
    """The service a worker container runs (``args: [<service>, worker]``), else None."""
    component = component_of(container)
    return component if component in SERVICE_SETTINGS else None


def selects(selector: Manifest, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) selects these labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "Exists":
            matched = key in labels
        elif operator == "DoesNotExist":
            matched = key not in labels
        else:
            assert operator in ("In", "NotIn"), f"unknown operator {operator}"
            matched = (labels.get(key) in expression["values"]) == (operator == "In")
        if not matched:
            return False
    return True


def pod_labels(workload: Manifest) -> dict[str, str]:
    """The labels of a workload's pods."""
    return workload["spec"]["template"]["metadata"]["labels"]


def settings_configmap(docs: list[Manifest]) -> dict[str, str]:
    """The data of the ConfigMap that holds the common settings."""
    found = [
        cm["data"] for cm in of_kind(docs, "ConfigMap") if "DRIFTLINE_KAFKA_BROKER" in cm["data"]
    ]
    assert len(found) == 1, f"expected one settings ConfigMap, found {len(found)}"
    return {key: str(value) for key, value in found[0].items()}


def check_settings_names(docs: list[Manifest]) -> None:
    """Every DRIFTLINE_* name given to a container is a setting of shared/settings.py."""
    known = set(env_variables())
    for workload, container in workloads(docs):
        for name in container_env(docs, container):
            if not name.startswith("DRIFTLINE_"):
                continue  # the library's own (MLflow's) and the values' extraEnv (a proxy)
            assert name in known, (
                f"{name_of(workload)} sets {name}, which shared/settings.py does not read"
            )


def check_workload(docs: list[Manifest], workload: Manifest, container: Manifest) -> None:
    """Settings, Secrets, data directory and security of one Driftline workload."""
    where = name_of(workload)
    env = container_env(docs, container)
    worker = component_of(container) is not None
    for name in REQUIRED_SETTINGS if worker else TOPIC_SETTINGS:
        assert name in env, f"{where}: {name} is not set"
    for name in SECRET_SETTINGS:
        if name in env:
            assert env[name].source == "secret", f"{where}: {name} must come from a Secret"
    assert env["DRIFTLINE_WEB_HOST"].value == "0.0.0.0", f"{where}: workers must listen on all"
    protocol = env.get("DRIFTLINE_KAFKA_SECURITY_PROTOCOL")
    if protocol is not None and protocol.value and protocol.value.startswith("SASL_"):
        assert "DRIFTLINE_KAFKA_SASL_USERNAME" in env, f"{where}: SASL without a user name"
        assert "DRIFTLINE_KAFKA_SASL_PASSWORD" in env, f"{where}: SASL without a password"

    pod = workload["spec"]["template"]["spec"]
    assert pod.get("automountServiceAccountToken") is False, f"{where}: mounts an API token"
    assert pod["securityContext"].get("runAsNonRoot") is True, f"{where}: may run as root"
    security = container["securityContext"]
    assert security.get("readOnlyRootFilesystem") is True, f"{where}: writable root filesystem"
    assert security.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation"
    assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: keeps capabilities"
    resources = container.get("resources", {})
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(part, {})), f"{where}: no {part}"

    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
    for path in (env["DRIFTLINE_DATA_DIR"].value, "/tmp"):
        assert path in mounts, f"{where}: {path} is not on a writable volume"
        assert "emptyDir" in volumes[mounts[path]], f"{where}: {path} should be an emptyDir"
    cafile = env.get("DRIFTLINE_KAFKA_SSL_CAFILE")
    if cafile is not None:
        assert any(cafile.value.startswith(path + "/") for path in mounts), (
            f"{where}: the CA file {cafile.value} is on no mounted volume"
        )


def check_worker(docs: list[Manifest], deployment: Manifest, container: Manifest) -> str:
    """A long-running component's Deployment (a service's worker or the retrain job): its web
    port, start-up and readiness probes on /health, liveness on /live, and its Service; returns
    the component's name."""
    where = name_of(deployment)
    service = component_of(container)
    assert service is not None, f"{where} runs no worker"
    env = container_env(docs, container)
    port_setting = f"DRIFTLINE_{service.upper()}_WEB_PORT"
    assert port_setting in env, f"{where}: {port_setting} is not set"
    port = int(env[port_setting].value or 0)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports.get("http") == port, f"{where}: containerPort http is not {port_setting}={port}"
    paths = {"startupProbe": "/health", "readinessProbe": "/health", "livenessProbe": "/live"}
    for probe, path in paths.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{where}: {probe} does not ask {path}"
        assert get["port"] in ("http", port), f"{where}: {probe} asks another port"

    labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [
        svc for svc in of_kind(docs, "Service") if svc["spec"]["selector"].items() <= labels.items()
    ]
    assert len(services) == 1, f"{where}: {len(services)} Services select its pods"
    assert [p["targetPort"] for p in services[0]["spec"]["ports"]] == ["http"]
    return service


def check_topics(docs: list[Manifest]) -> None:
    """One KafkaTopic per topic of shared/topics.py, with the partitions, replication and
    cleanup policy that shared/ and the settings ConfigMap give."""
    settings = settings_configmap(docs)
    prefix = settings["DRIFTLINE_TOPIC_PREFIX"]
    partitions = int(settings["DRIFTLINE_TOPIC_PARTITIONS"])
    replicas = int(settings["DRIFTLINE_TOPIC_REPLICATION_FACTOR"])
    kafka_topics = {doc["spec"]["topicName"]: doc for doc in of_kind(docs, "KafkaTopic")}
    expected_names = {prefix + topic.name for topic in ALL_TOPICS}
    assert set(kafka_topics) == expected_names, (
        f"KafkaTopics differ from shared/topics.py: missing {expected_names - set(kafka_topics)}, "
        f"unknown {set(kafka_topics) - expected_names} (the chart's list is driftline.topics in "
        "helm/driftline/templates/_helpers.tpl; the plain one is k8s/base/topics.yaml)"
    )
    for topic in ALL_TOPICS:
        doc = kafka_topics[prefix + topic.name]
        where = name_of(doc)
        assert doc["apiVersion"] == "kafka.strimzi.io/v1", f"{where}: apiVersion"
        assert doc["metadata"]["labels"].get("strimzi.io/cluster"), f"{where}: no cluster label"
        spec = doc["spec"]
        assert set(spec) == {"topicName", "partitions", "replicas", "config"}, f"{where}: {spec}"
        expected = 1 if topic.single_partition else partitions
        assert spec["partitions"] == expected, f"{where}: partitions {spec['partitions']}"
        assert spec["replicas"] == replicas, f"{where}: replicas {spec['replicas']}"
        config = {key: str(value) for key, value in spec["config"].items()}
        assert config == topic.config(), f"{where}: config {config} != {topic.config()}"


def check_autoscalers(docs: list[Manifest]) -> None:
    """Each HPA scales a Deployment of the rendering, within the partition count (replicas
    above it sit idle), and a PDB covers the same pods."""
    partitions = int(settings_configmap(docs)["DRIFTLINE_TOPIC_PARTITIONS"])
    deployments = by_name(docs, "Deployment")
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        where = name_of(hpa)
        target = hpa["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deployments, where
        assert "replicas" not in deployments[target["name"]]["spec"], (
            f"{where}: the Deployment sets replicas too; every apply would reset the HPA"
        )
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= partitions, (
            f"{where}: replicas must stay within 1..{partitions} partitions"
        )


def check_scaled_objects(docs: list[Manifest]) -> None:
    """Each KEDA ScaledObject scales a Deployment with no replicas of its own, within the
    partition count, on the lag of that service's consumer group (the Faust app id), and no
    CPU HorizontalPodAutoscaler competes with it."""
    scaled_objects = of_kind(docs, "ScaledObject")
    if not scaled_objects:
        return
    settings = settings_configmap(docs)
    partitions = int(settings["DRIFTLINE_TOPIC_PARTITIONS"])
    deployments = by_name(docs, "Deployment")
    assert not of_kind(docs, "HorizontalPodAutoscaler"), "KEDA and the CPU HPA exclude each other"
    for scaled in scaled_objects:
        where = name_of(scaled)
        spec = scaled["spec"]
        target = deployments[spec["scaleTargetRef"]["name"]]
        assert "replicas" not in target["spec"], f"{where}: the Deployment sets replicas too"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions, where
        (container,) = target["spec"]["template"]["spec"]["containers"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka", where
        group = f"{settings['DRIFTLINE_TOPIC_PREFIX']}driftline-{service_of(container)}"
        assert trigger["metadata"]["consumerGroup"] == group, where
        assert trigger["metadata"]["bootstrapServers"] == settings["DRIFTLINE_KAFKA_BROKER"]


def check_disruption_budgets(docs: list[Manifest]) -> None:
    """Every PDB selects exactly one Deployment's pods and lets a drain go on."""
    deployments = of_kind(docs, "Deployment")
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [
            d
            for d in deployments
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1, f"{name_of(pdb)} selects {len(matched)} Deployments"
        assert "maxUnavailable" in pdb["spec"], (
            f"{name_of(pdb)}: with one replica, minAvailable blocks drains"
        )


def check_network_policy(docs: list[Manifest]) -> None:
    """One NetworkPolicy covers every workload, lets the metrics port in and lets the pods reach
    the Kafka bootstrap port, MLflow and DNS; any other policy covers one component's pods only
    (the retrain job's, checked by `check_retrain_job`). The ones of the `helm test` pod exist
    only while it runs (`check_helm_test` checks them)."""
    policies = [p for p in of_kind(docs, "NetworkPolicy") if not is_helm_test(p)]
    all_pods = [pod_labels(workload) for workload, _ in workloads(docs)]
    covering = [
        p for p in policies if all(selects(p["spec"]["podSelector"], pod) for pod in all_pods)
    ]
    assert len(covering) == 1, f"expected one NetworkPolicy for every pod, found {len(covering)}"
    for policy in policies:
        if policy is not covering[0]:
            components = {
                labels.get("app.kubernetes.io/component")
                for labels in all_pods
                if selects(policy["spec"]["podSelector"], labels)
            }
            assert len(components) == 1, f"{name_of(policy)} selects {components}"
    spec = covering[0]["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    assert [p["port"] for rule in spec["ingress"] for p in rule["ports"]] == ["http"]
    egress_ports = {p["port"] for rule in spec["egress"] for p in rule.get("ports", [])}
    peered_ports = {p["port"] for rule in spec["egress"] if rule.get("to") for p in rule["ports"]}
    anywhere_ports = {
        p["port"] for rule in spec["egress"] if not rule.get("to") for p in rule["ports"]
    }
    broker = settings_configmap(docs)["DRIFTLINE_KAFKA_BROKER"].removeprefix("kafka://")
    for address in broker.split(","):
        port = int(address.rsplit(":", 1)[1])
        assert port in peered_ports, f"the NetworkPolicy blocks Kafka at {address}"
        assert port not in anywhere_ports, f"the NetworkPolicy lets Kafka's port {port} anywhere"
    mlflow = urlsplit(settings_configmap(docs)["DRIFTLINE_MLFLOW_TRACKING_URI"])
    mlflow_port = mlflow.port or (443 if mlflow.scheme == "https" else 80)
    assert mlflow_port in peered_ports, f"the NetworkPolicy blocks MLflow at {mlflow.netloc}"
    if mlflow.scheme == "http":
        assert mlflow_port not in anywhere_ports, f"MLflow's port {mlflow_port} is open anywhere"
    assert 53 in egress_ports, "the NetworkPolicy blocks DNS"


def check_service_monitor(docs: list[Manifest]) -> None:
    """The ServiceMonitor scrapes /metrics on the http port of every component's Service: each
    service's and the retrain job's when it runs."""
    monitors = of_kind(docs, "ServiceMonitor")
    assert len(monitors) == 1
    spec = monitors[0]["spec"]
    assert monitors[0]["apiVersion"] == "monitoring.coreos.com/v1"
    scraped = {
        s["metadata"]["labels"].get("app.kubernetes.io/component")
        for s in of_kind(docs, "Service")
        if selects(spec["selector"], s["metadata"]["labels"])
    }
    services = {component_of(c) for _, c in workloads(docs)} - {None}
    assert scraped == services, f"the ServiceMonitor scrapes {scraped}, not the services {services}"
    assert [(e["port"], e["path"]) for e in spec["endpoints"]] == [("http", "/metrics")]
    assert spec["endpoints"][0].get("honorLabels") is True, "the metrics' service label is lost"


def check_prometheus_rule(docs: list[Manifest], rules_file: Path) -> None:
    """One PrometheusRule, whose groups are exactly those of `rules_file` (the rules file
    docker-compose's Prometheus loads and promtool checks)."""
    (rule,) = of_kind(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(rules_file.read_text()), "the chart's rules differ"
    alerts = [r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]]
    assert alerts and len(alerts) == len(set(alerts)), f"alert names: {alerts}"


def check_no_dev_key(docs: list[Manifest]) -> None:
    """No Secret holds the insecure development key."""
    for secret in of_kind(docs, "Secret"):
        values = [base64.b64decode(v).decode() for v in secret.get("data", {}).values()]
        values += list(secret.get("stringData", {}).values())
        assert INSECURE_DEV_KEY not in values, f"{name_of(secret)} holds the development key"
        assert all(len(value) >= 32 for value in values), f"{name_of(secret)}: short key"


def check_custom_kinds(docs: list[Manifest]) -> None:
    """Only the known custom resources appear (the schemas cannot check them)."""
    builtin_groups = ("v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2")
    for doc in docs:
        if doc["apiVersion"] in builtin_groups or doc["apiVersion"].startswith(
            "networking.k8s.io/"
        ):
            continue
        assert (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS, f"unchecked kind {name_of(doc)}"


def served_component(docs: list[Manifest], name: str) -> tuple[Manifest, Manifest, int]:
    """Component `name`, one that serves HTTP beside the workers (the retrain job, the gateway): its
    Deployment, reading its own settings only (``DRIFTLINE_<COMPONENT>_*``, one web port), and
    the one Service that selects its pods, on that port; with the port."""
    ((deployment, container),) = [(d, c) for d, c in workloads(docs) if component_of(c) == name]
    where = name_of(deployment)
    prefix, settings = f"DRIFTLINE_{name.upper()}_", COMPONENT_SETTINGS[name].__name__
    env = container_env(docs, container)
    known = set(env_variables())
    for name in env:
        if name.startswith(prefix):
            assert name in known, f"{where} sets {name}, which {settings} does not read"
    web_ports = [name for name in env if name.endswith("_WEB_PORT")]
    assert web_ports == [f"{prefix}WEB_PORT"], f"{where}: web ports {web_ports}"
    port = int(env[f"{prefix}WEB_PORT"].value or 0)
    labels = pod_labels(deployment)
    services = [
        s for s in of_kind(docs, "Service") if s["spec"]["selector"].items() <= labels.items()
    ]
    assert len(services) == 1, f"{where}: {len(services)} Services"
    assert [p["port"] for p in services[0]["spec"]["ports"]] == [port], name_of(services[0])
    return deployment, services[0], port


def check_retrain_job(docs: list[Manifest]) -> None:
    """The retrain job: one replica of `driftline retrain serve` with no autoscaler, its own
    settings only, a Service on its web port that the drift service's webhook URLs name, and, with
    NetworkPolicies, a way in from the drift pods only and a way out to it from them."""
    deployment, service, port = served_component(docs, RETRAIN)
    where = name_of(deployment)
    assert deployment["spec"].get("replicas") == 1, f"{where}: one retrain at a time"
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] != deployment["metadata"]["name"], where
    labels = pod_labels(deployment)
    url = f"http://{service['metadata']['name']}:{port}/retrain"
    ((drift, drift_container),) = [(d, c) for d, c in workloads(docs) if component_of(c) == "drift"]
    drift_env = container_env(docs, drift_container)
    assert "DRIFTLINE_DRIFT_WEBHOOK_URLS" in drift_env, f"{name_of(drift)}: no webhook URLs"
    urls = json.loads(drift_env["DRIFTLINE_DRIFT_WEBHOOK_URLS"].value or "[]")
    assert url in urls, f"{name_of(drift)}: DRIFTLINE_DRIFT_WEBHOOK_URLS {urls} misses {url}"

    policies = [p for p in of_kind(docs, "NetworkPolicy") if not is_helm_test(p)]
    if policies:
        check_retrain_network_policies(policies, labels, pod_labels(drift), port, docs)


def check_retrain_network_policies(
    policies: list[Manifest],
    retrain: dict[str, str],
    drift: dict[str, str],
    port: int,
    docs: list[Manifest],
) -> None:
    """The policies that select the retrain pods alone let in the drift pods only, on the job's
    port; a policy that selects the drift pods lets them reach the retrain pods on that port."""
    others = [pod_labels(d) for d, c in workloads(docs) if component_of(c) not in (None, "drift")]

    def only_drift(peer: Manifest) -> bool:
        return (
            set(peer) == {"podSelector"}
            and selects(peer["podSelector"], drift)
            and not any(selects(peer["podSelector"], other) for other in others)
        )

    ingress = [
        rule
        for policy in policies
        if selects(policy["spec"]["podSelector"], retrain)
        and not selects(policy["spec"]["podSelector"], drift)
        for rule in policy["spec"].get("ingress", [])
    ]
    assert ingress, "no NetworkPolicy lets the drift pods in to the retrain job"
    for rule in ingress:
        assert all(only_drift(peer) for peer in rule["from"]), f"retrain job: let in {rule}"
        assert {p["port"] for p in rule["ports"]} <= {"http", port}, f"retrain job: {rule}"
    egress = [
        rule
        for policy in policies
        if selects(policy["spec"]["podSelector"], drift)
        for rule in policy["spec"].get("egress", [])
        if any(
            "podSelector" in peer and selects(peer["podSelector"], retrain)
            for peer in rule.get("to", [])
        )
    ]
    assert egress, "no NetworkPolicy lets the drift pods reach the retrain job"
    for rule in egress:
        ports = {p["port"] for p in rule["ports"]}
        assert ports == {port}, f"the drift pods reach the retrain job on {ports}, not {port}"


def check_specs_job(docs: list[Manifest]) -> list[Spec]:
    """The specs Job applies, after each install and upgrade, the specs ConfigMap it mounts
    where `driftline apply --file` reads, with MLflow's credentials to check the models; the
    specs it would apply, read as `driftline apply` reads them."""
    from shared.specs import parse_specs

    [job] = [j for j in of_kind(docs, "Job") if name_of(j).endswith("-specs")]
    where = name_of(job)
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade", where
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    path = container["args"][2]
    configmap = by_name(docs, "ConfigMap")[volumes[mounts[path]]["configMap"]["name"]]
    env = container_env(docs, container)
    credentials = {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    assert credentials <= set(env), where
    assert all(env[name].source == "secret" for name in credentials), where
    return [
        spec
        for name, text in sorted(configmap["data"].items())
        for spec in parse_specs(text, f"{name_of(configmap)}/{name}")
    ]


def check_gateway(docs: list[Manifest]) -> None:
    """The V2 gateway: `driftline gateway` with its own settings only, no autoscaler or
    disruption budget of the services', a Service on its web port and, with NetworkPolicies, one
    that selects the gateway pods alone and lets its clients in on that port."""
    deployment, _, port = served_component(docs, GATEWAY)
    where = name_of(deployment)
    labels = pod_labels(deployment)
    policies = of_kind(docs, "NetworkPolicy")
    if policies:
        others = [pod_labels(d) for d, c in workloads(docs) if component_of(c) != GATEWAY]
        own = [
            p
            for p in policies
            if selects(p["spec"]["podSelector"], labels)
            and not any(selects(p["spec"]["podSelector"], other) for other in others)
            and not is_helm_test(p)
        ]
        assert len(own) == 1, f"{where}: {len(own)} NetworkPolicies for the gateway's clients"
        (rule,) = own[0]["spec"]["ingress"]
        assert {p["port"] for p in rule["ports"]} <= {"http", port}, f"{where}: {rule}"
