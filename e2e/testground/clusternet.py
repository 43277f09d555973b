"""Services and cluster DNS for the real node, as a cluster has them: kube-proxy (iptables mode) and CoreDNS.

- kube-proxy v1.34.2 (the kubelet's version) runs on the host for the real node. It programs the ClusterIPs of
  SERVICE_CIDR for pods (PREROUTING) and for the host itself (OUTPUT; host.claim routes SERVICE_CIDR to the
  address-less `vfsvc0`, so nothing for a ClusterIP ever takes the default route). The `kubernetes` Service has the
  endpoint the apiserver reconciles itself: its advertise address on the pod bridge (10.247.0.1:6443).
- CoreDNS (built from the Go module proxy) runs on the host like the control plane, behind the `kube-dns` Service
  (kube-system, ClusterIP 10.96.0.10, a selectorless Service with an EndpointSlice on the pod bridge's gateway). It
  answers cluster.local from the API server and NXDOMAIN for every other name: nothing leaves the machine. A host
  process rather than a pod: no image to build and import, it is up before the first pod asks, and it is stopped
  and checked like every other component of the ground.
- Services of the ground that pods use the way a cluster uses an external service: `livekit` in namespace
  `voicefleet`, a selectorless Service whose EndpointSlice points at livekit-server on the pod bridge's gateway.

kube-proxy leaves the sysctls it would tune alone (conntrack sizes and timeouts, route_localnet: no localhost
NodePorts), and host.clean_node removes its KUBE-* chains in every table of both families.
"""

from __future__ import annotations

import random
import socket
import struct
from typing import Any

from testground import host
from testground.kube import ApiClient, ApiError

CLUSTER_DOMAIN = "cluster.local"
DNS_SERVICE_IP = "10.96.0.10"  # kube-dns, like kubeadm's tenth address of the Service CIDR
DNS_PORT = 53
LIVEKIT_SERVICE = ("voicefleet", "livekit")  # what examples/20-voiceagent.yaml names: ws://livekit.voicefleet.svc:7880
LIVEKIT_SERVICE_PORT = 7880
MANAGED_BY = "testground"
# the ClusterRole CoreDNS's kubernetes plugin needs (as in CoreDNS's own deployment manifests)
COREDNS_USER = "system:coredns"
COREDNS_RULES = [
    {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
]


def kube_proxy_config(*, kubeconfig: str, healthz_port: int, metrics_port: int, node_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": kubeconfig},
        "hostnameOverride": node_name,
        "mode": "iptables",
        "clusterCIDR": host.POD_SUBNET,  # traffic from elsewhere (the host) to a ClusterIP is masqueraded
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        # NodePorts only on the pod bridge's gateway, never on the machine's other interfaces
        "nodePortAddresses": [f"{host.POD_GATEWAY}/32"],
        "iptables": {"localhostNodePorts": False, "masqueradeAll": False, "syncPeriod": "30s", "minSyncPeriod": "1s"},
        # 0: leave the machine's conntrack table size and timeouts as they are
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        "oomScoreAdj": 0,  # no CAP_SYS_RESOURCE here (REAL-NODE pitfall 1)
    }


def corefile(*, port: int, kubeconfig: str, health_port: int, ready_port: int) -> str:
    """cluster.local (and reverse lookups of pod and Service addresses) from the API server; NXDOMAIN otherwise."""
    return f"""\
{CLUSTER_DOMAIN}:{port} in-addr.arpa:{port} ip6.arpa:{port} {{
    bind {host.POD_GATEWAY}
    errors
    health 127.0.0.1:{health_port}
    ready 127.0.0.1:{ready_port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} testground
        pods insecure
        ttl 5
    }}
    cache 5
    loadbalance
}}
.:{port} {{
    bind {host.POD_GATEWAY}
    errors
    # no forwarding: names outside the cluster do not exist for pods, and no query leaves the machine
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""


def coredns_rbac() -> list[tuple[str, dict[str, Any]]]:
    return [
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": COREDNS_USER}, "rules": COREDNS_RULES},
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": COREDNS_USER},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": COREDNS_USER},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS_USER}]},
        ),
    ]  # fmt: skip


def external_service(
    namespace: str,
    name: str,
    ports: list[tuple[str, str, int, int]],
    address: str,
    *,
    cluster_ip: str | None = None,
    labels: dict[str, str] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """A selectorless Service and its EndpointSlice (how a cluster points at something outside it): ports are
    (name, protocol, Service port, port at `address`). Returns (collection path, object) to create in order."""
    service_ports = [{"name": n, "protocol": proto, "port": port} for n, proto, port, _ in ports]
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**(labels or {}), "app.kubernetes.io/managed-by": MANAGED_BY},
        },
        "spec": {"type": "ClusterIP", "ports": service_ports, **({"clusterIP": cluster_ip} if cluster_ip else {})},
    }
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": n, "protocol": proto, "port": target} for n, proto, _, target in ports],
    }
    return [
        (f"/api/v1/namespaces/{namespace}/services", service),
        (f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices", endpoints),
    ]


def ensure_namespace(api: ApiClient, name: str) -> None:
    create(api, [("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})])


def create(api: ApiClient, objects: list[tuple[str, dict[str, Any]]]) -> None:
    """POST each object; one that is already there (409) stays as it is."""
    for path, obj in objects:
        try:
            api.request("POST", path, obj)
        except ApiError as e:
            if e.status != 409:
                raise


def dns_query(server: str, name: str, *, port: int = DNS_PORT, timeout: float = 2.0) -> tuple[int, list[str]]:
    """One A query over UDP: (rcode, addresses). Enough of DNS to check the ground's own server is answering."""
    ident = random.getrandbits(16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    query = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, (server, port))
        reply = s.recv(4096)
    got, flags, _, answers, _, _ = struct.unpack(">HHHHHH", reply[:12])
    if got != ident:
        raise OSError(f"DNS reply id {got} for query {ident}")
    offset = 12 + len(question) + 4
    addresses = []
    for _ in range(answers):
        offset = _skip_name(reply, offset)
        rtype, _, _, length = struct.unpack(">HHIH", reply[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(reply[offset : offset + 4]))
        offset += length
    return flags & 0xF, addresses


def _skip_name(message: bytes, offset: int) -> int:
    while True:
        length = message[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return offset + 2
        offset += 1 + length
