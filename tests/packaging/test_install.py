"""Both charts installed into a real control plane, and the operator reconciling with exactly the chart's RBAC.

The operator runs as a process that authenticates as the chart's ServiceAccount (a token from `kubectl create token`),
so the VoiceAgent becoming Ready proves the ClusterRole is sufficient; `kubectl auth can-i` proves it is no wider.
This module starts its own control plane: tests/integration runs an operator with admin rights against the session's
shared one, and that operator would reconcile these objects too, making the RBAC proof vacuous.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging_kit import (
    CRD_CHART,
    OPERATOR_CHART,
    RELEASE,
    RELEASE_NAMESPACE,
    ROOT,
    VALUES,
    argo_health,
    by_kind,
    helm,
    render,
    run,
    runbook_commands,
    tool,
)

from testground.kube import AUDIT_LOG, Cluster, KubeStack
from testground.operator import Namespace, OperatorProcess, load_examples, wait_for
from voicefleet_operator.desired import SECRETS_HASH_ANNOTATION
from voicefleet_operator.models import VoiceAgentSpec

pytestmark = pytest.mark.integration

STUB_CRDS = Path(__file__).with_name("stub-crds.yaml")
SERVICE_ACCOUNT = f"system:serviceaccount:{RELEASE_NAMESPACE}:voicefleet-operator"
APPLIER = "kubectl-client-side-apply"
# all-features.yaml's operator.watchNamespaces: `voice` also holds the all-features ScaledObject
WATCHED = ("voice", "argo-health", "no-rights")


@pytest.fixture(scope="module")
def ground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # the audit log records what the operator's ServiceAccount really does, for the RBAC derivation below
    stack = KubeStack(tmp_path_factory.mktemp("chart-ground"), audit=True, audit_users=(SERVICE_ACCOUNT,))
    try:
        yield stack.start()
    finally:
        stack.stop()


def _helm(ground: Cluster, *args: str) -> str:
    return helm(*args, "--kubeconfig", str(ground.kubeconfig)).stdout


@pytest.fixture(scope="module")
def installed(ground: Cluster) -> Cluster:
    """voicefleet-crds, then voicefleet with every optional part (stand-in CRDs for ServiceMonitor & co)."""
    _helm(ground, "install", "voicefleet-crds", str(CRD_CHART))
    ground.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=voicefleet"
    )
    ground.kubectl("apply", "-f", str(STUB_CRDS))
    ground.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(STUB_CRDS))
    for namespace in WATCHED:  # the chart's Roles go into them, so they exist first (docs/install.md says so)
        ground.kubectl("create", "namespace", namespace)
    _helm(
        ground, "install", RELEASE, str(OPERATOR_CHART), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
        "-f", str(VALUES / "all-features.yaml"),
    )  # fmt: skip
    ground.kubectl("-n", RELEASE_NAMESPACE, "rollout", "status", "deployment/voicefleet-operator", "--timeout=90s")
    return ground


@pytest.fixture(scope="module")
def operator_kubeconfig(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount, as the operator's pod would."""
    token = installed.kubectl(
        "-n", RELEASE_NAMESPACE, "create", "token", "voicefleet-operator", "--duration=2h"
    ).stdout.strip()
    path = tmp_path_factory.mktemp("operator-identity") / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "ground",
                        "cluster": {"server": installed.server, "certificate-authority": str(installed.ca_file)},
                    }
                ],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [{"name": "operator", "context": {"cluster": "ground", "user": "operator"}}],
                "current-context": "operator",
            }
        )
    )
    path.chmod(0o600)
    return path


