"""`make bench-scale`: the operator at fleet size — N VoiceAgents on one ProviderPolicy, on kwok nodes.

Measures, on one private test ground (real control plane, kwok nodes, the operator as a real process):
- the floor: N Deployments of the same pod shape created directly by `kubectl apply`, until all are available;
- `kubectl apply` of N VoiceAgents (+ the examples' policy and Secrets) until every one is Ready, as a ratio of it;
- at rest: the operator's API requests per minute by verb (from the apiserver's audit log, the operator's user
  agents only), its reconciles per minute (its own metric), its RSS (peak over the run, and at rest);
- an on-call override of the policy until every VoiceAgent's status shows it;
- the CPU seconds the operator, kube-apiserver and etcd spent in each phase (user + system, from /proc): on a
  shared machine the times above stretch with its load, the work does not.

Prints a table; the last line is one JSON object, also written to bench-results/scale-<n>.json.
`--operator-src DIR` measures another source tree of the operator (e.g. an older commit: `git archive`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from testground.kube import AUDIT_LOG, ApiError, Cluster, KubeStack
from testground.operator import OperatorProcess, load_examples

ROOT = Path(__file__).resolve().parents[2]
FLEET, RAW = "fleet", "raw"
PODS_PER_NODE = 250
AGENTS_PER_NODE = 64
# User agents of the operator's two clients: kopf (aiohttp) and the storage layer (lightkube on httpx).
OPERATOR_AGENTS = ("kopf/", "python-httpx", "lightkube")
WRITES = ("create", "update", "patch", "delete", "deletecollection")
FLEET_GRACE_S = 5


def _agent(template: dict[str, Any], i: int) -> dict[str, Any]:
    agent: dict[str, Any] = json.loads(json.dumps(template))
    agent["metadata"] = {"name": f"va-{i:04d}", "namespace": FLEET}
    agent["spec"]["agentName"] = f"agent-{i:04d}"
    agent["spec"]["scaling"]["minReplicas"] = 1  # one pod per agent, as the floor's Deployments
    return agent


def _raw_deployment(i: int) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "raw", "app.kubernetes.io/instance": f"raw-{i:04d}"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"raw-{i:04d}", "namespace": RAW, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "agent", "image": "ghcr.io/voicefleet/agent:0.1.0"}]},
            },
        },
    }


class Rss:
    """Samples a process's resident memory every half second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now_kb(self) -> int:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak_kb = max(self.peak_kb, self.now_kb())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _audit(cluster: Cluster, since: datetime, until: datetime) -> Counter[str]:
    """The operator's requests by verb received between two instants."""
    verbs: Counter[str] = Counter()
    with (cluster.logs_dir / AUDIT_LOG).open() as log:
        for line in log:
            event = json.loads(line)
            if not str(event.get("userAgent", "")).startswith(OPERATOR_AGENTS):
                continue
            if event["stage"] != ("ResponseStarted" if event["verb"] == "watch" else "ResponseComplete"):
                continue  # one line per request: a watch counts when it opens
            at = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if since <= at < until:
                verbs[event["verb"]] += 1
    return verbs


