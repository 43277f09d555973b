"""The metrics loop of the test ground: Prometheus (Debian's) scraping the agent pods, and prometheus-adapter serving
what it scraped on `custom.metrics.k8s.io` with the rules charts/voicefleet ships: the API the HPAs read.

All run on the host, on loopback. Debian builds Prometheus without kubernetes_sd, so a small discoverer
(`python -m testground.metrics`) lists the agents' `<voiceagent>-metrics` Endpoints through the API server with a
`prometheus` ServiceAccount token, as kubernetes_sd would, and writes them as a file_sd file with the labels the
chart's ServiceMonitor gives (namespace, pod, service, voiceagent). The adapter reads the API server with a token of
its own ServiceAccount and is registered as the APIService `v1beta1.custom.metrics.k8s.io` behind an ExternalName
Service that points at its loopback port (the API server runs on the same host). Only pods of the real node are
scraped (reachable on the pod bridge); the addresses kwok makes up for its pods are never sent traffic.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from testground import binaries
from testground.kube import ApiClient, ApiError, Cluster
from testground.process import ComponentError, Stack, free_port, http_ok

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "voicefleet"
ADAPTER_TEMPLATE = "templates/prometheus-adapter.yaml"
NAMESPACE = "monitoring"
PROMETHEUS = "prometheus"
ADAPTER = "prometheus-adapter"
DISCOVERY = "agent-discovery"
DISCOVERY_INTERVAL_S = 1.0
CUSTOM_METRICS_GROUP = "custom.metrics.k8s.io"
CUSTOM_METRICS_API = f"v1beta1.{CUSTOM_METRICS_GROUP}"
SCRAPE_INTERVAL = "5s"  # the HPA syncs every 5 s on the test ground (kube.HPA_SYNC_PERIOD)
TOKEN_DURATION = "48h"


def prometheus_binary() -> Path:
    found = shutil.which("prometheus")
    if not found:
        raise ComponentError(PROMETHEUS, "not on PATH: apt-get install prometheus (make system-deps)")
    return Path(found)


def adapter_rules(chart: Path = CHART) -> str:
    """The adapter's config.yaml exactly as the chart renders it (helm template), so the test ground runs its rules."""
    argv = [str(binaries.binary("helm")), "template", "voicefleet", str(chart), "--show-only", ADAPTER_TEMPLATE]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if result.returncode:
        raise ComponentError(ADAPTER, f"helm template {ADAPTER_TEMPLATE} failed: {result.stderr.strip()}")
    (config_map,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    rules: str = config_map["data"]["config.yaml"]
    return rules


AGENT_SERVICE_SELECTOR = "app.kubernetes.io/name=voicefleet-agent,app.kubernetes.io/managed-by=voicefleet-operator"
METRICS_PORT_NAME = "metrics"


def file_sd_targets(endpoints: dict[str, Any], exclude_nodes: Collection[str]) -> list[dict[str, Any]]:
    """Pure: the agents' metrics Endpoints → Prometheus file_sd groups, one per pod, with the labels the chart's
    ServiceMonitor gives them (namespace, pod and service from prometheus-operator; voiceagent from its relabeling).
    Pods on `exclude_nodes` (kwok's, whose made-up addresses are not ours to send traffic to) are left out."""
    groups = []
    for item in endpoints.get("items") or []:
        meta = item["metadata"]
        for subset in item.get("subsets") or []:
            ports = [p["port"] for p in subset.get("ports") or [] if p.get("name") == METRICS_PORT_NAME]
            addresses = [*(subset.get("addresses") or []), *(subset.get("notReadyAddresses") or [])]
            for port in ports:
                for address in addresses:
                    ref = address.get("targetRef") or {}
                    if ref.get("kind") != "Pod" or address.get("nodeName") in exclude_nodes:
                        continue
                    labels = {
                        "namespace": meta["namespace"],
                        "pod": ref["name"],
                        "service": meta["name"],
                        "voiceagent": (meta.get("labels") or {}).get("app.kubernetes.io/instance", ""),
                    }
                    groups.append({"targets": [f"{address['ip']}:{port}"], "labels": labels})
    return sorted(groups, key=lambda g: (g["labels"]["namespace"], g["labels"]["pod"], g["targets"][0]))


def agent_targets(client: ApiClient, exclude_nodes: Collection[str]) -> list[dict[str, Any]]:
    """The file_sd groups of the agents' metrics Endpoints, as `client` may list them."""
    path = "/api/v1/endpoints?" + urllib.parse.urlencode({"labelSelector": AGENT_SERVICE_SELECTOR})
    return file_sd_targets(client.get(path), exclude_nodes)


def discover(server: str, ca_file: Path, token_file: Path, out: Path, exclude_nodes: Collection[str]) -> None:
    """Keep `out` (a file_sd file) equal to the agents' metrics Endpoints, listed every second with the
    prometheus ServiceAccount's token; rewritten (atomically) only when it changes."""
    client = ApiClient(server, ca_file, token=token_file.read_text().strip())
    written = None
    while True:
        try:
            text = json.dumps(agent_targets(client, exclude_nodes), indent=1)
        except (OSError, ApiError) as error:
            print(f"listing agent endpoints failed: {error}", file=sys.stderr, flush=True)
        else:
            if text != written:
                tmp = out.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(out)
                written = text
        time.sleep(DISCOVERY_INTERVAL_S)


def prometheus_config(targets: Path) -> dict[str, Any]:
    """Scrape the pods `discover` lists in `targets`."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": "4s", "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {"job_name": "voicefleet-agents", "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "5s"}]}
        ],
    }


def rbac_objects(adapter_port: int) -> list[dict[str, Any]]:
    """ServiceAccounts with what Prometheus and the adapter read, and the adapter's APIService, as their charts
    grant it (prometheus-community/prometheus and /prometheus-adapter)."""

    def meta(name: str, namespace: str | None = NAMESPACE) -> dict[str, Any]:
        labels = {"app.kubernetes.io/part-of": "voicefleet-testground"}
        return {"name": name, "labels": labels, **({"namespace": namespace} if namespace else {})}

    def reader(name: str, resources: list[str]) -> dict[str, Any]:
        rule = {"apiGroups": [""], "resources": resources, "verbs": ["get", "list", "watch"]}
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": meta(name, None),
                "rules": [rule]}  # fmt: skip

    def binding(kind: str, name: str, role_kind: str, role: str, account: str, namespace: str | None) -> dict[str, Any]:
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": meta(name, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}],
        }

    prometheus_role, adapter_role = f"testground-{PROMETHEUS}", f"testground-{ADAPTER}"
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(NAMESPACE, None)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(PROMETHEUS)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(ADAPTER)},
        reader(prometheus_role, ["endpoints", "services", "pods"]),
        binding("ClusterRoleBinding", prometheus_role, "ClusterRole", prometheus_role, PROMETHEUS, None),
        reader(adapter_role, ["namespaces", "pods", "services", "configmaps"]),
        binding("ClusterRoleBinding", adapter_role, "ClusterRole", adapter_role, ADAPTER, None),
        binding(
            "ClusterRoleBinding",
            f"{adapter_role}:auth-delegator",
            "ClusterRole",
            "system:auth-delegator",
            ADAPTER,
            None,
        ),
        binding(
            "RoleBinding",
            f"{adapter_role}-auth-reader",
            "Role",
            "extension-apiserver-authentication-reader",
            ADAPTER,
            "kube-system",
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(ADAPTER),
            # the API server resolves an ExternalName Service to <externalName>:<APIService port>; it runs on this
            # host, so the adapter's loopback port is where it proxies custom.metrics.k8s.io to
            "spec": {"type": "ExternalName", "externalName": "localhost"},
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": meta(CUSTOM_METRICS_API, None),
            "spec": {
                "group": CUSTOM_METRICS_GROUP,
                "version": "v1beta1",
                "service": {"name": ADAPTER, "namespace": NAMESPACE, "port": adapter_port},
                # the adapter serves a self-signed certificate from --cert-dir, as the upstream chart's default does
                "insecureSkipTLSVerify": True,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
    ]


def token_kubeconfig(cluster: Cluster, token_file: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testground", "cluster": {"server": cluster.server,
                                                        "certificate-authority": str(cluster.ca_file)}}],
        "users": [{"name": ADAPTER, "user": {"tokenFile": str(token_file)}}],
        "contexts": [{"name": "testground", "context": {"cluster": "testground", "user": ADAPTER}}],
        "current-context": "testground",
    }  # fmt: skip


@dataclass(frozen=True)
class Metrics:
    """A running metrics loop: Prometheus' URL, and the adapter's port behind the API server's custom metrics API."""

    prometheus_url: str
    adapter_port: int
    logs_dir: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant PromQL query's result vector."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def to_json(self) -> dict[str, Any]:
        return {"prometheus_url": self.prometheus_url, "adapter_port": self.adapter_port,
                "logs_dir": str(self.logs_dir)}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Metrics:
        return cls(data["prometheus_url"], int(data["adapter_port"]), Path(data["logs_dir"]))


def custom_metric_path(namespace: str, metric: str, pods: str = "*") -> str:
    return f"/apis/{CUSTOM_METRICS_GROUP}/v1beta1/namespaces/{namespace}/pods/{pods}/{metric}"


@dataclass
class MetricsStack(Stack[Metrics]):
    """Starts Prometheus and prometheus-adapter for `cluster` under `root`/metrics; `stop` ends both and removes
    the APIService (an unavailable aggregated API would fail every discovery of the cluster's clients)."""

    cluster: Cluster | None = None
    timeout: float = 120.0

    def _start(self) -> Metrics:
        cluster = self.cluster
        if cluster is None:
            raise ComponentError("metrics", "MetricsStack needs the cluster it serves")
        prometheus = prometheus_binary()
        binaries.ensure_built(binaries.METRICS_BINARIES, self.logs_dir / "build.log")
        work = self.root / "metrics"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        rules = work / "adapter-rules.yaml"
        rules.write_text(adapter_rules())

        prometheus_port, adapter_port = free_port(), free_port()
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(rbac_objects(adapter_port)))
        tokens = {}
        for account in (PROMETHEUS, ADAPTER):
            token = cluster.kubectl("-n", NAMESPACE, "create", "token", account, f"--duration={TOKEN_DURATION}")
            tokens[account] = work / f"{account}.token"
            tokens[account].write_text(token.stdout.strip())
            tokens[account].chmod(0o600)

        targets = work / "agents.json"
        targets.write_text("[]")
        kwok_nodes = [arg for node in cluster.nodes for arg in ("--exclude-node", node)]
        self.supervisor.spawn(DISCOVERY, [
            sys.executable, "-m", "testground.metrics", "--server", cluster.server, "--ca-file", cluster.ca_file,
            "--token-file", tokens[PROMETHEUS], "--out", targets, *kwok_nodes,
        ])  # fmt: skip
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(targets), sort_keys=False))
        prometheus_url = f"http://127.0.0.1:{prometheus_port}"
        server = self.supervisor.spawn(PROMETHEUS, [
            prometheus, f"--config.file={config}", f"--storage.tsdb.path={work / 'prometheus-data'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}", "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ])  # fmt: skip
        server.wait_ready(lambda: http_ok(f"{prometheus_url}/-/ready"), self.timeout, "ready (/-/ready)")

        kubeconfig = work / "adapter.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(token_kubeconfig(cluster, tokens[ADAPTER])))
        kubeconfig.chmod(0o600)
        adapter = self.supervisor.spawn(ADAPTER, [
            binaries.binary(ADAPTER), f"--prometheus-url={prometheus_url}", f"--config={rules}",
            "--metrics-relist-interval=5s", f"--secure-port={adapter_port}", "--bind-address=127.0.0.1",
            f"--cert-dir={work / 'adapter-certs'}", f"--lister-kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}", "--v=1",
        ])  # fmt: skip
        adapter.wait_ready(
            lambda: cluster.api().get(f"/apis/{CUSTOM_METRICS_GROUP}/v1beta1")["groupVersion"] is not None,
            self.timeout,
            f"serving {CUSTOM_METRICS_GROUP} through the API server (APIService {CUSTOM_METRICS_API})",
        )
        return Metrics(prometheus_url, adapter_port, self.logs_dir)

    def stop(self) -> None:
        if self.cluster is not None and self.supervisor.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.cluster.kubectl("delete", "apiservice", CUSTOM_METRICS_API, "--ignore-not-found", check=False,
                                     timeout=30)  # fmt: skip
        super().stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="testground.metrics", description=discover.__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--ca-file", type=Path, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--exclude-node", action="append", default=[])
    args = parser.parse_args(argv)
    discover(args.server, args.ca_file, args.token_file, args.out, set(args.exclude_node))


if __name__ == "__main__":
    main()
