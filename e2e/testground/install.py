"""voicefleet installed on a ground with a real node the way docs/install.md says, for the e2e tier (tests/e2e).

`installed(ground)`: `make images`' operator, agent and offline images in the node's containerd, both charts with
`helm install` (the operator in a pod on its ServiceAccount and the chart's RBAC; `offline.enabled` as "Trying it
without keys" says: the offline provider stack and the tasks MCP server as pods on the real node).
`apply_examples(ground)`: `examples/` as the ground needs them, in namespace `voice`, until `va/tasks` is Ready.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import select
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import yaml

from testground import binaries, host, images
from testground.kube import Cluster, KubectlError
from testground.livekit import LiveKit
from testground.node import NODE_LABEL, NODE_SELECTOR, TOLERATION, RealNode
from testground.operator import wait_for

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NS = "voicefleet"
RELEASE = "voicefleet"
FLEET_NS = "voice"
IMAGES = ("operator", "agent", "offline")
FLEET_PORT = 8090  # the chart's operator.fleetPort
TASKS_TOKEN_ENV = "VOICEFLEET_TASKS_TOKEN_KEY"


class Ground(Protocol):
    """A control plane and livekit-server that pods reach, with a real node (testground.pytest_plugin.NodeGround)."""

    @property
    def cluster(self) -> Cluster: ...
    @property
    def livekit(self) -> LiveKit: ...
    @property
    def node(self) -> RealNode: ...


def helm(cluster: Cluster, *args: str) -> str:
    argv = [str(binaries.binary("helm")), "--kubeconfig", str(cluster.kubeconfig), *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


def local_image(name: str) -> dict[str, str]:
    return {"repository": images.repository(name), "tag": images.DEV_TAG, "pullPolicy": "Never"}


def pods(cluster: Cluster, namespace: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["-n", namespace, "get", "pods", "-o", "json", *(["-l", selector] if selector else [])]
    items: list[dict[str, Any]] = json.loads(cluster.kubectl(*args).stdout)["items"]
    return items


def waited(cluster: Cluster, namespace: str, *args: str, timeout: float) -> None:
    """`kubectl -n namespace ARGS` that waits (rollout status, wait); on failure the namespace's pods, their recent
    Events and each container's last log lines go with the error, since teardown removes them."""
    try:
        cluster.kubectl("-n", namespace, *args, timeout=timeout)
    except (KubectlError, subprocess.TimeoutExpired) as error:
        seen = [
            cluster.kubectl("-n", namespace, "get", "pods", "-o", "wide", check=False).stdout,
            cluster.kubectl("-n", namespace, "get", "voiceagents", "-o", "wide", check=False).stdout,
            cluster.kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout,
        ]
        for pod in pods(cluster, namespace):
            name = pod["metadata"]["name"]
            logs = cluster.kubectl("-n", namespace, "logs", name, "--all-containers", "--tail=20", check=False)
            seen.append(f"--- logs of {name}:\n{logs.stdout}{logs.stderr}")
        raise AssertionError(f"{error}\n" + "\n".join(seen)) from error


def component_pod_ip(cluster: Cluster, component: str) -> str:
    """The pod IP of the chart's single-replica `component` (operator, offline, tasks)."""
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"

    def ip() -> str:
        running = [p for p in pods(cluster, OPERATOR_NS, selector) if not p["metadata"].get("deletionTimestamp")]
        return str(running[0]["status"].get("podIP", "")) if len(running) == 1 else ""

    found: str = wait_for(f"the {component} pod's IP", ip, timeout=60)
    return found


