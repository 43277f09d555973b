"""The metrics loop the HPAs scale on, for real: agent pods on the real node → Prometheus (file_sd from their
Endpoints) → prometheus-adapter with the chart's rules → custom.metrics.k8s.io → the VoiceAgent's HPA
(testground.metrics)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from testground.metrics import Metrics, custom_metric_path
from testground.operator import wait_for
from testground.pytest_plugin import NodeGround
from voicefleet_agent import contract

# the first test may pay for the ground and the install (package-scoped)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

FLEET_NS = "voice"
AGENT = "tasks"


@pytest.fixture(scope="module")
def fleet(installed: NodeGround, node_metrics: Metrics) -> NodeGround:
    """docs/install.md on the real node (tests/e2e/conftest.py: the examples' agent pods Ready there), with the test
    ground's metrics loop running."""
    return installed


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
    assert pods <= scraped, (pods, scraped)  # Prometheus found the pods (from their Endpoints) and scraped them


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
