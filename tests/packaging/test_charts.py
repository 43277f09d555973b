"""The Helm charts without a cluster: lint, render, schema-validate, and check what they promise."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging_kit import (
    CRD_CHART,
    OPERATOR_CHART,
    RELEASE_NAMESPACE,
    ROOT,
    VALUES,
    by_kind,
    hack,
    helm,
    render,
    run,
    tool,
)

from voicefleet_agent import contract
from voicefleet_operator import desired
from voicefleet_operator.models import VoiceAgent

VALUE_SETS = {
    "default": (),
    "all-features": ("all-features.yaml",),
    "namespaced": ("namespaced.yaml",),
    "every-namespace": ("every-namespace.yaml",),
}
# Kinds whose schema kubernetes-validate does not know (CRDs of other projects): checked structurally below.
FOREIGN_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}


@pytest.mark.parametrize("chart", [CRD_CHART, OPERATOR_CHART], ids=lambda p: p.name)
def test_helm_lint_is_clean(chart: Path) -> None:
    helm("lint", "--strict", str(chart))
    if chart == OPERATOR_CHART:
        for values in VALUES.glob("*.yaml"):
            helm("lint", "--strict", str(chart), "-f", str(values))


def _validate(docs: list[dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return run(tool("kubernetes-validate"), "-k", "1.34.0", "--strict", "--quiet", str(path), check=False)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_builtin_kinds_pass_strict_schema_validation(name: str, tmp_path: Path) -> None:
    docs = render(OPERATOR_CHART, *VALUE_SETS[name])
    builtin = [d for d in docs if (d["apiVersion"], d["kind"]) not in FOREIGN_KINDS]
    assert {d["kind"] for d in builtin} >= {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    result = _validate(builtin, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_crd_chart_passes_strict_schema_validation(tmp_path: Path) -> None:
    docs = render(CRD_CHART)
    assert {d["kind"] for d in docs} == {"CustomResourceDefinition"}
    result = _validate(docs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_an_unknown_field(tmp_path: Path) -> None:
    """Negative control: the strict validation above would catch a typo."""
    deployment = by_kind(render(OPERATOR_CHART), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    result = _validate([deployment], tmp_path)
    assert result.returncode != 0 and "imagePullPolicyy" in result.stdout + result.stderr


def test_optional_parts_render_only_when_switched_on() -> None:
    default = {(d["kind"], d["metadata"]["name"]) for d in render(OPERATOR_CHART)}
    everything = {(d["kind"], d["metadata"]["name"]) for d in render(OPERATOR_CHART, "all-features.yaml")}
    optional = {
        ("ServiceMonitor", "voicefleet-operator"),
        ("ServiceMonitor", "voicefleet-agents"),
        ("PrometheusRule", "voicefleet"),
        ("ConfigMap", "voicefleet-dashboard"),
        ("ScaledObject", "tasks"),
        ("Deployment", "voicefleet-whisper"),
        ("Service", "voicefleet-whisper"),
        ("PersistentVolumeClaim", "voicefleet-whisper-models"),
        ("Deployment", "voicefleet-offline"),
        ("Service", "voicefleet-offline"),
        ("Deployment", "voicefleet-tasks"),
        ("Service", "voicefleet-tasks"),
    }
    assert optional <= everything
    assert not optional & default
    assert ("ConfigMap", "voicefleet-prometheus-adapter") in default  # the HPA depends on it: on by default


def test_operator_runs_one_replica_with_recreate_and_hardened_pod() -> None:
    for name in VALUE_SETS:
        deployments = by_kind(render(OPERATOR_CHART, *VALUE_SETS[name]), "Deployment")
        deployment = next(d for d in deployments if d["metadata"]["name"] == "voicefleet-operator")
        spec = deployment["spec"]
        assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}, name
    docs = render(OPERATOR_CHART)
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["image"] == "ghcr.io/voicefleet/operator:0.1.0"  # appVersion when no tag is given
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    # the release namespace only by default (test_by_default_no_cluster_wide_access_to_secrets_or_config_maps)
    assert [a for a in container["args"] if a.startswith("--namespace")] == [f"--namespace={RELEASE_NAMESPACE}"]
    digest = by_kind(render(OPERATOR_CHART, "all-features.yaml"), "Deployment")
    operator = next(d for d in digest if d["metadata"]["name"] == "voicefleet-operator")
    assert operator["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
        "ghcr.io/voicefleet/operator@sha256:"
    )


def test_fleet_url_reaches_the_operator_through_its_service() -> None:
    docs = render(OPERATOR_CHART)
    (deployment,) = by_kind(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if "=" in a)
    fleet_port = next(p for p in container["ports"] if p["name"] == "fleet")
    assert args["fleet-listen"] == f"0.0.0.0:{fleet_port['containerPort']}"
    service = next(s for s in by_kind(docs, "Service") if "fleet" in {p["name"] for p in s["spec"]["ports"]})
    port = next(p for p in service["spec"]["ports"] if p["name"] == "fleet")
    assert port["targetPort"] == "fleet"
    meta = service["metadata"]
    assert args["fleet-url"] == f"http://{meta['name']}.{meta['namespace']}.svc:{port['port']}"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    monitor = next(m for m in by_kind(render(OPERATOR_CHART, "all-features.yaml"), "ServiceMonitor")
                   if m["metadata"]["name"] == "voicefleet-operator")  # fmt: skip
    metrics_services = [s for s in by_kind(docs, "Service") if monitor["spec"]["selector"]["matchLabels"].items()
                        <= s["metadata"]["labels"].items()]  # fmt: skip
    assert [s["metadata"]["name"] for s in metrics_services] == ["voicefleet-operator-metrics"]


def _rules(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples a (Cluster)Role grants."""
    return [
        (group, resource, verb)
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


NAMESPACE_RULES = {"customresourcedefinitions", "namespaces"}


def test_rbac_is_least_privilege() -> None:
    """The rules the operator needs in a namespace it serves, as the chart grants them with watchAnyNamespace."""
    (role,) = by_kind(render(OPERATOR_CHART, sets=("operator.watchAnyNamespace=true",)), "ClusterRole")
    granted = _rules(role)
    assert not [g for g in granted if "*" in g], "no wildcards"
    assert not [g for g in granted if g[2] in ("deletecollection", "escalate", "bind", "impersonate")]
    # The only delete: the HPA the operator made, when an agent moves to an external autoscaler.
    assert [g for g in granted if g[2] == "delete"] == [("autoscaling", "horizontalpodautoscalers", "delete")]
    assert [g for g in granted if g[2] == "update"] == [("voicefleet.io", "voiceagents/finalizers", "update")]
    secrets = {verb for group, resource, verb in granted if resource == "secrets"}
    # written: only the fleet-token Secret of each VoiceAgent (a child, server-side applied); never deleted
    assert secrets == {"get", "list", "watch", "create", "patch"}
    core = [g for g in granted if g[0] == ""]
    assert not [g for g in core if g[1] in ("nodes", "roles", "rolebindings", "clusterroles") or "pods/" in g[1]]
    # pods: which agent pods are ready or draining (a label-selected watch), and their pod-deletion-cost annotation
    # (patch); never read one by one, made, deleted or exec'd
    assert {verb for group, resource, verb in core if resource == "pods"} == {"list", "watch", "patch"}
    # the custom metrics API: only the agents' sessions metric, as the HPA reads it
    metrics = [g for g in granted if g[0] == "custom.metrics.k8s.io"]
    assert metrics == [("custom.metrics.k8s.io", "pods/voicefleet_agent_active_sessions", "get")]
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "watch") in granted