def _as_operator(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(tool("kubectl"), "--kubeconfig", str(kubeconfig), *args, check=False)


@pytest.fixture(scope="module")
def operator(
    installed: Cluster, operator_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    whoami = _as_operator(operator_kubeconfig, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.stdout == SERVICE_ACCOUNT, whoami.stderr
    # the namespaces the chart's Deployment passes (--namespace each), as the pod would run
    deployments = by_kind(render(OPERATOR_CHART, "all-features.yaml"), "Deployment")
    (deployment,) = [d for d in deployments if d["metadata"]["name"] == "voicefleet-operator"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    namespaces = tuple(a.removeprefix("--namespace=") for a in args if a.startswith("--namespace="))
    assert namespaces == WATCHED
    process = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator-logs"), namespaces=namespaces)
    process.start()
    yield process
    process.stop()


def _fleet(cluster: Cluster, name: str) -> Namespace:
    ns = Namespace(cluster, name)
    result = ns.apply(*load_examples(ROOT / "examples"))
    assert result.returncode == 0, result.stderr
    ns.kubectl("wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=120s")
    return ns


@pytest.fixture(scope="module")
def fleet(installed: Cluster, operator: OperatorProcess) -> Namespace:
    """examples/ applied into `voice` and Ready, reconciled by the operator under the chart's RBAC alone."""
    return _fleet(installed, "voice")


def test_both_releases_are_deployed(installed: Cluster) -> None:
    for release, namespace in (("voicefleet-crds", "default"), (RELEASE, RELEASE_NAMESPACE)):
        status = json.loads(_helm(installed, "status", release, "--namespace", namespace, "-o", "json"))
        assert status["info"]["status"] == "deployed", status["info"]
    crd = json.loads(installed.kubectl("get", "crd", "voiceagents.voicefleet.io", "-o", "json").stdout)
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for kind, name in (
        ("servicemonitor", "voicefleet-agents"),
        ("prometheusrule", "voicefleet"),
        ("configmap", "voicefleet-dashboard"),
        ("configmap", "voicefleet-prometheus-adapter"),
        ("deployment", "voicefleet-whisper"),
        ("service", "voicefleet-operator"),
    ):
        installed.kubectl("-n", RELEASE_NAMESPACE, "get", kind, name)
    installed.kubectl("-n", "voice", "get", "scaledobject", "tasks")


def test_operator_reconciles_with_the_chart_rbac(fleet: Namespace, operator: OperatorProcess) -> None:
    agent = fleet.get("voiceagent", "tasks")
    assert agent is not None
    assert agent["status"]["readyReplicas"] == agent["spec"]["scaling"]["minReplicas"]
    for kind, name in (("deployment", "tasks"), ("hpa", "tasks"), ("pdb", "tasks"), ("configmap", "tasks-config")):
        assert fleet.get(kind, name) is not None, f"{kind}/{name}"
    events = json.loads(fleet.kubectl("get", "events", "-o", "json").stdout)["items"]
    assert any(e["involvedObject"]["name"] == "tasks" and e["reason"] == "Available" for e in events)
    ready = fleet.wait_condition("providerpolicy", "default", "Ready", "True")  # the status write went through
    assert ready["observedGeneration"] == 1
    assert "voicefleet_operator_reconciles_total" in operator.metrics()


def test_a_secret_change_rolls_the_pods_under_the_namespaced_role(fleet: Namespace) -> None:
    """The operator watches Secrets only where its Role lets it (no cluster-wide watch): a rotated key it references
    still reaches the pod template at once."""

    def secrets_hash() -> str:
        deployment = fleet.get("deployment", "tasks") or {}
        return str(deployment["spec"]["template"]["metadata"]["annotations"][SECRETS_HASH_ANNOTATION])

    before = secrets_hash()
    rotate = '{"stringData":{"openai":"%s"}}'
    fleet.kubectl("patch", "secret", "provider-keys", "--type=merge", "-p", rotate % "rotated")
    try:
        wait_for("the pod template to carry the rotated Secret", lambda: secrets_hash() != before, timeout=60)
    finally:  # examples/ as applied again: the tests below diff the live objects against them
        fleet.kubectl("patch", "secret", "provider-keys", "--type=merge", "-p", rotate % "offline")


ALLOWED = [
    ("get", "secrets", "voice"),
    ("watch", "secrets", "voice"),
    ("list", "configmaps", "argo-health"),
    ("patch", "voiceagents.voicefleet.io", "voice"),
    ("patch", "voiceagents.voicefleet.io/status", "voice"),
    ("patch", "providerpolicies.voicefleet.io/status", "voice"),
    ("create", "deployments.apps", "voice"),
    ("patch", "secrets", "voice"),  # the fleet token Secrets it makes
    ("patch", "horizontalpodautoscalers.autoscaling", "voice"),
    ("create", "poddisruptionbudgets.policy", "voice"),
    ("create", "events", "voice"),
    ("watch", "pods", "voice"),  # agent pods, for FleetConnected
    ("patch", "pods", "voice"),  # their pod-deletion-cost
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", ""),
]
DENIED = [
    ("delete", "secrets", "voice"),
    ("update", "secrets", "voice"),
    ("create", "pods", "voice"),
    ("delete", "pods", "voice"),
    ("update", "pods", "voice"),
    ("create", "pods/exec", "voice"),
    ("delete", "deployments.apps", "voice"),
    ("update", "deployments.apps", "voice"),
    ("create", "voiceagents.voicefleet.io", "voice"),
    ("delete", "voiceagents.voicefleet.io", "voice"),
    ("delete", "configmaps", "voice"),
    ("get", "nodes", ""),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", ""),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", ""),
    ("impersonate", "serviceaccounts", "voice"),
    # no cluster-wide access to Secrets or ConfigMaps, nor any in a namespace it does not serve
    ("list", "secrets", ""),
    ("watch", "secrets", ""),
    ("get", "secrets", "kube-system"),
    ("get", "secrets", RELEASE_NAMESPACE),
    ("list", "configmaps", ""),
    ("watch", "configmaps", ""),
    ("get", "configmaps", "default"),
    ("create", "secrets", "default"),
    ("patch", "secrets", "kube-system"),
    ("get", "namespaces", "default"),
]


def _can(kubeconfig: Path, verb: str, resource: str, namespace: str) -> bool:
    scope = ["-n", namespace] if namespace else []
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    result = _as_operator(kubeconfig, "auth", "can-i", verb, resource, *extra, *scope)
    assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
    return result.stdout.strip() == "yes"


def test_the_service_account_is_least_privilege(operator_kubeconfig: Path) -> None:
    assert [a for a in ALLOWED if not _can(operator_kubeconfig, *a)] == []
    assert [d for d in DENIED if _can(operator_kubeconfig, *d)] == []


def test_the_operator_never_writes_spec(fleet: Namespace) -> None:
    """What Argo CD would diff: the spec is what Git holds plus the schema's defaults, owned by the applier only."""
    shown = json.loads(fleet.kubectl("get", "voiceagent", "tasks", "-o", "json", "--show-managed-fields").stdout)
    assert shown["metadata"]["generation"] == 1, "a spec write bumps the generation"
    spec_owners = {m["manager"] for m in shown["metadata"]["managedFields"] if "f:spec" in (m.get("fieldsV1") or {})}
    assert spec_owners == {APPLIER}, spec_owners
    applied = next(d for d in load_examples(ROOT / "examples") if d["kind"] == "VoiceAgent")
    with_defaults = VoiceAgentSpec.model_validate(applied["spec"]).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert shown["spec"] == with_defaults, "the API server added exactly the schema's defaults, nothing else"
    # Argo CD's default (client-side, three-way) diff: kubectl diff does the same comparison, and finds nothing.
    result = fleet.kubectl("diff", "-f", str(ROOT / "examples"), check=False)
    assert result.returncode == 0, f"kubectl diff found a difference:\n{result.stdout}"
    # Argo CD's ServerSideDiff: a server-side dry-run apply of Git's manifest yields the live spec.
    dry_run = fleet.kubectl(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-o", "json",
        "-f", str(ROOT / "examples" / "20-voiceagent.yaml"),
    )  # fmt: skip
    assert json.loads(dry_run.stdout)["spec"] == shown["spec"]


def test_argo_health_on_real_statuses(installed: Cluster, operator: OperatorProcess) -> None:
    ns = _fleet(installed, "argo-health")
    agent = ns.get("voiceagent", "tasks")
    assert agent is not None
    assert argo_health(agent) == {"status": "Healthy", "message": "Available: 2/2 agent pods ready"}

    # The example policy's providers are not reachable from here: probes fail, and the policy says so.
    ns.wait_condition("providerpolicy", "default", "ProviderDegraded", "True")
    policy = ns.get("providerpolicy", "default")
    assert policy is not None
    health = argo_health(policy)
    assert health["status"] == "Degraded" and health["message"].startswith("ProbesFailing: "), health

    # A rollout that cannot finish (no node has 900 CPUs) while the old pods keep serving.
    ns.kubectl(
        "patch", "voiceagent", "tasks", "--type=merge", "-p", '{"spec":{"resources":{"requests":{"cpu":"900"}}}}'
    )
    ns.wait_condition("voiceagent", "tasks", "Ready", "False", "RollingOut")
    agent = ns.get("voiceagent", "tasks")
    assert agent is not None and agent["status"]["observedGeneration"] == agent["metadata"]["generation"] == 2
    health = argo_health(agent)
    assert health["status"] == "Progressing" and health["message"].startswith("RollingOut: "), health

    ns.kubectl(
        "patch", "voiceagent", "tasks", "--type=merge",
        "-p", json.dumps({"spec": {"env": [{"name": "LIVEKIT_URL", "value": "ws://elsewhere"}]}}),
    )  # fmt: skip
    ns.wait_condition("voiceagent", "tasks", "Ready", "False", "InvalidSpec")
    agent = ns.get("voiceagent", "tasks")
    assert agent is not None
    health = argo_health(agent)
    assert health["status"] == "Degraded", health
    assert health["message"].startswith("InvalidSpec: spec.env[0].name: LIVEKIT_URL is set by the operator"), health


def test_the_runbook_commands_work(installed: Cluster, fleet: Namespace, tmp_path: Path) -> None:
    """docs/runbook-failover.md, run verbatim: look at provider health, pin STT to Whisper, hand back."""
    env = {"NS": fleet.name, "POLICY": "default", "KUBECONFIG": str(installed.kubeconfig), "PATH": _path()}
    env["HOME"] = str(tmp_path)  # kubectl's discovery cache goes under $HOME/.kube

    def sh(line: str) -> str:
        result = run("bash", "-euo", "pipefail", "-c", line, env=env)
        return result.stdout

    looks = list(dict.fromkeys(runbook_commands(" get ") + runbook_commands(" describe ")))
    assert len(looks) >= 5
    for line in looks:
        sh(line)
    (pin,) = runbook_commands("--type=merge")
    sh(pin)
    fleet.wait_condition("providerpolicy", "default", "Ready", "True", "OverrideActive")
    wait_for(
        "agents told to use whisper",
        lambda: (fleet.get("voiceagent", "tasks") or {})["status"]["providers"]["stt"] == "whisper",
    )
    (check, *_) = [line for line in runbook_commands("-o jsonpath") if "status.active.stt" in line]
    assert sh(check).split() == ["whisper", "OverrideActive"]
    (hand_back,) = runbook_commands('"op":"remove"')
    sh(hand_back)
    wait_for(
        "override gone from status",
        lambda: fleet.condition("providerpolicy", "default", "Ready")["reason"] != "OverrideActive",  # type: ignore[index]
    )
    assert "override" not in (fleet.get("providerpolicy", "default") or {})["spec"]


def _path() -> str:
    return f"{Path(tool('kubectl')).parent}:/usr/bin:/bin"


def test_no_permission_errors_in_the_operator_log(fleet: Namespace, operator: OperatorProcess) -> None:
    log = operator.log_path.read_text()
    assert "handler 'voice_agent' succeeded" in log.lower(), "the operator logged its work"
    bad = [line for line in log.splitlines() if "forbidden" in line.lower() or "not enough permissions" in line.lower()]
    assert not bad, "\n".join(bad[:10])


# Granted but never a request of their own: the OwnerReferencesPermissionEnforcement admission plugin checks
# `update` on the owner's finalizers when a child sets blockOwnerDeletion.
AUTHORIZED_ONLY = {("voicefleet.io", "voiceagents/finalizers", "update")}
# Used on paths this module's fleet does not take.
OTHER_PATHS = {
    ("", "configmaps", "get"): "a spec's instructionsConfigMapRef (Reconciler._gather)",
    ("voicefleet.io", "providerpolicies", "get"): "a ProviderPolicy no watch event has shown yet (read cache miss)",
    ("", "namespaces", "get"): "the cluster's identity in a phone channel's SIP objects (Kube.cluster_id)",
    ("voicefleet.io", "voiceagents", "get"): "a VoiceAgent no watch event has shown yet (read cache miss)",
    ("apps", "deployments", "get"): "a Deployment no watch of ours shows (a name held by another object)",
    # the first write of a child whose dry run shows it exists (after a restart; a NameConflict)
    ("", "serviceaccounts", "get"): "an existing child: is it ours? (Reconciler._conflict)",
    ("", "services", "get"): "an existing child: is it ours? (Reconciler._conflict)",
    ("policy", "poddisruptionbudgets", "get"): "an existing child: is it ours? (Reconciler._conflict)",
    ("", "pods", "patch"): "agent pods' deletion costs, from the custom metrics API this control plane does not serve "
    "(tests/e2e/test_scalein.py has it)",
}


def _granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}  # fmt: skip


def _used(cluster: Cluster) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of every request of the operator that was allowed."""
    used = set()
    for line in (cluster.logs_dir / AUDIT_LOG).read_text().splitlines():
        event = json.loads(line)
        if event["user"]["username"] != SERVICE_ACCOUNT or event.get("responseStatus", {}).get("code", 200) == 403:
            continue
        ref = event.get("objectRef") or {}
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((ref.get("apiGroup", ""), resource, event["verb"]))
    return used


def test_every_rule_the_chart_grants_is_one_the_operator_uses(fleet: Namespace, operator: OperatorProcess) -> None:
    """The rules are derived from the rendered chart and the requests from the apiserver's audit log of the
    operator's identity: a granted rule the code never exercises fails this (least privilege, measured)."""
    # exercise the one delete the operator may do: its HPA, when the agent moves to an external autoscaler
    fleet.kubectl(
        "patch", "voiceagent", "tasks", "--type=merge", "-p", '{"spec":{"scaling":{"autoscaler":"External"}}}'
    )
    wait_for("the operator's HPA deleted", lambda: fleet.get("hpa", "tasks") is None)
    fleet.kubectl("patch", "voiceagent", "tasks", "--type=merge", "-p", '{"spec":{"scaling":{"autoscaler":"HPA"}}}')
    wait_for("the HPA back", lambda: fleet.get("hpa", "tasks") is not None)
    docs = render(OPERATOR_CHART, "all-features.yaml")
    (cluster_role,) = by_kind(docs, "ClusterRole")
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(WATCHED)
    used = _used(fleet.cluster)
    applied = {(g, r) for g, r, v in used if v == "patch" and "/" not in r}
    # server-side apply: one PATCH request that creates the object when absent, so it needs `create` too
    used |= {(g, r, "create") for g, r in applied}
    granted = _granted(cluster_role).union(*(_granted(r) for r in roles))
    unused = sorted(granted - used - AUTHORIZED_ONLY - set(OTHER_PATHS))
    assert not unused, f"granted but never used by the operator: {unused}"


def test_chart_upgrades_apply(installed: Cluster, fleet: Namespace) -> None:
    """CRDs are templates, so `helm upgrade` changes them (Helm never upgrades a chart's crds/ folder)."""
    _helm(installed, "upgrade", "voicefleet-crds", str(CRD_CHART), "--set", "labels.upgraded=yes")
    crd = json.loads(installed.kubectl("get", "crd", "voiceagents.voicefleet.io", "-o", "json").stdout)
    assert crd["metadata"]["labels"]["upgraded"] == "yes"
    _helm(
        installed, "upgrade", RELEASE, str(OPERATOR_CHART), "--namespace", RELEASE_NAMESPACE,
        "-f", str(VALUES / "all-features.yaml"), "--set", "operator.resyncSeconds=30",
    )  # fmt: skip
    installed.kubectl("-n", RELEASE_NAMESPACE, "rollout", "status", "deployment/voicefleet-operator", "--timeout=90s")
    deployment = json.loads(
        installed.kubectl("-n", RELEASE_NAMESPACE, "get", "deployment", "voicefleet-operator", "-o", "json").stdout
    )
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "VOICEFLEET_RESYNC_SECONDS", "value": "30"} in env


def test_uninstalling_the_crd_chart_keeps_crds_and_fleets(installed: Cluster, fleet: Namespace) -> None:
    _helm(installed, "uninstall", "voicefleet-crds")
    installed.kubectl("get", "crd", "voiceagents.voicefleet.io", "providerpolicies.voicefleet.io")
    assert fleet.get("voiceagent", "tasks") is not None


def test_negative_control_the_operator_acts_as_the_service_account(
    installed: Cluster, operator: OperatorProcess
) -> None:
    """Take Deployment rights away from the chart's Role in one namespace: reconciles there must now fail. Without
    this, the proofs above could pass with an operator that somehow ran with more rights than the chart grants."""
    role = ("-n", "no-rights", "get", "role", "voicefleet-operator", "-o", "json")
    original = json.loads(installed.kubectl(*role).stdout)
    del original["metadata"]["resourceVersion"]  # replace unconditionally
    reduced = json.loads(json.dumps(original))
    reduced["rules"] = [r for r in reduced["rules"] if "deployments" not in r["resources"]]
    assert len(reduced["rules"]) == len(original["rules"]) - 1
    installed.kubectl("replace", "-f", "-", input=json.dumps(reduced))
    errors = 'voicefleet_operator_reconciles_total{kind="VoiceAgent",result="error"}'

    def failed() -> float:
        lines = [line for line in operator.metrics().splitlines() if line.startswith(errors)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    before = failed()
    try:
        ns = Namespace(installed, "no-rights")
        assert ns.apply(*load_examples(ROOT / "examples")).returncode == 0
        wait_for("a reconcile refused by RBAC", lambda: failed() > before)
        assert "forbidden" in operator.log_path.read_text().lower()
    finally:
        installed.kubectl("replace", "-f", "-", input=json.dumps(original))
