"""One real Kubernetes node: a private containerd (runc, bridge CNI) and a secure kubelet v1.34.2 named 127.0.0.1.

It joins a test-ground cluster started with its pod network (host.claim): pods get 10.247.0.x on the bridge
`vfpods0`; kube-proxy and CoreDNS (clusternet.py) give them Services and cluster DNS, so they reach the apiserver at
`kubernetes.default.svc`, livekit-server at `livekit.voicefleet.svc:7880`, and the fleet channel at the bridge
gateway. The node is tainted and labelled `voicefleet.dev/real-node`: only pods that tolerate the taint run
there, the kwok nodes take everything else. See REAL-NODE.md in the shared notes for the recipe and its pitfalls.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testground import binaries, clusternet, host, pki, tinyimages
from testground.kube import CLIENT_ENV, ApiClient, ApiError, Cluster, client_kubeconfig
from testground.livekit import LiveKit
from testground.process import ComponentError, Stack, free_port, http_ok

NODE_NAME = "127.0.0.1"  # an IP-shaped name: the apiserver dials the node's Hostname address (REAL-NODE pitfall 6)
NODE_LABEL = "voicefleet.dev/real-node"
NODE_SELECTOR = {NODE_LABEL: "true"}
TOLERATION = {"key": NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}
CNI_NETWORK = "voicefleet-pods"
DRAIN_GRACE = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 2}
MERGE = "application/merge-patch+json"


@dataclass(frozen=True)
class RealNode:
    """A Ready real node: where its containerd listens, and what pods on it reach."""

    name: str
    root: Path
    containerd_socket: Path
    logs_dir: Path
    pod_gateway: str  # where services for pods listen (livekit-server, the fleet channel)
    api_service_url: str  # what in-cluster clients reach: https://KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT
    cluster_dns: str = clusternet.DNS_SERVICE_IP  # the kube-dns Service's ClusterIP, pods' nameserver
    livekit_service_url: str | None = None  # livekit-server as pods name it (ws://livekit.voicefleet.svc:7880)

    def ctr(self, *args: str, input: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        """containerd's own CLI on this node's containerd, in the CRI's namespace (k8s.io)."""
        argv = ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args]
        result = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
        if result.returncode:
            raise ComponentError("containerd", f"{' '.join(argv)}: {result.stderr.decode().strip()}")
        return result

    def import_image(self, archive: bytes) -> None:
        """Load a docker-archive or OCI-archive tar; pods use it with imagePullPolicy: Never."""
        self.ctr("images", "import", "-", input=archive)

    def images(self) -> list[str]:
        return self.ctr("images", "list", "--quiet").stdout.decode().split()

    @staticmethod
    def pin(pod_spec: dict[str, Any]) -> dict[str, Any]:
        """`pod_spec` with the node selector and toleration that put it on the real node."""
        return {**pod_spec, "nodeSelector": dict(NODE_SELECTOR), "tolerations": [dict(TOLERATION)]}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": str(self.root),
            "containerd_socket": str(self.containerd_socket),
            "logs_dir": str(self.logs_dir),
            "pod_gateway": self.pod_gateway,
            "api_service_url": self.api_service_url,
            "cluster_dns": self.cluster_dns,
            "livekit_service_url": self.livekit_service_url,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RealNode:
        return cls(
            **{**data, **{k: Path(data[k]) for k in ("root", "containerd_socket", "logs_dir")}},
        )


def containerd_config(root: Path) -> str:
    c = root / "containerd"
    return f"""\
# containerd 1.6 (Debian bookworm) as the kubelet's CRI, private to this node: own root, state and socket.
version = 2
root = "{c / "root"}"
state = "{c / "state"}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", \
"io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", \
"io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{host.CONTAINERD_SOCKET}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{tinyimages.PAUSE_IMAGE}"
  # no CAP_SYS_RESOURCE here: never ask runc for an oom_score_adj below containerd's own (pause wants -998)
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  # pod network namespaces under `state`, not /run/netns (machine-wide, shared with other tools)
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # crun 1.8 refuses this hybrid cgroup layout (REAL-NODE pitfall 2)
        BinaryName = "/usr/sbin/runc"
        # runc's state of a killed container must not outlive the node in the machine-wide /run/containerd/runc
        Root = "{host.RUN_DIR / "runc"}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{root / "cni" / "net.d"}"
    max_conf_num = 1
"""