def test_by_default_no_cluster_wide_access_to_secrets_or_config_maps() -> None:
    """The default install: a Role in the release namespace only, a ClusterRole for CRD discovery and namespaces."""
    docs = render(OPERATOR_CHART)
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert {r for _, r, _ in _rules(cluster_role)} == NAMESPACE_RULES
    namespaces = [r for r in cluster_role["rules"] if r["resources"] == ["namespaces"] and "get" in r["verbs"]]
    assert [r.get("resourceNames") for r in namespaces] == [["kube-system"]], "reads one namespace only"
    (role,) = by_kind(docs, "Role")
    assert role["metadata"]["namespace"] == RELEASE_NAMESPACE
    (binding,) = by_kind(docs, "RoleBinding")
    assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == role["metadata"]["name"]
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == [f"--namespace={RELEASE_NAMESPACE}"]


def test_namespaced_mode_grants_roles_only_in_the_watched_namespaces() -> None:
    docs = render(OPERATOR_CHART, "namespaced.yaml")
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert {r for _, r, _ in _rules(cluster_role)} == NAMESPACE_RULES
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["voice-a", "voice-b"]
    clusterwide = _rules(by_kind(render(OPERATOR_CHART, sets=("operator.watchAnyNamespace=true",)), "ClusterRole")[0])
    assert _rules(roles[0]) == [g for g in clusterwide if g[1] not in NAMESPACE_RULES]
    bindings = by_kind(docs, "RoleBinding")
    assert {b["subjects"][0]["namespace"] for b in bindings} == {RELEASE_NAMESPACE}
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=voice-a", "--namespace=voice-b"]