@contextlib.contextmanager
def installed(ground: Ground) -> Iterator[None]:
    """docs/install.md steps 0-2 with the offline stack; afterwards the fleet namespace and the release go."""
    cluster = ground.cluster
    images.load(ground.node.containerd_socket, images.build(IMAGES))
    helm(cluster, "upgrade", "--install", "voicefleet-crds", str(ROOT / "charts/voicefleet-crds"), "--wait")
    fleet_channel = FleetChannelStandIn()
    on_the_node: dict[str, Any] = {"nodeSelector": NODE_SELECTOR, "tolerations": [TOLERATION]}
    values: dict[str, Any] = {
        "image": local_image("operator"),
        **on_the_node,
        "operator": {"fleetUrl": fleet_channel.url},
        "offline": {"enabled": True, "image": local_image("offline"), **on_the_node},
    }
    values_file = ground.node.root / "e2e-values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    try:
        helm(cluster, "install", RELEASE, str(ROOT / "charts/voicefleet"), "--namespace", OPERATOR_NS,
             "--create-namespace", "-f", str(values_file))  # fmt: skip
        try:
            for deployment in ("operator", "offline", "tasks"):  # the offline stack loads Whisper before Ready
                waited(cluster, OPERATOR_NS, "rollout", "status", f"deployment/{RELEASE}-{deployment}",
                       "--timeout=300s", timeout=320)  # fmt: skip
            fleet_channel.start((component_pod_ip(cluster, "operator"), FLEET_PORT))
            yield
        finally:
            remove_examples(cluster)
            helm(cluster, "uninstall", RELEASE, "--namespace", OPERATOR_NS, "--wait")
    finally:
        fleet_channel.stop()


def remove_examples(cluster: Cluster) -> None:
    """The fleet namespace gone, while the operator still runs. Its agent pods first: they drain in seconds, but a
    namespace deletion that finds pods re-checks only after their grace period (630 s for the examples' drain)."""
    cluster.kubectl("-n", FLEET_NS, "delete", "voiceagents,providerpolicies", "--all", "--timeout=60s", timeout=80,
                    check=False)  # fmt: skip
    with contextlib.suppress(AssertionError):  # best effort: the node's teardown deletes whatever pods are left
        wait_for("the fleet's pods gone", lambda: not pods(cluster, FLEET_NS), timeout=120, every=1)
    cluster.kubectl("delete", "namespace", FLEET_NS, "--ignore-not-found", "--timeout=120s", timeout=140,
                    check=False)  # fmt: skip


def schedule_on_the_real_node_only(ground: Ground) -> None:
    """kwok nodes off limits and the real node open, so the operator's Deployments land on real containers."""
    cluster = ground.cluster
    for node in cluster.nodes:
        cluster.kubectl("taint", "node", node, "voicefleet.dev/e2e=kwok:NoSchedule", "--overwrite")
    cluster.kubectl("taint", "node", ground.node.name, f"{NODE_LABEL}-", check=False)  # already gone when reused


