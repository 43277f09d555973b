"""A real kubelet node in the test ground: real containers, real probes, and pods that reach the ground's services
over the pod bridge, as in a cluster (no hostNetwork)."""

from __future__ import annotations

import ipaddress
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testground import clusternet, host, images, tinyimages
from testground.node import NODE_LABEL
from testground.operator import Namespace, OperatorProcess, load_examples, wait_for
from testground.pytest_plugin import NodeGround

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WEB_PORT = 8080
NXDOMAIN = 3
WEB_SCRIPT = f"mkdir -p /www && echo ready >/www/index.html && exec httpd -f -p {WEB_PORT} -h /www"


def web_pod(name: str) -> dict[str, Any]:
    """busybox httpd serving /www, Ready while GET / answers 200 (probed by the kubelet every second)."""
    spec = {
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "web",
            "image": tinyimages.TOOLBOX_IMAGE,
            "imagePullPolicy": "Never",
            "command": ["sh", "-c", WEB_SCRIPT],
            "readinessProbe": {"httpGet": {"path": "/", "port": WEB_PORT}, "periodSeconds": 1, "failureThreshold": 1},
        }],
    }  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def pinned(pod: dict[str, Any], node_ground: NodeGround) -> dict[str, Any]:
    return {**pod, "spec": node_ground.node.pin(pod["spec"])}


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def web(node_ground: NodeGround) -> Iterator[tuple[str, str, float]]:
    """A Ready web pod on the real node: (namespace, pod name, seconds from create to Ready)."""
    node_ground.node.import_image(tinyimages.docker_archive(tinyimages.toolbox_image()))
    cluster = node_ground.cluster
    namespace, name = "real-node-web", "web"
    cluster.kubectl("create", "namespace", namespace)
    created = time.monotonic()
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(pinned(web_pod(name), node_ground)))
    cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s")
    yield namespace, name, time.monotonic() - created
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def get_pod(node_ground: NodeGround, namespace: str, name: str) -> dict[str, Any]:
    out = node_ground.cluster.kubectl("-n", namespace, "get", "pod", name, "-o", "json").stdout
    return dict(json.loads(out))


def test_busybox_pod_runs_on_the_real_node_with_a_bridge_ip(
    node_ground: NodeGround, web: tuple[str, str, float]
) -> None:
    namespace, name, seconds = web
    pod = get_pod(node_ground, namespace, name)
    assert pod["spec"]["nodeName"] == node_ground.node.name
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(host.POD_SUBNET)
    assert "hostNetwork" not in pod["spec"]
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and "running" in status["state"]
    assert status["containerID"].startswith("containerd://")
    # logs and exec go apiserver -> kubelet with the apiserver's kubelet client certificate (webhook authn/authz)
    exec_out = node_ground.cluster.kubectl("-n", namespace, "exec", name, "--", "cat", "/www/index.html").stdout
    assert exec_out.strip() == "ready"
    print(f"pod create -> Ready: {seconds:.2f} s")


def test_readiness_follows_the_kubelets_http_probe(node_ground: NodeGround, web: tuple[str, str, float]) -> None:
    namespace, name, _ = web
    kubectl = node_ground.cluster.kubectl
    kubectl("-n", namespace, "exec", name, "--", "mv", "/www/index.html", "/www/gone.html")
    wait_for(
        "the pod to turn NotReady after its page is gone", lambda: not ready(get_pod(node_ground, namespace, name))
    )
    kubectl("-n", namespace, "exec", name, "--", "mv", "/www/gone.html", "/www/index.html")
    wait_for("the pod to turn Ready again", lambda: ready(get_pod(node_ground, namespace, name)))


def test_pod_reaches_livekit_and_the_apiserver_over_the_pod_network(
    node_ground: NodeGround, web: tuple[str, str, float]
) -> None:
    namespace, name, _ = web
    assert node_ground.livekit.pod_url is not None
    livekit_http = node_ground.livekit.pod_url.replace("ws://", "http://")

    def in_pod(script: str) -> str:
        return node_ground.cluster.kubectl("-n", namespace, "exec", name, "--", "sh", "-c", script).stdout

    assert in_pod(f"wget -q -O- {livekit_http}/").strip() == "OK"
    # the in-cluster config every pod gets: the `kubernetes` Service's ClusterIP, routed by kube-proxy
    env = in_pod("echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT").strip()
    assert env == f"{host.API_SERVICE_IP}:{host.API_SERVICE_PORT}"
    # kubectl in the pod with no flags: in-cluster config (service env, ServiceAccount token, CA verified for 10.96.0.1)
    assert in_pod("kubectl get --raw /readyz").strip() == "ok"
    version = json.loads(in_pod("kubectl version -o json"))["serverVersion"]
    assert version["gitVersion"] == "v1.34.2"
    whoami = json.loads(in_pod("kubectl auth whoami -o json"))["status"]["userInfo"]
    assert whoami["username"] == f"system:serviceaccount:{namespace}:default"


