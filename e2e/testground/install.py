"""voicefleet installed as docs/install.md says, on a ground with a real node: the document's own shell commands,
run in order (`testground.docrun`), with `REGISTRY=localhost TAG=dev` (what `make images` tags); `examples/` go in
as the document says, unmodified. Used by the e2e tier (tests/e2e/conftest.py) and by `make demo`; plus where the
host finds what the chart deployed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from testground import binaries, docrun, images
from testground.kube import Cluster
from testground.livekit import LiveKit
from testground.node import NODE_LABEL, RealNode
from testground.operator import wait_for

ROOT = Path(__file__).resolve().parents[2]
INSTALL_DOC = ROOT / "docs/install.md"
OPERATOR_NS = "voicefleet"
RELEASE = "voicefleet"
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
    docrun.Skip("make run FLEET_LISTEN", "the operator outside the cluster; here it runs in its pod", block=True),
)
EXAMPLE_IMAGE = "ghcr.io/voicefleet/agent:0.1.0"
LIVEKIT_PUBLIC_URL = "wss://livekit.example.com"  # docs/install.md's placeholder for the browser channel's livekitUrl
AGENT_PODS = "app.kubernetes.io/name=voicefleet-agent,app.kubernetes.io/instance=tasks"


class Ground(Protocol):
    """A control plane with a real node (testground.pytest_plugin.NodeGround, testground.ground.Ground)."""

    @property
    def cluster(self) -> Cluster: ...
    @property
    def livekit(self) -> LiveKit: ...
    @property
    def node(self) -> RealNode: ...


def documented_steps(ground: Ground) -> list[docrun.Step]:
    return docrun.plan(
        INSTALL_DOC.read_text(),
        SKIPS,
        {
            "REGISTRY=registry.example.com/voice": f"REGISTRY={REGISTRY}",
            "TAG=0.1.0": f"TAG={TAG}",
            "--address /run/containerd/containerd.sock": f"--address {ground.node.containerd_socket}",
            f"LIVEKIT_PUBLIC_URL={LIVEKIT_PUBLIC_URL}": f"LIVEKIT_PUBLIC_URL={public_livekit_url(ground.livekit)}",
        },
    )


def public_livekit_url(livekit: LiveKit) -> str:
    """LiveKit as the host's browser reaches it (the browser channel's livekitUrl): the pod bridge's gateway, which
    livekit-server also advertises for ICE (not 127.0.0.1: a loopback target for a page served from a ClusterIP,
    which chromium's local network access rules treat apart)."""
    if livekit.pod_url is None:
        raise AssertionError("livekit-server does not listen on the pod bridge: the ground has no real node")
    return livekit.pod_url


def install_as_documented(ground: Ground, *, show: Callable[[docrun.Step], None] | None = None) -> None:
    """docs/install.md, every command the ground can run, ending with examples/ applied and `va/tasks` Ready.
    `show` sees each step before it runs."""
    cluster = ground.cluster
    # pods off the kwok nodes and onto the real node, where the chart and the operator put them without a selector
    for node in cluster.nodes:
        cluster.kubectl("taint", "node", node, "voicefleet.dev/e2e=kwok:NoSchedule", "--overwrite")
    cluster.kubectl("taint", "node", ground.node.name, f"{NODE_LABEL}-", check=False)
    env = {
        "KUBECONFIG": str(cluster.kubeconfig),
        "PATH": f"{binaries.bin_dir()}:{ROOT / '.venv/bin'}:{os.environ['PATH']}",  # kubectl 1.34 and helm 4
        "REGISTRY": REGISTRY,
        "TAG": TAG,
    }
    for step in documented_steps(ground):
        if show is not None:
            show(step)
        docrun.run(step, cwd=ROOT, env=env, timeout=900)


def uninstall(ground: Ground) -> None:
    """The fleet first, while the operator that holds its finalizers still runs; then the release."""
    cluster = ground.cluster
    remove_examples(cluster)
    helm = [str(binaries.binary("helm")), "--kubeconfig", str(cluster.kubeconfig)]
    subprocess.run([*helm, "uninstall", RELEASE, "--namespace", OPERATOR_NS, "--wait"], timeout=300, check=True)


def remove_examples(cluster: Cluster) -> None:
    """The fleet namespace gone, while the operator still runs. Its agent pods first: they drain in seconds, but a
    namespace deletion that finds pods re-checks only after their grace period (630 s for the examples' drain)."""
    cluster.kubectl("-n", FLEET_NS, "delete", "voiceagents,providerpolicies", "--all", "--timeout=60s", timeout=80,
                    check=False)  # fmt: skip
    with contextlib.suppress(AssertionError):  # best effort: the node's teardown deletes whatever pods are left
        wait_for("the fleet's pods gone", lambda: not pods(cluster, FLEET_NS), timeout=120, every=1)
    cluster.kubectl("delete", "namespace", FLEET_NS, "--ignore-not-found", "--timeout=120s", timeout=140,
                    check=False)  # fmt: skip


def agent_pods(cluster: Cluster) -> list[dict[str, Any]]:
    """The example VoiceAgent's pods that are not going away."""
    return [p for p in pods(cluster, FLEET_NS, AGENT_PODS) if not p["metadata"].get("deletionTimestamp")]


def pods(cluster: Cluster, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["-n", namespace, "get", "pods", "-o", "json", *(["-l", selector] if selector else [])]
    items: list[dict[str, Any]] = json.loads(cluster.kubectl(*args).stdout)["items"]
    return items


def component_pod_ip(cluster: Cluster, component: str) -> str:
    """The pod IP of the chart's single-replica `component` (operator, offline, tasks)."""
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"

    def ip() -> str:
        running = [p for p in pods(cluster, OPERATOR_NS, selector) if not p["metadata"].get("deletionTimestamp")]
        return str(running[0]["status"].get("podIP", "")) if len(running) == 1 else ""

    found: str = wait_for(f"the {component} pod's IP", ip, timeout=60)
    return found


def tasks_token_key(cluster: Cluster) -> str:
    """The key the chart generated for the tasks server (docs/install.md: agents get it through spec.env)."""
    data = cluster.kubectl("-n", OPERATOR_NS, "get", "secret", f"{RELEASE}-tasks-token", "-o", "jsonpath={.data.key}")
    return base64.b64decode(data.stdout).decode()


def jobs_by_pod(cluster: Cluster, room: str) -> dict[str, int]:
    """Agent pod → jobs its log shows for `room` (a room name followed by its closing quote, or a name prefix)."""
    counts = {}
    for pod in agent_pods(cluster):
        name = str(pod["metadata"]["name"])
        log = cluster.kubectl("-n", FLEET_NS, "logs", name).stdout
        counts[name] = sum(1 for line in log.splitlines()
                           if '"received job request"' in line and f'"room": "{room}' in line)  # fmt: skip
    return counts