def cni_config(root: Path) -> dict[str, Any]:
    """The bridge plugin on vfpods0 (made by host.claim). Pods get no default route: only the pod subnet and the
    Service CIDR (kube-proxy's, via the host), so nothing they send can leave the machine."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": host.POD_BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": host.POD_SUBNET, "gateway": host.POD_GATEWAY}]],
                    "routes": [{"dst": host.SERVICE_CIDR}],
                    "dataDir": str(root / "cni" / "ipam"),
                },
            },
            # no portmap: hostPort is not needed, and its CNI-HOSTPORT-* chains would be shared with podman's
        ],
    }


def kubelet_config(root: Path, *, port: int, healthz_port: int, ca: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # loopback only: the apiserver reaches the kubelet at the node's Hostname address (the node name)
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "tlsCertFile": str(root / "pki" / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(root / "pki" / "kubelet-serving.key"),
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        # secure: the apiserver presents its kubelet client certificate; everyone else asks the apiserver (webhook)
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{host.CONTAINERD_SOCKET}",
        "imageServiceEndpoint": f"unix://{host.CONTAINERD_SOCKET}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "failSwapOn": False,
        "registerNode": True,
        "maxPods": 50,
        "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "10s",
        # CoreDNS behind the kube-dns Service (clusternet.py); the host's resolv.conf is not for pods: not merged in
        "clusterDNS": [clusternet.DNS_SERVICE_IP],
        "clusterDomain": clusternet.CLUSTER_DOMAIN,
        "resolvConf": "",
        # images are imported, never pulled: image GC must not delete them
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "5%", "imagefs.available": "5%"},
        # etcd 3.5.1 in the test ground: the apiserver runs with WatchList=false (see README)
        "featureGates": {"WatchListClient": False},
    }


def _node_ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node.get("status", {}).get("conditions", []))


@dataclass
class RealNodeStack(Stack[RealNode]):
    """Starts containerd and the kubelet for a cluster whose ground holds the machine (host.claim)."""

    cluster: Cluster | None = None
    livekit: LiveKit | None = None  # exposed to pods as the Service livekit.voicefleet (clusternet.LIVEKIT_SERVICE)
    timeout: float = 90.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.node_root = self.root / "node"
        self.timings: dict[str, float] = {}
        self.claim: host.Claim | None = None
        spawned = self.supervisor.on_spawn

        def record(process: Any) -> None:  # the claim lists them, so a later claim knows whether they still run
            if self.claim is not None:
                self.claim.add(process)
            if spawned is not None:
                spawned(process)

        self.supervisor.on_spawn = record

    def _start(self) -> RealNode:
        started = time.monotonic()
        if self.cluster is None:
            raise ComponentError("real node", "needs a cluster")
        cluster = self.cluster
        self.claim = host.current(self.root)
        if self.claim is None:
            raise ComponentError("real node", f"the ground in {self.root} was started without its pod network")
        binaries.ensure_built(binaries.NODE_BINARIES, self.logs_dir / "build.log")
        root = self.node_root
        host.clean_node(root, self.claim.chains)
        subprocess.run(["rm", "-rf", str(root)], check=True)
        for sub in ("containerd", "cni/net.d", "pki", "kubelet"):
            (root / sub).mkdir(parents=True)

        ca = pki.KeyPair(cluster.ca_file, cluster.ca_file.with_suffix(".key"))
        issued = pki.issue(root / "pki", ca, {
            "kubelet-client": (f"/O=system:nodes/CN=system:node:{NODE_NAME}", "client"),
            "kubelet-serving": (f"/CN=system:node:{NODE_NAME}", "server"),
            "kube-proxy": ("/CN=system:kube-proxy", "client"),  # bound to system:node-proxier by default
            "coredns": (f"/CN={clusternet.COREDNS_USER}", "client"),
        }, sans=("IP:127.0.0.1", "DNS:localhost"))  # fmt: skip
        kubeconfigs = {}
        for name, user in (("kubelet", f"system:node:{NODE_NAME}"), ("kube-proxy", "system:kube-proxy"),
                           ("coredns", clusternet.COREDNS_USER)):  # fmt: skip
            pair = issued["kubelet-client" if name == "kubelet" else name]
            kubeconfigs[name] = root / f"{name}.kubeconfig"
            kubeconfigs[name].write_text(client_kubeconfig(cluster.server, ca.cert, pair, user))
            kubeconfigs[name].chmod(0o600)
        kubeconfig = kubeconfigs["kubelet"]
        (root / "containerd" / "config.toml").write_text(containerd_config(root))
        (root / "cni" / "net.d" / "10-voicefleet-pods.conflist").write_text(json.dumps(cni_config(root), indent=2))
        port, healthz_port = free_port(), free_port()
        (root / "kubelet-config.yaml").write_text(
            yaml.safe_dump(kubelet_config(root, port=port, healthz_port=healthz_port, ca=ca.cert), sort_keys=False)
        )

        socket = host.CONTAINERD_SOCKET
        host.RUN_DIR.mkdir(exist_ok=True)
        node = RealNode(
            name=NODE_NAME,
            root=root,
            containerd_socket=socket,
            logs_dir=self.logs_dir,
            pod_gateway=host.POD_GATEWAY,
            api_service_url=f"https://{host.API_SERVICE_IP}:{host.API_SERVICE_PORT}",
        )
        containerd = self.supervisor.spawn(
            "containerd", ["/usr/bin/containerd", "--config", root / "containerd" / "config.toml"]
        )
        containerd.wait_ready(lambda: socket.exists() and bool(node.ctr("version", timeout=5)), self.timeout, "serving")
        self.timings["containerd"] = round(time.monotonic() - started, 2)
        for image in (tinyimages.pause_image(), tinyimages.busybox_image()):
            node.import_image(tinyimages.docker_archive(image))
        self.timings["images imported"] = round(time.monotonic() - started, 2)

        kubelet_started = time.monotonic()
        kubelet = self.supervisor.spawn("kubelet", [
            binaries.binary("kubelet"), "--config", root / "kubelet-config.yaml", "--kubeconfig", kubeconfig,
            "--hostname-override", NODE_NAME, "--root-dir", root / "kubelet", "--cert-dir", root / "kubelet" / "pki",
            "--node-labels", f"{NODE_LABEL}=true,type=real",
            "--register-with-taints", f"{NODE_LABEL}=true:NoSchedule", "-v=2",
        ])  # fmt: skip
        kubelet.wait_ready(lambda: http_ok(f"http://127.0.0.1:{healthz_port}/healthz"), self.timeout, "healthy")
        api = cluster.api()

        def ready() -> bool:
            try:
                return _node_ready(api.get(f"/api/v1/nodes/{NODE_NAME}"))
            except ApiError as e:
                if e.status == 404:
                    return False
                raise

        kubelet.wait_ready(ready, self.timeout, f"registered as node {NODE_NAME} and Ready")
        self.timings["kubelet start -> node Ready"] = round(time.monotonic() - kubelet_started, 2)
        self._start_kube_proxy(cluster, kubeconfigs["kube-proxy"])
        self.timings["kube-proxy"] = round(time.monotonic() - started, 2)
        self._start_coredns(cluster, kubeconfigs["coredns"])
        self.timings["coredns"] = round(time.monotonic() - started, 2)
        if self.livekit is not None:
            node = self._expose_livekit(node, cluster, self.livekit)
        self.timings["total"] = round(time.monotonic() - started, 2)
        return node

    def _start_kube_proxy(self, cluster: Cluster, kubeconfig: Path) -> None:
        """kube-proxy for the node; ready once the `kubernetes` Service answers at its ClusterIP from the host."""
        healthz, metrics = free_port(), free_port()
        config = self.node_root / "kube-proxy-config.yaml"
        config.write_text(yaml.safe_dump(clusternet.kube_proxy_config(
            kubeconfig=str(kubeconfig), healthz_port=healthz, metrics_port=metrics, node_name=NODE_NAME,
        ), sort_keys=False))  # fmt: skip
        proxy = self.supervisor.spawn(
            "kube-proxy", [binaries.binary("kube-proxy"), "--config", config, "-v=2"], CLIENT_ENV
        )
        proxy.wait_ready(lambda: http_ok(f"http://127.0.0.1:{healthz}/healthz"), self.timeout, "healthy")
        via_service = ApiClient(f"https://{host.API_SERVICE_IP}:{host.API_SERVICE_PORT}", cluster.ca_file,
                                token=cluster.token)  # fmt: skip
        proxy.wait_ready(
            lambda: via_service.request("GET", "/readyz", timeout=2) == "ok",
            self.timeout,
            f"routing the `kubernetes` Service ({host.API_SERVICE_IP}:{host.API_SERVICE_PORT})",
        )

    def _start_coredns(self, cluster: Cluster, kubeconfig: Path) -> None:
        """CoreDNS on the pod bridge's gateway behind the kube-dns Service; ready once it resolves a Service."""
        port = free_port(socket.SOCK_DGRAM)
        health, ready_port = free_port(), free_port()
        corefile = self.node_root / "Corefile"
        corefile.write_text(clusternet.corefile(
            port=port, kubeconfig=str(kubeconfig), health_port=health, ready_port=ready_port,
        ))  # fmt: skip
        api = cluster.api()
        clusternet.create(api, clusternet.coredns_rbac())
        coredns = self.supervisor.spawn("coredns", [binaries.binary("coredns"), "-conf", corefile])
        coredns.wait_ready(lambda: http_ok(f"http://127.0.0.1:{ready_port}/ready"), self.timeout, "ready")
        clusternet.create(api, clusternet.external_service(
            "kube-system", "kube-dns",
            [("dns", "UDP", clusternet.DNS_PORT, port), ("dns-tcp", "TCP", clusternet.DNS_PORT, port)],
            host.POD_GATEWAY, cluster_ip=clusternet.DNS_SERVICE_IP, labels={"k8s-app": "kube-dns"},
        ))  # fmt: skip
        name = f"kubernetes.default.svc.{clusternet.CLUSTER_DOMAIN}"
        coredns.wait_ready(
            lambda: clusternet.dns_query(clusternet.DNS_SERVICE_IP, name) == (0, [host.API_SERVICE_IP]),
            self.timeout,
            f"answering {name} at the kube-dns Service ({clusternet.DNS_SERVICE_IP})",
        )

    def _expose_livekit(self, node: RealNode, cluster: Cluster, livekit: LiveKit) -> RealNode:
        """livekit-server as the Service `livekit` in `voicefleet`, the way users point a cluster at theirs."""
        if livekit.pod_url is None:
            raise ComponentError("real node", "livekit-server does not listen on the pod bridge (pod_address)")
        namespace, name = clusternet.LIVEKIT_SERVICE
        api = cluster.api()
        clusternet.ensure_namespace(api, namespace)
        port = int(livekit.pod_url.rsplit(":", 1)[1])
        clusternet.create(api, clusternet.external_service(
            namespace, name, [("http", "TCP", clusternet.LIVEKIT_SERVICE_PORT, port)], host.POD_GATEWAY,
        ))  # fmt: skip
        url = f"ws://{name}.{namespace}.svc:{clusternet.LIVEKIT_SERVICE_PORT}"
        return RealNode(**{**node.__dict__, "livekit_service_url": url})

    def stop(self) -> None:
        """Pods first (the kubelet stops their sandboxes and runs CNI DEL), then the kubelet, whatever containers and
        shims are left (a crash), containerd, and what they leave on the machine: mounts, /kubepods cgroups, iptables
        chains. The bridges stay (host.release)."""
        claim = self.claim or host.current(self.root)
        kubelet = next((p for p in self.supervisor.processes if p.name == "kubelet"), None)
        if self.cluster is not None and kubelet is not None:
            drain(self.cluster, self.timeout, alive=lambda: kubelet.exited() is None)
        if kubelet is not None:
            kubelet.stop()
        host.kill_leftovers()
        super().stop()
        if claim is not None:
            host.clean_node(self.node_root, claim.chains)
        if self.cluster is not None:
            forget(self.cluster)