CLK_TCK = os.sysconf("SC_CLK_TCK")
CPU_COMPONENTS = ("kube-apiserver", "etcd")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Cpu:
    """CPU seconds per component between marks: the operator and the control plane's API server and etcd."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.last = {name: _cpu_s(pid) for name, pid in pids.items()}

    def mark(self) -> dict[str, float]:
        """CPU seconds each spent since the previous mark."""
        now = {name: _cpu_s(pid) for name, pid in self.pids.items()}
        spent = {name: round(now[name] - self.last[name], 1) for name in now}
        self.last = now
        return spent


def _reconciles(operator: OperatorProcess) -> float:
    total = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith("voicefleet_operator_reconciles_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Watch:
    """Every object of one collection as a single watch stream shows it. Waiting by polling a LIST of N objects
    every second would itself load the API server in proportion to N, in the middle of what is measured."""

    def __init__(self, cluster: Cluster, path: str) -> None:
        self.api = cluster.api()
        self.path = path
        self.objects: dict[str, dict[str, Any]] = {}
        self.changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.api.request("GET", self.path, timeout=120)
                with self.changed:
                    self.objects = {o["metadata"]["name"]: o for o in listed["items"]}
                    self.changed.notify_all()
                self._follow(listed["metadata"]["resourceVersion"])
            except (OSError, ApiError, ValueError, KeyError):
                self._stop.wait(1.0)  # a busy API server is part of the run: list again

    def _follow(self, version: str) -> None:
        query = urllib.parse.urlencode({"watch": "1", "resourceVersion": version, "timeoutSeconds": "600"})
        request = urllib.request.Request(
            f"{self.api.server}{self.path}?{query}", headers={"Accept": "application/json"}
        )
        if self.api.token:
            request.add_header("Authorization", f"Bearer {self.api.token}")
        with urllib.request.urlopen(request, context=self.api.context, timeout=660) as stream:
            for line in stream:
                if self._stop.is_set():
                    return
                event = json.loads(line)
                if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                    return
                obj = event["object"]
                with self.changed:
                    if event["type"] == "DELETED":
                        self.objects.pop(obj["metadata"]["name"], None)
                    elif event["type"] != "BOOKMARK":
                        self.objects[obj["metadata"]["name"]] = obj
                    self.changed.notify_all()

    def count(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        with self.changed:
            return sum(1 for o in self.objects.values() if predicate(o))

    def wait(self, what: str, predicate: Callable[[dict[str, Any]], bool], n: int, timeout: float) -> float | None:
        """Seconds until `n` objects satisfy `predicate` (None after `timeout`), woken by each watch event."""
        started = time.monotonic()
        deadline = started + timeout
        with self.changed:
            while sum(1 for o in self.objects.values() if predicate(o)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    print(f"# {what}: timed out after {timeout:.0f} s", file=sys.stderr)
                    return None
                self.changed.wait(left)
        return time.monotonic() - started

    def stop(self) -> None:
        self._stop.set()


def _available(deployment: dict[str, Any]) -> bool:
    return int((deployment.get("status") or {}).get("availableReplicas", 0)) >= 1


def _ready(agent: dict[str, Any]) -> bool:
    conds = (agent.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


def _fleet_decided(agent: dict[str, Any]) -> bool:
    conds = (agent.get("status") or {}).get("conditions") or []
    return any(c["type"] == "FleetConnected" and c["status"] == "False" for c in conds)


def run(
    n: int, rest_s: float, resync_s: int, timeout: float, operator_src: Path | None, keep: bool = False
) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="voicefleet-bench-scale-"))
    # room for both fleets' pods, and for the agents' CPU requests (500m each: 64 per kwok node), with a fifth to spare
    nodes = max(3, -(-2 * n * 6 // 5 // PODS_PER_NODE), -(-n * 5 // 4 // AGENTS_PER_NODE))
    stack = KubeStack(root, node_count=nodes, audit=True, timeout=180)
    result: dict[str, Any] = {"n": n, "nodes": nodes, "resync_s": resync_s, "rest_window_s": rest_s}
    operator: OperatorProcess | None = None
    rss: Rss | None = None
    watches: list[Watch] = []
    try:
        cluster = stack.start()
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        for ns in (RAW, FLEET):
            cluster.kubectl("create", "namespace", ns)

        # The floor: the same number of Deployments, straight from kubectl.
        raw = Watch(cluster, f"/apis/apps/v1/namespaces/{RAW}/deployments")
        agents = Watch(cluster, f"/apis/voicefleet.io/v1alpha1/namespaces/{FLEET}/voiceagents")
        watches = [raw, agents]
        t0 = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(_raw_deployment(i) for i in range(n)),
                        timeout=timeout)  # fmt: skip
        result["raw_kubectl_apply_s"] = round(time.monotonic() - t0, 1)

        available = raw.wait(f"{n} raw Deployments available", _available, n, timeout)
        if available is None:
            raise AssertionError(f"{n} raw Deployments not available within {timeout} s")
        raw.stop()
        result["raw_ready_s"] = round(time.monotonic() - t0, 1)

        # kwok pods never poll the fleet channel: every VoiceAgent turns FleetConnected=False once, after this grace
        env = {"VOICEFLEET_RESYNC_SECONDS": str(resync_s), "VOICEFLEET_FLEET_GRACE_SECONDS": str(FLEET_GRACE_S)}
        if operator_src is not None:
            env["PYTHONPATH"] = f"{operator_src / 'operator'}:{operator_src / 'agent'}"
        operator = OperatorProcess(cluster.kubeconfig, cluster.logs_dir, env=env)
        operator.start()
        assert operator.proc is not None
        rss = Rss(operator.proc.pid)
        pids = {p.name: p.popen.pid for p in stack.supervisor.processes if p.name in CPU_COMPONENTS}
        cpu = Cpu({"operator": operator.proc.pid, **pids})

        docs = load_examples(ROOT / "examples")
        template = next(d for d in docs if d["kind"] == "VoiceAgent")
        shared = [{**d, "metadata": {**d["metadata"], "namespace": FLEET}} for d in docs if d["kind"] != "VoiceAgent"]
        manifest = yaml.safe_dump_all([*shared, *(_agent(template, i) for i in range(n))])
        started_at = datetime.now(UTC)
        t0 = time.monotonic()
        # kubectl itself can take minutes when the operator keeps the API server busy: that is part of the figure
        cluster.kubectl("apply", "-f", "-", input=manifest, timeout=3 * timeout)
        result["kubectl_apply_s"] = round(time.monotonic() - t0, 1)
        if agents.wait(f"{n} VoiceAgents Ready", _ready, n, timeout) is not None:
            result["all_ready_s"] = round(time.monotonic() - t0, 1)
        else:
            result["all_ready_s"] = None
            result["ready_at_timeout"] = agents.count(_ready)
        ready_at = datetime.now(UTC)
        if result["all_ready_s"]:
            result["ready_ratio"] = round(result["all_ready_s"] / result["raw_ready_s"], 2)
        result["create_cpu_s"] = cpu.mark()
        creation = _audit(cluster, started_at, ready_at)
        result["create_requests_by_verb"] = dict(sorted(creation.items()))
        result["create_requests_per_agent"] = round(sum(creation.values()) / n, 1)

        if operator_src is None and result["all_ready_s"]:  # (an older tree may not have FleetConnected)
            decided = agents.wait(f"{n} VoiceAgents FleetConnected=False (kwok pods never poll)", _fleet_decided, n,
                                  timeout)  # fmt: skip
            result["fleet_connected_false_after_ready_s"] = round(decided, 1) if decided is not None else None

        # At rest: let the last events drain, then watch one window.
        time.sleep(min(20.0, rest_s / 3))  # a settling period, not a condition: rest is the absence of change
        reconciles_before = _reconciles(operator)
        cpu.mark()
        rest_from = datetime.now(UTC)
        time.sleep(rest_s)
        rest_until = datetime.now(UTC)
        result["rest_cpu_s_per_min"] = {k: round(v / (rest_s / 60), 2) for k, v in cpu.mark().items()}
        rest_reconciles = _reconciles(operator) - reconciles_before
        minutes = rest_s / 60
        at_rest = _audit(cluster, rest_from, rest_until)
        result["rest_requests_per_min_by_verb"] = {v: round(c / minutes, 1) for v, c in sorted(at_rest.items())}
        result["rest_writes_per_min"] = round(sum(c for v, c in at_rest.items() if v in WRITES) / minutes, 1)
        result["rest_reads_per_min"] = round(sum(c for v, c in at_rest.items() if v not in WRITES) / minutes, 1)
        result["rest_reconciles_per_min"] = round(rest_reconciles / minutes, 1)
        result["rest_reconciles_per_agent_per_resync"] = round(rest_reconciles / n / (rest_s / resync_s), 3)
        result["rss_rest_mb"] = round(rss.now_kb() / 1024, 1)

        # The on-call override: pin STT to the policy's second provider.
        policy = next(d for d in docs if d["kind"] == "ProviderPolicy")
        pinned = policy["spec"]["stt"]["providers"][1]["name"]
        override_at = datetime.now(UTC)
        cpu.mark()
        t0 = time.monotonic()
        cluster.kubectl("-n", FLEET, "patch", "providerpolicy", policy["metadata"]["name"], "--type=merge",
                        "-p", json.dumps({"spec": {"override": {"stt": pinned, "reason": "bench"}}}))  # fmt: skip

        def on_pinned(agent: dict[str, Any]) -> bool:
            return bool(((agent.get("status") or {}).get("providers") or {}).get("stt") == pinned)

        if agents.wait(f"every VoiceAgent on stt={pinned}", on_pinned, n, min(timeout, 300)) is not None:
            result["override_all_s"] = round(time.monotonic() - t0, 2)
        else:
            result["override_all_s"] = None
        result["override_cpu_s"] = cpu.mark()
        result["override_requests_by_verb"] = dict(sorted(_audit(cluster, override_at, datetime.now(UTC)).items()))
        result["rss_peak_mb"] = round(rss.peak_kb / 1024, 1)
    finally:
        for watch in watches:
            watch.stop()
        if rss is not None:
            rss.stop()
        if operator is not None:
            operator.stop()
        stack.stop()
        if keep:
            print(f"# logs kept in {root / 'logs'}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"] = f"{platform.machine()} cpus={os.cpu_count()}"
    result["operator_src"] = str(operator_src) if operator_src else "this checkout"
    return result


def _cpu_row(spent: dict[str, float] | None) -> str:
    """operator / kube-apiserver / etcd"""
    if not spent:
        return "-"
    return " / ".join(str(spent.get(name, "-")) for name in ("operator", *CPU_COMPONENTS))


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the test ground on the way out
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rest", type=float, default=60.0, help="seconds of the at-rest window")
    parser.add_argument("--resync", type=int, default=60, help="the operator's resync period (its default: 60)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up waiting for Ready after this")
    parser.add_argument("--operator-src", type=Path, help="a source tree of the operator to measure instead")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the test ground's logs (operator, audit)")
    args = parser.parse_args()
    result = run(args.n, args.rest, args.resync, args.timeout, args.operator_src, args.keep)
    rows = [
        ("VoiceAgents", result["n"]),
        ("raw Deployments available (s)", result.get("raw_ready_s")),
        ("  of which kubectl apply (s)", result.get("raw_kubectl_apply_s")),
        ("kubectl apply of the fleet (s)", result.get("kubectl_apply_s")),
        ("apply -> all Ready (s)", result.get("all_ready_s")),
        ("  ratio to the floor", result.get("ready_ratio")),
        ("  operator requests per agent", result.get("create_requests_per_agent")),
        ("Ready -> all FleetConnected=False (s)", result.get("fleet_connected_false_after_ready_s")),
        ("at rest: writes/min", result.get("rest_writes_per_min")),
        ("at rest: reads/min", result.get("rest_reads_per_min")),
        ("at rest: reconciles/min", result.get("rest_reconciles_per_min")),
        ("  per agent per resync", result.get("rest_reconciles_per_agent_per_resync")),
        ("RSS peak / at rest (MB)", f"{result.get('rss_peak_mb')} / {result.get('rss_rest_mb')}"),
        ("override in every status (s)", result.get("override_all_s")),
        ("CPU s, apply -> all Ready", _cpu_row(result.get("create_cpu_s"))),
        ("CPU s/min at rest", _cpu_row(result.get("rest_cpu_s_per_min"))),
        ("CPU s, override", _cpu_row(result.get("override_cpu_s"))),
        ("load average", " ".join(map(str, result["load_average"]))),
    ]
    for what, value in rows:
        print(f"{what:<34}{value!s:>16}")
    print(f"{'at rest by verb (per min)':<34}{json.dumps(result.get('rest_requests_per_min_by_verb')):>16}")
    out = args.out or ROOT / "bench-results" / f"scale-{args.n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
