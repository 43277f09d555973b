"""Installed as users install it (docs/install.md), on the test ground's real node: both charts with the locally
built images, the operator in a pod on its ServiceAccount and the chart's RBAC, then the examples."""

from __future__ import annotations

import json

import pytest

from testground.install import FLEET_NS, OPERATOR_NS, apply_examples
from testground.pytest_plugin import NodeGround

# the first test also pays for the ground (and a wait while another ground holds the node), the images and the install
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


def test_operator_runs_in_a_pod_on_the_real_node_with_the_charts_service_account(installed: NodeGround) -> None:
    pods = json.loads(
        installed.cluster.kubectl("-n", OPERATOR_NS, "get", "pods", "-l", "app.kubernetes.io/component=operator",
                                  "-o", "json").stdout
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
    apply_examples(installed)
    cluster = installed.cluster
    pods = json.loads(cluster.kubectl("-n", FLEET_NS, "get", "pods", "-o", "json").stdout)["items"]
    assert pods and all(p["spec"]["nodeName"] == installed.node.name for p in pods)
    assert all(c["ready"] for p in pods for c in p["status"]["containerStatuses"])
