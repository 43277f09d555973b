"""Installed as users install it (docs/install.md), on the test ground's real node: both charts with the locally
built images, the operator in a pod on its ServiceAccount and the chart's RBAC, then the examples."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from testground import binaries, images
from testground.node import NODE_LABEL, NODE_SELECTOR, TOLERATION
from testground.pytest_plugin import NodeGround

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NS = "voicefleet"
FLEET_NS = "voice"


def helm(ground: NodeGround, *args: str) -> str:
    argv = [str(binaries.binary("helm")), "--kubeconfig", str(ground.cluster.kubeconfig), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(node_ground: NodeGround) -> Iterator[NodeGround]:
    """make images' operator and agent images in the node's containerd, then docs/install.md steps 1 and 2."""
    built = images.build(("operator", "agent"))
    images.load(node_ground.node.containerd_socket, built)
    helm(node_ground, "install", "voicefleet-crds", str(ROOT / "charts/voicefleet-crds"), "--wait")
    values = {
        "image": {"repository": "localhost/voicefleet-operator", "tag": images.DEV_TAG, "pullPolicy": "Never"},
        "nodeSelector": NODE_SELECTOR,
        "tolerations": [TOLERATION],
    }
    values_file = node_ground.node.root / "e2e-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    helm(node_ground, "install", "voicefleet", str(ROOT / "charts/voicefleet"), "--namespace", OPERATOR_NS,
         "--create-namespace", "-f", str(values_file))  # fmt: skip
    node_ground.cluster.kubectl(
        "-n", OPERATOR_NS, "rollout", "status", "deployment/voicefleet-operator", "--timeout=240s", timeout=300
    )
    yield node_ground
    helm(node_ground, "uninstall", "voicefleet", "--namespace", OPERATOR_NS, "--wait")


def test_operator_runs_in_a_pod_on_the_real_node_with_the_charts_service_account(installed: NodeGround) -> None:
    pods = json.loads(
        installed.cluster.kubectl("-n", OPERATOR_NS, "get", "pods", "-o", "json").stdout
    )["items"]  # fmt: skip
    (pod,) = pods
    assert pod["spec"]["nodeName"] == installed.node.name
    assert not pod["spec"].get("hostNetwork")
    assert pod["spec"]["serviceAccountName"] == "voicefleet-operator"
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0
    assert status["imageID"] and "voicefleet-operator" in status["image"]
    # Ready means logged in and watching (its /readyz): it used the in-cluster config, the token of its account
    logs = installed.cluster.kubectl("-n", OPERATOR_NS, "logs", pod["metadata"]["name"]).stdout
    assert "kubernetes.default.svc" not in logs


def test_examples_become_ready_with_agent_pods_on_the_real_node(installed: NodeGround) -> None:
    cluster = installed.cluster
    # kwok nodes off limits and the real node open, so the operator's Deployment lands on real containers
    for node in cluster.nodes:
        cluster.kubectl("taint", "node", node, "voicefleet.dev/e2e=kwok:NoSchedule", "--overwrite")
    cluster.kubectl("taint", "node", installed.node.name, f"{NODE_LABEL}-")
    docs = [d for f in sorted((ROOT / "examples").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    for doc in docs:  # what the test ground differs in: local images, its livekit-server and keys
        if doc["kind"] == "VoiceAgent":
            doc["spec"]["image"] = f"localhost/voicefleet-agent:{images.DEV_TAG}"
            doc["spec"]["imagePullPolicy"] = "Never"
            assert installed.livekit.pod_url is not None
            doc["spec"]["livekit"]["url"] = installed.livekit.pod_url
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == "livekit-credentials":
            doc["stringData"] = {"apiKey": installed.livekit.api_key, "apiSecret": installed.livekit.api_secret}
    cluster.kubectl("create", "namespace", FLEET_NS)
    cluster.kubectl("-n", FLEET_NS, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
    cluster.kubectl("-n", FLEET_NS, "wait", "--for=condition=Ready", "voiceagent/tasks", "--timeout=300s", timeout=320)
    pods = json.loads(cluster.kubectl("-n", FLEET_NS, "get", "pods", "-o", "json").stdout)["items"]
    assert pods and all(p["spec"]["nodeName"] == installed.node.name for p in pods)
    assert all(c["ready"] for p in pods for c in p["status"]["containerStatuses"])
