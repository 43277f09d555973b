"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, controller-manager, scheduler, kwok nodes."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testground import binaries, host, pki
from testground.process import ComponentError, Stack, free_port, http_ok

KWOK_STAGES = Path(__file__).with_name("kwok-stages.yaml")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
ZONES = ("zone-a", "zone-b", "zone-c")
NODE_CAPACITY = {"cpu": "32", "memory": "128Gi", "pods": "250", "ephemeral-storage": "500Gi"}
HPA_SYNC_PERIOD = "5s"

CLIENTS = {
    "admin": "/O=system:masters/CN=voicefleet-admin",
    "kube-controller-manager": "/CN=system:kube-controller-manager",
    "kube-scheduler": "/CN=system:kube-scheduler",
    # kwok writes node and pod status for every fake node, the kubelet's job: it gets cluster-admin rights.
    "kwok": "/O=system:masters/CN=kwok-controller",
    # the apiserver's identity towards aggregated API servers (e.g. a custom-metrics adapter)
    "front-proxy-client": "/CN=front-proxy-client",
    # the apiserver's identity towards kubelets (logs, exec, port-forward on the real node), as kubeadm issues it
    "kube-apiserver-kubelet-client": "/O=system:masters/CN=kube-apiserver-kubelet-client",
}
# etcd 3.5.1 lacks RequestWatchProgress, so the watch cache refuses watch-list streams. With the WatchList
# gate on, the apiserver also turns every watch from resourceVersion ""/"0" into one (kwok watches so), and
# such watches then fail at once: kwok saw pod changes only after its reflectors' back-off, up to ~30 s.
APISERVER_NO_WATCH_LIST = "--feature-gates=WatchList=false"
# Clients would still try watch-list first and log an error per informer; kwok reads the env, kcm the flag.
CLIENT_ENV = {"KUBE_FEATURE_WatchListClient": "false"}
NO_WATCH_LIST = "--feature-gates=WatchListClient=false"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    # a watch logs ResponseStarted when it opens, ResponseComplete when it ends; other requests only the latter
    "omitStages": ["RequestReceived"],
}
AUDIT_LOG = "audit.log"


class KubectlError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return f"kubectl {' '.join(self.cmd[3:])} exited with {self.returncode}: {(self.stderr or '').strip()}"


