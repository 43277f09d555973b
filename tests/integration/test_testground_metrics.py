"""The test ground's metrics loop (testground.metrics) on the kwok ground: agent Services are discovered through the
API server with Prometheus' own ServiceAccount, prometheus-adapter serves custom.metrics.k8s.io, and stop leaves
nothing. Values scraped from real pods: tests/e2e/test_autoscale.py (kwok's pods are never scraped)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from testground.kube import ApiClient, Cluster
from testground.metrics import (
    ADAPTER,
    CUSTOM_METRICS_API,
    CUSTOM_METRICS_GROUP,
    DISCOVERY,
    PROMETHEUS,
    MetricsStack,
    agent_targets,
)
from testground.operator import wait_for
from testground.process import ComponentError

pytestmark = pytest.mark.integration


def agent_fleet(namespace: str) -> list[dict[str, Any]]:
    """A pod and the metrics Service the operator puts in front of a VoiceAgent's pods (its labels and port name)."""
    labels = {"app.kubernetes.io/name": "voicefleet-agent", "app.kubernetes.io/instance": "fleet-a"}
    service_labels = {**labels, "app.kubernetes.io/managed-by": "voicefleet-operator"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "fleet-a-0", "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "agent", "image": "agent", "ports": [{"name": "metrics",
                                                                              "containerPort": 9464}]}]},
    }  # fmt: skip
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "fleet-a-metrics", "namespace": namespace, "labels": service_labels},
        "spec": {"selector": labels, "ports": [{"name": "metrics", "port": 9464, "targetPort": "metrics"}]},
    }
    return [pod, service]


def targets(prometheus_url: str) -> dict[str, list[dict[str, Any]]]:
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/targets", timeout=5) as resp:
        data: dict[str, list[dict[str, Any]]] = json.loads(resp.read())["data"]
        return data


def test_prometheus_discovers_agent_services_and_the_adapter_serves_custom_metrics_until_stopped(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(agent_fleet(namespace)))
    stack = MetricsStack(tmp_path, cluster=cluster)
    try:
        metrics = stack.start()
        group = json.loads(cluster.kubectl("get", "--raw", f"/apis/{CUSTOM_METRICS_GROUP}/v1beta1").stdout)
        assert group["groupVersion"] == f"{CUSTOM_METRICS_GROUP}/v1beta1"
        api_service = json.loads(cluster.kubectl("get", "apiservice", CUSTOM_METRICS_API, "-o", "json").stdout)
        assert {c["type"]: c["status"] for c in api_service["status"]["conditions"]}["Available"] == "True"
        # what the discoverer lists with the prometheus ServiceAccount's token (kube-apiserver's RBAC decides)
        prometheus = ApiClient(
            cluster.server, cluster.ca_file, token=(tmp_path / "metrics" / "prometheus.token").read_text()
        )
        (group,) = wait_for("the agent pod behind its metrics Service", lambda: agent_targets(prometheus, ()))
        assert group["labels"] == {
            "namespace": namespace,
            "pod": "fleet-a-0",
            "service": "fleet-a-metrics",
            "voiceagent": "fleet-a",
        }
        assert group["targets"][0].endswith(":9464")
        # but a kwok pod's made-up address is never handed to Prometheus: nothing is scraped off our hosts
        assert json.loads((tmp_path / "metrics" / "agents.json").read_text()) == []
        assert targets(metrics.prometheus_url)["activeTargets"] == []
        pids = [p.popen.pid for p in stack.supervisor.processes]
        assert [p.name for p in stack.supervisor.processes] == [DISCOVERY, PROMETHEUS, ADAPTER]
    finally:
        stack.stop()
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)
    gone = cluster.kubectl("get", "apiservice", CUSTOM_METRICS_API, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr  # discovery is not left with an unavailable API


def test_a_missing_prometheus_is_a_loud_failure_naming_it(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ComponentError, match=r"^prometheus: not on PATH: apt-get install prometheus"):
        MetricsStack(tmp_path, cluster=cluster).start()
