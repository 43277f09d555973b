"""The metrics loop the HPAs scale on, for real: agent pods on the real node → Prometheus (kubernetes_sd) →
prometheus-adapter with the chart's rules → custom.metrics.k8s.io → the VoiceAgent's HPA (testground.metrics)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testground import binaries, images
from testground.metrics import Metrics, custom_metric_path
from testground.node import NODE_LABEL, NODE_SELECTOR, TOLERATION
from testground.operator import wait_for
from testground.pytest_plugin import NodeGround
from voicefleet_agent import contract

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NS = "voicefleet"
FLEET_NS = "voice"
AGENT = "tasks"


def helm(ground: NodeGround, *args: str) -> str:
    argv = [str(binaries.binary("helm")), "--kubeconfig", str(ground.cluster.kubeconfig), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def fleet(node_ground: NodeGround, node_metrics: Metrics) -> Iterator[NodeGround]:
    """docs/install.md steps 1-3 on the real node (as tests/e2e/test_install.py does), the examples' agent pods
    Ready there, with the test ground's metrics loop running."""
    built = images.build(("operator", "agent"))
    images.load(node_ground.node.containerd_socket, built)
    cluster = node_ground.cluster
    helm(node_ground, "install", "voicefleet-crds", str(ROOT / "charts/voicefleet-crds"), "--wait")
    values = {
        "image": {"repository": "localhost/voicefleet-operator", "tag": images.DEV_TAG, "pullPolicy": "Never"},
        "nodeSelector": NODE_SELECTOR,
        "tolerations": [TOLERATION],
    }
    values_file = node_ground.node.root / "autoscale-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm(node_ground, "install", "voicefleet", str(ROOT / "charts/voicefleet"), "--namespace", OPERATOR_NS,
         "--create-namespace", "-f", str(values_file))  # fmt: skip
    for node in cluster.nodes:  # agent pods only on the real node: kwok's pods have no address to scrape
        cluster.kubectl("taint", "node", node, "voicefleet.dev/e2e=kwok:NoSchedule", "--overwrite")
    cluster.kubectl("taint", "node", node_ground.node.name, f"{NODE_LABEL}-")
    docs = [d for f in sorted((ROOT / "examples").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "VoiceAgent":
            doc["spec"]["image"] = f"localhost/voicefleet-agent:{images.DEV_TAG}"
            doc["spec"]["imagePullPolicy"] = "Never"
            assert node_ground.livekit.pod_url is not None
            doc["spec"]["livekit"]["url"] = node_ground.livekit.pod_url
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == "livekit-credentials":
            doc["stringData"] = {"apiKey": node_ground.livekit.api_key, "apiSecret": node_ground.livekit.api_secret}
    cluster.kubectl("create", "namespace", FLEET_NS)
    cluster.kubectl("-n", FLEET_NS, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
    cluster.kubectl("-n", FLEET_NS, "wait", "--for=condition=Ready", f"voiceagent/{AGENT}", "--timeout=400s",
                    timeout=420)  # fmt: skip
    yield node_ground
    cluster.kubectl("-n", FLEET_NS, "delete", "voiceagent", "--all", "--wait=true", "--timeout=120s", check=False,
                    timeout=150)  # fmt: skip
    helm(node_ground, "uninstall", "voicefleet", "--namespace", OPERATOR_NS, "--wait")


def agent_pods(ground: NodeGround) -> set[str]:
    selector = f"app.kubernetes.io/instance={AGENT},app.kubernetes.io/name=voicefleet-agent"
    out = ground.cluster.kubectl("-n", FLEET_NS, "get", "pods", "-l", selector, "-o", "json").stdout
    return {p["metadata"]["name"] for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")}


def custom_metric(ground: NodeGround) -> dict[str, str]:
    """Pod → value, as the HPA controller reads them."""
    path = custom_metric_path(FLEET_NS, contract.ACTIVE_SESSIONS)
    result = ground.cluster.kubectl("get", "--raw", path, check=False)
    if result.returncode:
        return {}
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return {i["describedObject"]["name"]: i["value"] for i in items}


def test_the_custom_metrics_api_serves_every_agent_pods_active_sessions_from_prometheus(
    fleet: NodeGround, node_metrics: Metrics
) -> None:
    pods = agent_pods(fleet)
    assert len(pods) >= 2, pods  # the example's minReplicas

    def every_pod() -> dict[str, str]:
        values = custom_metric(fleet)
        return values if set(values) == pods else {}

    served = wait_for("custom.metrics.k8s.io to serve every agent pod", every_pod, timeout=180)
    assert all(value == "0" for value in served.values()), served  # no call yet: every pod idle
    scraped = {s["metric"]["pod"] for s in node_metrics.query(contract.ACTIVE_SESSIONS)}
    assert pods <= scraped, (pods, scraped)  # Prometheus found the pods itself (kubernetes_sd) and scraped them


def test_the_voiceagents_hpa_reads_the_active_sessions_metric(fleet: NodeGround) -> None:
    def current() -> dict[str, Any] | None:
        out = fleet.cluster.kubectl("-n", FLEET_NS, "get", "hpa", AGENT, "-o", "json").stdout
        status = json.loads(out).get("status", {})
        for metric in status.get("currentMetrics") or []:
            if metric.get("type") == "Pods" and metric["pods"]["metric"]["name"] == contract.ACTIVE_SESSIONS:
                found: dict[str, Any] = metric["pods"]["current"]
                return found
        return None

    value = wait_for("the HPA to see voicefleet_agent_active_sessions", current, timeout=180)
    assert value is not None and value["averageValue"] == "0", value
    described = fleet.cluster.kubectl("-n", FLEET_NS, "describe", "hpa", AGENT).stdout
    assert "<unknown>" not in described, described
    conditions = json.loads(fleet.cluster.kubectl("-n", FLEET_NS, "get", "hpa", AGENT, "-o", "json").stdout)
    able = {c["type"]: c for c in conditions["status"]["conditions"]}
    assert able["ScalingActive"]["status"] == "True", able["ScalingActive"]
