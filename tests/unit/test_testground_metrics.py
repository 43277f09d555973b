"""testground.metrics, pure parts: the agents' Endpoints as Prometheus file_sd groups."""

from __future__ import annotations

from typing import Any

from testground.metrics import file_sd_targets


def address(ip: str, pod: str, node: str) -> dict[str, Any]:
    return {"ip": ip, "nodeName": node, "targetRef": {"kind": "Pod", "name": pod, "namespace": "voice"}}


ENDPOINTS = {
    "items": [
        {
            "metadata": {
                "name": "tasks-metrics",
                "namespace": "voice",
                "labels": {"app.kubernetes.io/instance": "tasks"},
            },
            "subsets": [
                {
                    "addresses": [
                        address("10.247.0.7", "tasks-b", "127.0.0.1"),
                        address("10.244.0.9", "tasks-k", "kwok-node-0"),
                    ],
                    "notReadyAddresses": [address("10.247.0.5", "tasks-a", "127.0.0.1")],
                    "ports": [{"name": "metrics", "port": 9464}],
                }
            ],
        },
        {"metadata": {"name": "idle-metrics", "namespace": "voice"}},  # no pods yet: no subsets
    ]
}


def test_every_pod_behind_an_agent_metrics_service_is_a_target_with_the_service_monitors_labels() -> None:
    groups = file_sd_targets(ENDPOINTS, exclude_nodes={"kwok-node-0"})
    assert groups == [
        {
            "targets": ["10.247.0.5:9464"],  # not ready yet is still scraped, as kubernetes_sd does
            "labels": {"namespace": "voice", "pod": "tasks-a", "service": "tasks-metrics", "voiceagent": "tasks"},
        },
        {
            "targets": ["10.247.0.7:9464"],
            "labels": {"namespace": "voice", "pod": "tasks-b", "service": "tasks-metrics", "voiceagent": "tasks"},
        },
    ]


def test_pods_on_excluded_nodes_are_never_targets() -> None:
    pods = [g["labels"]["pod"] for g in file_sd_targets(ENDPOINTS, exclude_nodes=())]
    assert "tasks-k" in pods
    assert "tasks-k" not in [g["labels"]["pod"] for g in file_sd_targets(ENDPOINTS, exclude_nodes={"kwok-node-0"})]