def drain(cluster: Cluster, timeout: float = 60, alive: Callable[[], bool] = lambda: True) -> None:
    """Cordon the real node (replacements stay Pending), delete its pods with a short grace (the ground is going
    away) and wait while the kubelet, `alive`, stops them and runs CNI DEL. Best effort."""
    api = cluster.api()
    selector = f"fieldSelector=spec.nodeName%3D{NODE_NAME}"
    try:
        api.request("PATCH", f"/api/v1/nodes/{NODE_NAME}", {"spec": {"unschedulable": True}}, content_type=MERGE)
        for pod in api.get(f"/api/v1/pods?{selector}")["items"]:
            meta = pod["metadata"]
            try:
                api.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", DRAIN_GRACE)
            except ApiError as e:
                if e.status != 404:
                    raise
        deadline = time.monotonic() + timeout
        while alive() and api.get(f"/api/v1/pods?{selector}")["items"] and time.monotonic() < deadline:
            time.sleep(0.2)
    except (ApiError, OSError):
        pass  # the apiserver is gone: clean_node kills what the kubelet could not stop


def forget(cluster: Cluster) -> None:
    """Delete the Node object, so a ground that stays up shows no NotReady node."""
    with contextlib.suppress(ApiError, OSError):
        cluster.api().request("DELETE", f"/api/v1/nodes/{NODE_NAME}")