def test_every_namespace_is_an_explicit_choice() -> None:
    """watchAnyNamespace: a ClusterRole with the namespace rules, no Role, and the operator watching everywhere."""
    docs = render(OPERATOR_CHART, "namespaced.yaml", sets=("operator.watchAnyNamespace=true",))
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert ("", "secrets", "watch") in _rules(cluster_role)
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith("--namespace")]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("operator.logFormat=xml", "logFormat"),
        ("whisper.enabled=yes", "enabled"),
        ("prometheusRule.capacityRatio=1.5", "capacityRatio"),
        ("operator.watchNamespace=x", "watchNamespace"),
        ("image.digest=latest", "digest"),
    ],
)
def test_values_schema_rejects_bad_values(setting: str, message: str) -> None:
    result = helm("template", "x", str(OPERATOR_CHART), "--set", setting, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_crd_chart_copy_is_in_sync_with_crds() -> None:
    """charts/voicefleet-crds/files/ must equal crds/ (and the other generated copies their sources)."""
    stale = hack("charts_sync").stale()
    assert not stale, "run `make charts-sync`:\n" + "\n".join(stale.values())


def test_crd_chart_renders_the_generated_crds_unchanged() -> None:
    """Helm's fromYaml/toYaml round trip must not alter a schema: the rendered spec equals crds/ exactly, types too."""
    rendered = {d["metadata"]["name"]: d for d in render(CRD_CHART)}
    sources = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    assert sorted(rendered) == sorted(s["metadata"]["name"] for s in sources)
    for source in sources:
        crd = rendered[source["metadata"]["name"]]
        assert json.dumps(crd["spec"], sort_keys=True) == json.dumps(source["spec"], sort_keys=True)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    unkept = render(CRD_CHART, sets=("keep=false",))
    assert all("helm.sh/resource-policy" not in (d["metadata"].get("annotations") or {}) for d in unkept)


def test_prometheus_adapter_serves_the_metric_the_operator_hpa_asks_for() -> None:
    (config_map,) = [c for c in by_kind(render(OPERATOR_CHART), "ConfigMap") if "adapter" in c["metadata"]["name"]]
    (rule,) = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    assert rule["name"]["as"] == contract.ACTIVE_SESSIONS
    assert rule["seriesQuery"].startswith(contract.ACTIVE_SESSIONS + "{")
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    hpa = _operator_hpa()
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]