def test_pod_resolves_services_by_name_and_reaches_them_through_kube_proxy(
    node_ground: NodeGround, web: tuple[str, str, float]
) -> None:
    namespace, name, _ = web
    cluster = node_ground.cluster

    def in_pod(script: str, check: bool = True) -> str:
        result = cluster.kubectl("-n", namespace, "exec", name, "--", "sh", "-c", script, check=check)
        return result.stdout + result.stderr

    resolv = in_pod("cat /etc/resolv.conf").split("\n")
    assert f"nameserver {clusternet.DNS_SERVICE_IP}" in resolv
    assert f"search {namespace}.svc.cluster.local svc.cluster.local cluster.local" in resolv
    # a Service with a selector: a ClusterIP that kube-proxy sends to the web pod, from the pod itself (hairpin) and
    # from the host. Not named like the pod: the pod's own name resolves to itself (/etc/hosts)
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "site"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": WEB_PORT}]},
    }  # fmt: skip
    cluster.kubectl("-n", namespace, "label", "pod", name, "app=web")
    cluster.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(service))
    cluster_ip = cluster.kubectl("-n", namespace, "get", "service", "site", "-o", "jsonpath={.spec.clusterIP}").stdout
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(host.SERVICE_CIDR)
    wait_for(
        "the Service to answer by name from the pod behind it",
        lambda: in_pod("wget -q -O- http://site/", check=False).strip() == "ready",
    )
    assert in_pod(f"wget -q -O- http://site.{namespace}.svc.cluster.local/").strip() == "ready"
    with urllib.request.urlopen(f"http://{cluster_ip}/", timeout=5) as answer:
        assert answer.read().decode().strip() == "ready"
    # the ground's livekit-server, as the examples name it (a selectorless Service with an EndpointSlice)
    assert node_ground.node.livekit_service_url == "ws://livekit.voicefleet.svc:7880"
    assert in_pod("wget -q -O- http://livekit.voicefleet.svc:7880/").strip() == "OK"
    # the API server by the name kopf's in-cluster login uses (its certificate names it)
    assert in_pod("KUBERNETES_SERVICE_HOST=kubernetes.default.svc kubectl get --raw /readyz").strip() == "ok"
    # nothing outside cluster.local resolves: the question never leaves the machine
    assert "NXDOMAIN" in in_pod("nslookup pypi.org", check=False)
    assert clusternet.dns_query(clusternet.DNS_SERVICE_IP, "pypi.org")[0] == NXDOMAIN