@dataclass(frozen=True)
class Cluster:
    """A running control plane: what tests and the operator need to talk to it."""

    kubeconfig: Path
    server: str
    logs_dir: Path
    token: str
    ca_file: Path
    nodes: tuple[str, ...] = ()

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached kubectl 1.34 against this cluster; raises KubectlError with stderr when `check`."""
        argv = [str(binaries.binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    def api(self) -> ApiClient:
        return ApiClient(self.server, self.ca_file, token=self.token)

    def to_json(self) -> dict[str, Any]:
        return {
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "logs_dir": str(self.logs_dir),
            "token": self.token,
            "ca_file": str(self.ca_file),
            "nodes": list(self.nodes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cluster:
        return cls(
            kubeconfig=Path(data["kubeconfig"]),
            server=data["server"],
            logs_dir=Path(data["logs_dir"]),
            token=data["token"],
            ca_file=Path(data["ca_file"]),
            nodes=tuple(data["nodes"]),
        )


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {body[:500]}")


class ApiClient:
    """Just enough of a Kubernetes client for readiness checks, with no dependency beyond the standard library."""

    def __init__(
        self,
        server: str,
        ca_file: Path | None,
        *,
        token: str | None = None,
        client_cert: pki.KeyPair | None = None,
    ) -> None:
        self.server = server
        self.token = token
        self.context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else ssl._create_unverified_context()
        if client_cert:
            self.context.load_cert_chain(client_cert.cert, client_cert.key)

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 5, content_type: str = "application/json"
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=timeout) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as e:
            raise ApiError(e.code, e.read().decode(errors="replace")) from None
        try:
            return json.loads(text)
        except ValueError:
            return text

    def get(self, path: str) -> Any:
        return self.request("GET", path)


def client_kubeconfig(server: str, ca: Path, client: pki.KeyPair, user: str) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testground", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
            "users": [
                {
                    "name": user,
                    "user": {"client-certificate-data": b64(client.cert), "client-key-data": b64(client.key)},
                }
            ],
            "contexts": [{"name": "testground", "context": {"cluster": "testground", "user": user}}],
            "current-context": "testground",
        },
        sort_keys=False,
    )


def _node(name: str, zone: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/agent": "",
                "topology.kubernetes.io/zone": zone,
                "type": "kwok",
            },
        },
        "status": {"capacity": NODE_CAPACITY, "allocatable": NODE_CAPACITY},
    }


def _node_ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@dataclass
class KubeStack(Stack[Cluster]):
    """Starts the control plane under `root` (config, pki, data, logs/); `stop` ends every process it started."""

    timeout: float = 90.0
    node_count: int = 3
    # Write an audit log (logs/audit.log, one JSON line per request of `audit_users`, and one more when a watch opens):
    # benchmarks count a client's requests by verb from it.
    audit: bool = False
    audit_users: tuple[str, ...] = ("voicefleet-admin",)
    # With a real node: the apiserver listens on the pod bridge's gateway (10.247.0.1:6443, host.py) instead of a free
    # loopback port, and reconciles the `kubernetes` Service's endpoints to that address: pods reach it through their
    # in-cluster config (the Service's ClusterIP, 10.96.0.1:443) by kube-proxy (clusternet.py), as in any cluster.
    serve_pods: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.timings: dict[str, float] = {}  # seconds from the start of `start` until each component was ready

    def _start(self) -> Cluster:
        started = time.monotonic()

        def ready(name: str) -> None:
            self.timings[name] = round(time.monotonic() - started, 2)

        binaries.ensure_built(binaries.K8S_BINARIES, self.logs_dir / "build.log")
        etcd_bin = binaries.etcd_binary()
        kube = self.root / "kube"
        if kube.exists():
            shutil.rmtree(kube)
        kube.mkdir(parents=True)
        certs = pki.generate(kube / "pki", CLIENTS)

        etcd_port, etcd_peer = free_port(), free_port()
        etcd = self.supervisor.spawn("etcd", [
            etcd_bin, "--name", "testground", "--data-dir", kube / "etcd",
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
            "--initial-cluster", f"testground=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ])  # fmt: skip
        etcd.wait_ready(lambda: http_ok(f"http://127.0.0.1:{etcd_port}/health"), self.timeout, "healthy")
        ready("etcd")

        token = secrets.token_urlsafe(32)
        tokens = kube / "tokens.csv"
        tokens.write_text(f'{token},voicefleet-admin,voicefleet-admin,"system:masters"\n')
        tokens.chmod(0o600)
        address, port = (host.POD_GATEWAY, host.API_PORT) if self.serve_pods else ("127.0.0.1", free_port())
        server = f"https://{address}:{port}"
        audit_flags: list[str | Path] = []
        if self.audit:
            policy = kube / "audit-policy.yaml"
            rules = [{"level": "Metadata", "users": list(self.audit_users)}, {"level": "None"}]
            policy.write_text(yaml.safe_dump({**AUDIT_POLICY, "rules": rules}))
            audit_flags = ["--audit-policy-file", policy, "--audit-log-path", self.logs_dir / AUDIT_LOG,
                           "--audit-log-maxsize", "0", "--audit-log-format", "json"]  # fmt: skip
        apiserver = self.supervisor.spawn("kube-apiserver", [
            binaries.binary("kube-apiserver"),
            "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
            "--bind-address", address, "--secure-port", str(port), "--advertise-address", address,
            # the `kubernetes` Service can't have a loopback endpoint: reconciled only when pods can reach the address
            "--endpoint-reconciler-type", "lease" if self.serve_pods else "none",
            "--tls-cert-file", certs.apiserver.cert, "--tls-private-key-file", certs.apiserver.key,
            "--client-ca-file", certs.ca.cert, "--token-auth-file", tokens,
            "--authorization-mode", "Node,RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", certs.service_account_pub,
            "--service-account-signing-key-file", certs.service_account_key,
            "--service-cluster-ip-range", "10.96.0.0/16",
            "--allow-privileged=true", "--profiling=false", APISERVER_NO_WATCH_LIST,
            "--requestheader-client-ca-file", certs.ca.cert, "--requestheader-allowed-names", "front-proxy-client",
            "--requestheader-username-headers", "X-Remote-User", "--requestheader-group-headers", "X-Remote-Group",
            "--requestheader-extra-headers-prefix", "X-Remote-Extra-",
            "--proxy-client-cert-file", certs.clients["front-proxy-client"].cert,
            "--proxy-client-key-file", certs.clients["front-proxy-client"].key,
            *audit_flags,
            "--kubelet-client-certificate", certs.clients["kube-apiserver-kubelet-client"].cert,
            "--kubelet-client-key", certs.clients["kube-apiserver-kubelet-client"].key,
            "--kubelet-certificate-authority", certs.ca.cert,
        ])  # fmt: skip
        admin = ApiClient(server, certs.ca.cert, client_cert=certs.clients["admin"])
        apiserver.wait_ready(lambda: admin.get("/readyz") == "ok", self.timeout, "ready (/readyz)")
        ready("kube-apiserver")

        kubeconfigs: dict[str, Path] = {}
        for name in ("admin", "kube-controller-manager", "kube-scheduler", "kwok"):
            pair = certs.clients[name]
            kubeconfigs[name] = kube / f"{name}.kubeconfig"
            kubeconfigs[name].write_text(client_kubeconfig(server, certs.ca.cert, pair, name))
            kubeconfigs[name].chmod(0o600)
        kubeconfig = self.root / "kubeconfig"
        shutil.copyfile(kubeconfigs["admin"], kubeconfig)
        kubeconfig.chmod(0o600)

        kcm_port, scheduler_port, kwok_port = free_port(), free_port(), free_port()
        kcm_cfg, sched_cfg = kubeconfigs["kube-controller-manager"], kubeconfigs["kube-scheduler"]
        kcm = self.supervisor.spawn("kube-controller-manager", [
            binaries.binary("kube-controller-manager"),
            "--kubeconfig", kcm_cfg, "--authentication-kubeconfig", kcm_cfg, "--authorization-kubeconfig", kcm_cfg,
            "--bind-address", "127.0.0.1", "--secure-port", str(kcm_port), "--cert-dir", kube / "kcm-serving",
            "--leader-elect=false", "--use-service-account-credentials=true",
            "--service-account-private-key-file", certs.service_account_key, "--root-ca-file", certs.ca.cert,
            "--cluster-signing-cert-file", certs.ca.cert, "--cluster-signing-key-file", certs.ca.key,
            "--horizontal-pod-autoscaler-sync-period", HPA_SYNC_PERIOD, NO_WATCH_LIST,
        ])  # fmt: skip
        scheduler = self.supervisor.spawn("kube-scheduler", [
            binaries.binary("kube-scheduler"),
            "--kubeconfig", sched_cfg, "--authentication-kubeconfig", sched_cfg,
            "--authorization-kubeconfig", sched_cfg,
            "--bind-address", "127.0.0.1", "--secure-port", str(scheduler_port), "--leader-elect=false",
            NO_WATCH_LIST,
        ])  # fmt: skip
        kwok = self.supervisor.spawn("kwok", [
            binaries.binary("kwok"),
            "--kubeconfig", kubeconfigs["kwok"], "--config", KWOK_STAGES,
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
            "--cidr", "10.244.0.1/16", "--node-ip", "10.0.0.1", "--node-lease-duration-seconds", "40",
            "--server-address", f"127.0.0.1:{kwok_port}",
        ], CLIENT_ENV)  # fmt: skip
        insecure = ssl._create_unverified_context()
        checks = [
            (kcm, lambda: http_ok(f"https://127.0.0.1:{kcm_port}/healthz", insecure)),
            (scheduler, lambda: http_ok(f"https://127.0.0.1:{scheduler_port}/healthz", insecure)),
            (kwok, lambda: http_ok(f"http://127.0.0.1:{kwok_port}/healthz")),
        ]
        with ThreadPoolExecutor(len(checks)) as pool:
            for future in [pool.submit(p.wait_ready, check, self.timeout, "healthy") for p, check in checks]:
                future.result()
        ready("kube-controller-manager, kube-scheduler, kwok")

        nodes = tuple(f"kwok-node-{i}" for i in range(self.node_count))
        for i, name in enumerate(nodes):
            try:
                admin.request("POST", "/api/v1/nodes", _node(name, ZONES[i % len(ZONES)]))
            except ApiError as e:
                if e.status != 409:
                    raise ComponentError("kwok", f"creating node {name} failed: {e}") from e

        def nodes_ready() -> bool:
            items = admin.get("/api/v1/nodes")["items"]
            return sum(1 for n in items if n["metadata"]["name"] in nodes and _node_ready(n)) == len(nodes)

        kwok.wait_ready(nodes_ready, self.timeout, f"managing {len(nodes)} Ready nodes")
        ready("nodes Ready")
        # The ServiceAccount controller creating `default` shows kcm's controllers run; pods need that account.
        kcm.wait_ready(
            lambda: bool(admin.get("/api/v1/namespaces/default/serviceaccounts/default")),
            self.timeout,
            "running controllers (default ServiceAccount)",
        )
        ready("default ServiceAccount")
        return Cluster(kubeconfig, server, self.logs_dir, token, certs.ca.cert, nodes)