def test_the_adapter_rules_land_where_the_install_guide_runs_prometheus_adapter() -> None:
    guide = (ROOT / "docs" / "install.md").read_text()
    adapter_ns = re.search(r"helm install prometheus-adapter \S+ -n (\S+)", guide)
    chart_ns = re.search(r"--set prometheusAdapter\.namespace=(\S+)", guide)
    assert adapter_ns and chart_ns and adapter_ns.group(1) == chart_ns.group(1), "install.md: adapter vs rules"
    rendered = render(OPERATOR_CHART, sets=(f"prometheusAdapter.namespace={adapter_ns.group(1)}",))
    (config_map,) = [c for c in by_kind(rendered, "ConfigMap") if c["metadata"]["name"].endswith("-adapter")]
    assert config_map["metadata"]["namespace"] == adapter_ns.group(1) != RELEASE_NAMESPACE


def _operator_hpa() -> dict[str, Any]:
    from voicefleet_operator.models import VoiceAgent

    docs = [yaml.safe_load_all(p.read_text()) for p in sorted((ROOT / "examples").glob("*.yaml"))]
    body = next(d for group in docs for d in group if d and d["kind"] == "VoiceAgent")
    body["metadata"].update(namespace="voice", uid="00000000-0000-0000-0000-000000000000")
    agent = VoiceAgent.model_validate(body)
    rendered = desired.render(desired.Inputs(agent=agent))
    return next(o for o in rendered.objects if o["kind"] == "HorizontalPodAutoscaler")


def test_whisper_service_matches_the_example_policy_url() -> None:
    docs = render(OPERATOR_CHART, "all-features.yaml")
    service = next(s for s in by_kind(docs, "Service") if s["metadata"]["name"].endswith("-whisper"))
    url = f"http://{service['metadata']['name']}.{RELEASE_NAMESPACE}.svc:{service['spec']['ports'][0]['port']}/v1"
    policy = (ROOT / "examples" / "10-providerpolicy.yaml").read_text()
    assert url in policy


def test_agent_service_monitor_selects_the_services_the_operator_creates() -> None:
    docs = render(OPERATOR_CHART, "all-features.yaml")
    monitor = next(m for m in by_kind(docs, "ServiceMonitor") if m["metadata"]["name"].endswith("-agents"))
    service_labels = _operator_hpa()["metadata"]["labels"]  # every child of a VoiceAgent carries the same labels
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert service_labels.get(key) == value, key
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    relabel = endpoint["relabelings"][0]
    assert relabel["targetLabel"] == "voiceagent"
    assert relabel["sourceLabels"] == ["__meta_kubernetes_service_label_app_kubernetes_io_instance"]
    assert service_labels["app.kubernetes.io/instance"] == "tasks"  # = the VoiceAgent's name, as the dashboard joins


def _check_structure(doc: dict[str, Any]) -> None:
    """The fields the Prometheus Operator and KEDA require, with the right types (their CRDs are not here)."""
    spec = doc["spec"]
    if doc["kind"] == "ServiceMonitor":
        assert isinstance(spec["selector"]["matchLabels"], dict) and spec["selector"]["matchLabels"]
        assert set(spec["namespaceSelector"]) <= {"any", "matchNames"}
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings", "honorLabels"}
            assert isinstance(endpoint["port"], str) and isinstance(endpoint.get("honorLabels", False), bool)
            for relabel in endpoint.get("relabelings", []):
                assert set(relabel) <= {"sourceLabels", "targetLabel", "action", "regex", "replacement"}
    elif doc["kind"] == "PrometheusRule":
        for group in spec["groups"]:
            assert set(group) == {"name", "rules"}
            for rule in group["rules"]:
                assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
                assert isinstance(rule["expr"], str) and all(isinstance(v, str) for v in rule["labels"].values())
                assert all(isinstance(v, str) for v in rule["annotations"].values())
    elif doc["kind"] == "ScaledObject":
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        assert isinstance(spec["minReplicaCount"], int) and isinstance(spec["maxReplicaCount"], int)
        for trigger in spec["triggers"]:
            assert trigger["type"] == "prometheus"
            assert all(isinstance(v, str) for v in trigger["metadata"].values()), "KEDA metadata values are strings"
    else:
        raise AssertionError(f"no structural check for {doc['kind']}")


