"""voicefleet as docs/install.md installs it on a ground with a real node (tests/e2e runs the document's own
commands, tests/e2e/conftest.py): where the host finds what the chart deployed.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from testground.kube import Cluster
from testground.operator import wait_for

OPERATOR_NS = "voicefleet"
RELEASE = "voicefleet"
FLEET_NS = "voice"


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
