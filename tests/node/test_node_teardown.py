"""Stopping a real node puts the machine back as found, even after its kubelet, containerd, kube-proxy and CoreDNS
were killed."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from testground import host
from testground.kube import KubeStack
from testground.node import RealNodeStack
from testground.tinyimages import BUSYBOX_IMAGE

pytestmark = pytest.mark.integration


def test_teardown_after_a_crash_leaves_no_mount_cgroup_chain_sysctl_or_process(tmp_path: Path) -> None:
    root = tmp_path / "ground"
    claim = host.claim(root, wait=420)
    before = host.footprint(root / "node")  # the machine as found, plus the two bridges the claim made
    assert before["bridges"] == [host.POD_BRIDGE, host.SERVICE_BRIDGE]
    (route,) = before["service routes"]  # ClusterIPs from the host: never the default route
    assert route.split()[:3] == [host.SERVICE_CIDR, "dev", host.SERVICE_BRIDGE] and host.POD_GATEWAY in route
    kube = KubeStack(root, serve_pods=True)
    node = RealNodeStack(root)
    try:
        node.cluster = kube.start()
        real = node.start()
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sleeper", "namespace": "default"},
            "spec": real.pin({
                "containers": [{"name": "c", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                "command": ["sleep", "3600"]}],
            }),
        }  # fmt: skip
        node.cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
        node.cluster.kubectl("wait", "--for=condition=Ready", "pod/sleeper", "--timeout=120s")
        during = host.footprint(root / "node")
        veths = os.listdir(f"/sys/class/net/{host.POD_BRIDGE}/brif")
        # what the kubelet, kube-proxy and the pod changed, so that the comparison below can fail
        assert during["kubepods cgroups"] and during["kubelet chains"] and during["mounts"] and veths
        assert during["sysctls"] != before["sysctls"]
        nat = during["kubelet chains"]["iptables/nat"]
        assert {"KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-NODEPORTS"} <= set(nat)
        assert any(c.startswith("KUBE-SVC-") for c in nat) and any(c.startswith("KUBE-SEP-") for c in nat)
        assert "KUBE-PROXY-FIREWALL" in during["kubelet chains"]["iptables/filter"]
        assert {"kube-proxy", "coredns"} <= {p.name for p in node.supervisor.processes}
        assert before["service routes"] == during["service routes"] != []
        # a crash: kubelet and containerd die at once; shims, containers, mounts and cgroups stay behind
        for process in node.supervisor.processes:
            os.killpg(process.record.pid, signal.SIGKILL)
    finally:
        node.stop()
        kube.stop()
        host.release(claim)
    after = host.footprint(root / "node")
    assert after == {**before, "bridges": [], "service routes": []}
    assert not [v for v in veths if Path("/sys/class/net", v).exists()]
    assert host.Claim.load() is None