def test_foreign_kinds_are_structurally_sound() -> None:
    docs = render(OPERATOR_CHART, "all-features.yaml")
    foreign = [d for d in docs if (d["apiVersion"], d["kind"]) in FOREIGN_KINDS]
    assert {d["kind"] for d in foreign} == {k for _, k in FOREIGN_KINDS}
    for doc in foreign:
        _check_structure(doc)


def test_dashboard_config_map_carries_the_generated_dashboard() -> None:
    docs = render(OPERATOR_CHART, "all-features.yaml")
    (config_map,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["voicefleet.json"]) == hack("dashboard").build()


def test_the_fleet_channel_admits_only_agent_pods() -> None:
    for values in (("every-namespace.yaml",), ("namespaced.yaml",)):
        docs = render(OPERATOR_CHART, *values)
        (policy,) = by_kind(docs, "NetworkPolicy")
        (deployment,) = by_kind(docs, "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= (
            deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        (fleet_rule,) = [r for r in policy["spec"]["ingress"] if {p["port"] for p in r["ports"]} == {ports["fleet"]}]
        (source,) = fleet_rule["from"]
        example = yaml.safe_load((ROOT / "examples" / "20-voiceagent.yaml").read_text())
        example["metadata"].update(namespace="voice-a", uid="u")
        agent_pod = desired.labels(VoiceAgent.model_validate(example))
        assert source["podSelector"]["matchLabels"].items() <= agent_pod.items()
        assert source["podSelector"]["matchLabels"], "not every pod"
        others = [r for r in policy["spec"]["ingress"] if r is not fleet_rule]
        assert all("from" not in r and ports["fleet"] not in {p["port"] for p in r["ports"]} for r in others)
        if values == ("namespaced.yaml",):
            assert source["namespaceSelector"]["matchExpressions"][0]["values"] == ["voice-a", "voice-b"]
        else:
            assert source["namespaceSelector"] == {}, "agent pods of every namespace"
    (policy,) = by_kind(render(OPERATOR_CHART), "NetworkPolicy")
    (source,) = policy["spec"]["ingress"][0]["from"]
    assert source["namespaceSelector"]["matchExpressions"][0]["values"] == [RELEASE_NAMESPACE]
    assert not by_kind(render(OPERATOR_CHART, sets=("networkPolicy.enabled=false",)), "NetworkPolicy")


def test_offline_stack_serves_the_addresses_the_examples_name() -> None:
    """offline.enabled alone: the provider stack, the tasks MCP server and a Whisper Service in front of the
    offline OpenAI audio API, at the host:ports examples/ use (release and namespace "voicefleet")."""
    docs = render(OPERATOR_CHART, sets=("offline.enabled=true",))
    services = {d["metadata"]["name"]: d for d in by_kind(docs, "Service")}
    examples = (ROOT / "examples" / "10-providerpolicy.yaml").read_text() + (
        ROOT / "examples" / "20-voiceagent.yaml"
    ).read_text()
    urls = set(re.findall(r"http://([a-z0-9-]+)\.voicefleet\.svc:(\d+)", examples))
    assert urls, "examples name no in-cluster services"
    for host, port in urls:
        assert host in services, f"{host} is not rendered"
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]], f"{host}:{port}"
    whisper = services["voicefleet-whisper"]["spec"]
    assert (
        whisper["selector"]["app.kubernetes.io/component"] == "offline"
        and whisper["ports"][0]["targetPort"] == "openai"
    )
    for deployment in by_kind(docs, "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
