"""The e2e tier's install, shared by its modules (one ground, one install per run): the shell commands of
docs/install.md, run in order on the test ground's real node (with kube-proxy and cluster DNS), with
`REGISTRY=localhost TAG=dev` (what `make images` tags); `examples/` go in as the document says, unmodified."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testground import binaries, docrun, images
from testground.node import NODE_LABEL
from testground.pytest_plugin import NodeGround

ROOT = Path(__file__).resolve().parents[2]
INSTALL_DOC = ROOT / "docs/install.md"
OPERATOR_NS = "voicefleet"
FLEET_NS = "voice"
REGISTRY, TAG = "localhost", images.DEV_TAG
# what the test ground does not have, and so does not run (docs/install.md says the same)
SKIPS = (
    docrun.Skip("podman push", "no registry here"),
    docrun.Skip("BASE=python:", "the official Python image comes from Docker Hub"),
    docrun.Skip("metrics.serviceMonitor.enabled=true", "no Prometheus Operator CRDs", block=True),
    docrun.Skip("prometheus-community/prometheus-adapter", "a chart from a remote repository", block=True),
    docrun.Skip("$DEEPGRAM_API_KEY", "real provider keys", block=True),
    docrun.Skip("my-voiceagent.yaml", "the reader's own VoiceAgent", block=True),
)
EXAMPLE_IMAGE = "ghcr.io/voicefleet/agent:0.1.0"


def agent_pods(ground: NodeGround) -> list[dict[str, Any]]:
    out = ground.cluster.kubectl("-n", FLEET_NS, "get", "pods", "-l", "app.kubernetes.io/instance=tasks", "-o", "json")
    return [p for p in json.loads(out.stdout)["items"] if not p["metadata"].get("deletionTimestamp")]


@pytest.fixture(scope="package")
def installed(node_ground: NodeGround) -> Iterator[NodeGround]:
    """docs/install.md, every command the ground can run, ending with examples/ applied and `va/tasks` Ready."""
    cluster = node_ground.cluster
    # pods off the kwok nodes and onto the real node, where the chart and the operator put them without a selector
    for node in cluster.nodes:
        cluster.kubectl("taint", "node", node, "voicefleet.dev/e2e=kwok:NoSchedule", "--overwrite")
    cluster.kubectl("taint", "node", node_ground.node.name, f"{NODE_LABEL}-", check=False)
    env = {
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{binaries.bin_dir()}:{ROOT / '.venv/bin'}:{os.environ['PATH']}",  # kubectl 1.34 and helm 4
        "REGISTRY": REGISTRY,
        "TAG": TAG,
    }
    steps = docrun.plan(
        INSTALL_DOC.read_text(),
        SKIPS,
        {
            "REGISTRY=registry.example.com/voice": f"REGISTRY={REGISTRY}",
            "TAG=0.1.0": f"TAG={TAG}",
            "--address /run/containerd/containerd.sock": f"--address {node_ground.node.containerd_socket}",
        },
    )
    for step in steps:
        docrun.run(step, cwd=ROOT, env=env, timeout=900)
    yield node_ground
    # the fleet first, while the operator that holds its finalizers still runs
    cluster.kubectl("delete", "namespace", FLEET_NS, "--timeout=180s", timeout=200, check=False)
    helm = [str(binaries.binary("helm")), "--kubeconfig", str(cluster.kubeconfig)]
    subprocess.run([*helm, "uninstall", "voicefleet", "--namespace", OPERATOR_NS, "--wait"], timeout=300, check=True)