def test_real_node_joins_the_kwok_nodes_tainted_so_other_pods_stay_off_it(node_ground: NodeGround) -> None:
    cluster = node_ground.cluster
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(node_ground.cluster.nodes) < set(by_name)
    real = by_name[node_ground.node.name]
    assert real["metadata"]["labels"]["voicefleet.dev/real-node"] == "true"
    assert {"key": "voicefleet.dev/real-node", "value": "true", "effect": "NoSchedule"} in real["spec"]["taints"]
    assert real["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
    assert real["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.2"
    # a pod that does not tolerate the taint goes to a kwok node
    cluster.kubectl("create", "namespace", "real-node-other")
    cluster.kubectl("-n", "real-node-other", "apply", "-f", "-", input=json.dumps(web_pod("plain")))
    placed = wait_for("the scheduler to place the plain pod", lambda: get_pod(node_ground, "real-node-other", "plain")
                  ["spec"].get("nodeName"))  # fmt: skip
    assert placed in cluster.nodes
    cluster.kubectl("delete", "namespace", "real-node-other", "--wait=false")


def test_pod_reaches_the_operators_fleet_channel_on_the_pod_gateway(
    node_ground: NodeGround, web: tuple[str, str, float], tmp_path: Path
) -> None:
    namespace, name, _ = web
    cluster = node_ground.cluster
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    operator = OperatorProcess(cluster.kubeconfig, tmp_path, fleet_address=host.POD_GATEWAY)
    operator.start()
    try:
        assert operator.fleet_url.startswith(f"http://{host.POD_GATEWAY}:")
        answer = cluster.kubectl(
            "-n", namespace, "exec", name, "--", "wget", "-q", "-O-", operator.fleet_url + "/healthz"
        )
        assert answer.stdout.strip() == "ok"
    finally:
        operator.stop()


def _agent_docs(node_ground: NodeGround) -> list[dict[str, Any]]:
    """examples/ as the e2e tier runs them (local agent image, the ground's livekit-server), with one pod."""
    docs = load_examples(ROOT / "examples")
    for doc in docs:
        if doc["kind"] == "VoiceAgent":
            doc["spec"]["image"] = f"localhost/voicefleet-agent:{images.DEV_TAG}"
            doc["spec"]["imagePullPolicy"] = "Never"
            assert node_ground.livekit.pod_url is not None
            doc["spec"]["livekit"]["url"] = node_ground.livekit.pod_url
            doc["spec"]["scaling"]["minReplicas"] = 1
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == "livekit-credentials":
            doc["stringData"] = {"apiKey": node_ground.livekit.api_key, "apiSecret": node_ground.livekit.api_secret}
    return docs


@pytest.mark.timeout(1200)
def test_make_run_operator_is_followed_by_real_agent_pods_at_the_pod_gateway_and_a_loopback_url_shows(
    node_ground: NodeGround, tmp_path: Path
) -> None:
    """The operator outside the cluster (`make run`): given a fleet URL on its loopback, real agent pods cannot poll
    it and the VoiceAgent says so (FleetConnected=False naming the URL); restarted on the pod bridge's gateway
    (`make run FLEET_LISTEN=10.247.0.1:… FLEET_URL=http://10.247.0.1:…`), the re-rendered pods poll it: True."""
    cluster = node_ground.cluster
    images.load(node_ground.node.containerd_socket, images.build(("agent",)))
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    grace = {"VOICEFLEET_FLEET_GRACE_SECONDS": "20"}
    namespace = "fleet-connected"
    fleet = Namespace(cluster, namespace)
    for node in cluster.nodes:  # agent pods on the real node only
        cluster.kubectl("taint", "node", node, "voicefleet.dev/e2e=kwok:NoSchedule", "--overwrite")
    cluster.kubectl("taint", "node", node_ground.node.name, f"{NODE_LABEL}-")
    operator = OperatorProcess(cluster.kubeconfig, tmp_path, env=grace)  # fleet channel on 127.0.0.1
    try:
        operator.start()
        cluster.kubectl("create", "namespace", namespace)
        assert fleet.apply(*_agent_docs(node_ground)).returncode == 0
        cluster.kubectl("-n", namespace, "wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=300s",
                        timeout=320)  # fmt: skip
        cond = fleet.wait_condition("voiceagent", "tasks", "FleetConnected", "False", "PodsNotPolling")
        assert f"do not poll the fleet channel at {operator.fleet_url} " in cond["message"]
        operator.stop()

        operator = OperatorProcess(cluster.kubeconfig, tmp_path, env=grace, fleet_address=host.POD_GATEWAY)
        operator.start()
        assert operator.fleet_url.startswith(f"http://{host.POD_GATEWAY}:")

        def polling() -> dict[str, Any]:
            cond = fleet.condition("voiceagent", "tasks", "FleetConnected") or {}
            return cond if cond.get("status") == "True" and operator.fleet_url in cond["message"] else {}

        cond = wait_for("FleetConnected=True once the re-rendered pods poll the gateway", polling, timeout=420)
        assert cond["reason"] == "PodsPolling"
        pods = json.loads(fleet.kubectl("get", "pods", "-o", "json").stdout)["items"]
        live = [p for p in pods if ready(p) and not p["metadata"].get("deletionTimestamp")]
        assert live and all(p["spec"]["nodeName"] == node_ground.node.name for p in live)
        env = {e["name"]: e.get("value") for e in live[0]["spec"]["containers"][0]["env"]}
        assert env["VOICEFLEET_FLEET_URL"] == operator.fleet_url
    finally:
        fleet.dump_status_and_events()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        operator.stop()
        cluster.kubectl("taint", "node", node_ground.node.name, f"{NODE_LABEL}=true:NoSchedule", "--overwrite")
        for node in cluster.nodes:
            cluster.kubectl("taint", "node", node, "voicefleet.dev/e2e-", check=False)