def examples() -> list[dict[str, Any]]:
    return [d for f in sorted((ROOT / "examples").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def examples_for_the_ground(ground: Ground, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the test ground differs in from a user's cluster: the local agent image and its LiveKit keys."""
    for doc in docs:
        if doc["kind"] == "VoiceAgent":
            doc["spec"]["image"] = f"{images.repository('agent')}:{images.DEV_TAG}"
            doc["spec"]["imagePullPolicy"] = "Never"
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == "livekit-credentials":
            doc["stringData"] = {"apiKey": ground.livekit.api_key, "apiSecret": ground.livekit.api_secret}
    return without_services(ground, docs)


def tasks_token_key(cluster: Cluster) -> str:
    """The key the chart generated for the tasks server (docs/install.md: agents get it through spec.env)."""
    data = cluster.kubectl("-n", OPERATOR_NS, "get", "secret", f"{RELEASE}-tasks-token", "-o", "jsonpath={.data.key}")
    return base64.b64decode(data.stdout).decode()


def apply_examples(ground: Ground, timeout: float = 300) -> list[dict[str, Any]]:
    """docs/install.md "Trying it without keys": examples/ (as the ground needs them) in namespace `voice`, the
    chart's tasks token key given to the agents through spec.env, then `kubectl wait` for va/tasks Ready."""
    cluster = ground.cluster
    schedule_on_the_real_node_only(ground)
    cluster.kubectl("create", "namespace", FLEET_NS)
    cluster.kubectl("-n", FLEET_NS, "create", "secret", "generic", "tasks-token",
                    f"--from-literal=key={tasks_token_key(cluster)}")  # fmt: skip
    docs = examples_for_the_ground(ground, examples())
    for doc in docs:
        if doc["kind"] == "VoiceAgent":
            token = {"name": TASKS_TOKEN_ENV, "secretKeyRef": {"name": "tasks-token", "key": "key"}}
            doc["spec"]["env"] = [*doc["spec"].get("env", []), token]
    cluster.kubectl("-n", FLEET_NS, "apply", "-f", "-", input=yaml.safe_dump_all(docs))
    waited(cluster, FLEET_NS, "wait", "--for=condition=Ready", "voiceagent/tasks", f"--timeout={timeout:.0f}s",
           timeout=timeout + 20)  # fmt: skip
    return docs


# ------------------------------------------------------------------------------------------------------------------
# UNTIL kube-proxy AND CLUSTER DNS LAND (branch `net`): the test ground has no Services and no cluster DNS, so
# nothing in a pod resolves or reaches `<service>.<namespace>.svc`. Delete this section and its two uses above
# (`without_services` in examples_for_the_ground, FleetChannelStandIn in `installed`) once they do.
# ------------------------------------------------------------------------------------------------------------------

SERVICE_URL = re.compile(
    r"^(?P<scheme>[a-z]+)://(?P<service>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc(?:\.cluster\.local)?"
    r":(?P<port>\d+)(?P<path>/.*)?$"
)


def without_services(ground: Ground, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The examples with every `http://<service>.<namespace>.svc:<port>` URL replaced by an address pods reach: the
    Service's endpoint (pod IP and target port, from its EndpointSlice), and the VoiceAgent's LiveKit URL by
    livekit-server on the pod bridge's gateway (the ground runs it on the host, not behind a Service)."""

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        if isinstance(value, str) and (match := SERVICE_URL.match(value)):
            ip, port = service_endpoint(ground.cluster, match["service"], match["namespace"], int(match["port"]))
            return f"{match['scheme']}://{ip}:{port}{match['path'] or ''}"
        return value

    rewritten = []
    for doc in docs:
        if doc["kind"] == "VoiceAgent":
            assert ground.livekit.pod_url is not None, "the ground was started without its pod network"
            doc["spec"]["livekit"]["url"] = ground.livekit.pod_url
        rewritten.append(rewrite(doc))
    return rewritten


def service_endpoint(cluster: Cluster, service: str, namespace: str, port: int) -> tuple[str, int]:
    """(pod IP, target port) behind `port` of a Service, as kube-proxy would pick it: a ready endpoint."""
    spec = json.loads(cluster.kubectl("-n", namespace, "get", "service", service, "-o", "json").stdout)["spec"]
    (name,) = [p.get("name", "") for p in spec["ports"] if p["port"] == port]

    def endpoint() -> tuple[str, int] | None:
        slices = json.loads(cluster.kubectl("-n", namespace, "get", "endpointslices", "-o", "json",
                                            "-l", f"kubernetes.io/service-name={service}").stdout)["items"]  # fmt: skip
        for s in slices:
            target = next((p["port"] for p in s.get("ports") or [] if p.get("name", "") == name), None)
            ready = [e for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")]
            if target is not None and ready:
                return str(ready[0]["addresses"][0]), int(target)
        return None

    found = wait_for(f"a ready endpoint of Service {namespace}/{service}:{port}", endpoint, 120)
    assert found is not None
    return found


class _Forwarder(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Pipe)
        self.target: tuple[str, int] | None = None
        self.closing = threading.Event()


class _Pipe(socketserver.BaseRequestHandler):
    server: _Forwarder

    def handle(self) -> None:
        assert self.server.target is not None
        with socket.create_connection(self.server.target, timeout=10) as upstream:
            upstream.settimeout(None)
            peers = {self.request: upstream, upstream: self.request}
            while not self.server.closing.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.5)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)


class FleetChannelStandIn:
    """What the operator's Service would be to agent pods for the fleet channel: an address on the pod bridge's
    gateway (known before the install, so the chart renders it as `operator.fleetUrl`) that forwards to the
    operator pod's fleet port. Pods cannot resolve the chart's default `voicefleet-operator.voicefleet.svc`."""

    def __init__(self) -> None:
        self._server = _Forwarder((host.POD_GATEWAY, 0))
        self._thread: threading.Thread | None = None
        self.url = f"http://{host.POD_GATEWAY}:{self._server.server_address[1]}"

    def start(self, target: tuple[str, int]) -> None:
        self._server.target = target
        self._thread = threading.Thread(target=self._server.serve_forever, name="fleet-stand-in", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.closing.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()
