"""`make bench-autoscale`: autoscaling on live calls, on the real node, through the real metrics loop.

A private test ground with a real kubelet node and the metrics loop (Prometheus → prometheus-adapter →
custom.metrics.k8s.io); voicefleet installed as docs/install.md says; the examples' VoiceAgent edited to small pods of
at most 2 sessions, a target of 1 session per pod, 2 to 3 replicas. Then:

1. a load step: N concurrent real calls (voiceroom callers, offline providers): time until the HPA sees the
   sessions, until the first new pod is Ready, until the desired replicas are Ready (`scale_out_s`);
2. the load ends (every caller hangs up): time until the fleet is back at minReplicas (`scale_in_s`);
3. a rollout with live calls: 2 calls, a spec edit; time until new pods are Ready, a new call on a new pod, the old
   calls answered to their end, the old pods gone;
and every call is checked: greeted, and its agent never left before the caller hung up (`dropped_calls`).
Prints a table; the last line is one JSON object, also written to bench-results/autoscale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testground import install
from testground.ground import down, up
from testground.kube import Cluster
from testground.livecalls import (
    SMALL_RESOURCES,
    Call,
    hang_up,
    patch_va,
    place_call,
    pod_of,
    ready_pods,
    rolled,
    va,
)
from testground.operator import wait_for
from testground.pytest_plugin import NodeGround
from voicefleet_agent import contract

ROOT = Path(__file__).resolve().parents[2]
MIN, MAX, TARGET, PER_POD = 2, 3, 1, 2
STABILIZATION_S = 30


def hpa_sessions(cluster: Cluster) -> str | None:
    """The HPA's current average of active sessions per pod (a quantity such as "0" or "500m"), None while it has
    not read it."""
    out = cluster.kubectl("-n", install.FLEET_NS, "get", "hpa", "tasks", "-o", "json").stdout
    for metric in json.loads(out).get("status", {}).get("currentMetrics") or []:
        if metric.get("type") == "Pods" and metric["pods"]["metric"]["name"] == contract.ACTIVE_SESSIONS:
            return str(metric["pods"]["current"]["averageValue"])
    return None


async def until(what: str, probe: Callable[[], Any], since: float, timeout: float) -> float:
    """Seconds from `since` until `probe()` (run in a thread) is truthy."""
    await asyncio.to_thread(wait_for, what, probe, timeout=timeout, every=0.5)
    return round(time.monotonic() - since, 1)


async def measure(ground: NodeGround, n: int) -> dict[str, Any]:
    cluster, livekit = ground.cluster, ground.livekit
    result: dict[str, Any] = {"load_calls": n, "min_replicas": MIN, "max_replicas": MAX,
                              "target_sessions_per_pod": TARGET, "max_sessions_per_pod": PER_POD}  # fmt: skip
    scaling = {"minReplicas": MIN, "maxReplicas": MAX, "targetSessionsPerPod": TARGET, "maxSessionsPerPod": PER_POD,
               "scaleDownStabilizationSeconds": STABILIZATION_S}  # fmt: skip
    patch_va(cluster, {"scaling": scaling, "resources": SMALL_RESOURCES})
    await asyncio.to_thread(wait_for, "the small fleet rolled out", lambda: rolled(cluster, MIN), timeout=600, every=2)
    await asyncio.to_thread(wait_for, "the HPA reading sessions", lambda: hpa_sessions(cluster) == "0", timeout=300)
    calls: list[Call] = []
    unplaced = 0  # calls never greeted
    unanswered: set[str] = set()  # rooms of calls whose last turn got no answer

    async def load(labels: list[str]) -> list[Call]:
        nonlocal unplaced
        placed = await asyncio.gather(*(place_call(livekit, label) for label in labels), return_exceptions=True)
        unplaced += sum(1 for p in placed if isinstance(p, BaseException))
        ok = [p for p in placed if isinstance(p, Call)]
        calls.extend(ok)
        return ok

    try:
        # 1. the load step
        before = {p["metadata"]["name"] for p in ready_pods(cluster)}
        step_at = time.monotonic()
        placing = asyncio.ensure_future(load([f"load-{i}" for i in range(n)]))
        seen = lambda: hpa_sessions(cluster) not in (None, "0")  # noqa: E731
        result["hpa_sees_sessions_s"] = await until("the HPA to see the sessions", seen, step_at, 300)
        fresh = lambda: {p["metadata"]["name"] for p in ready_pods(cluster)} - before  # noqa: E731
        result["first_new_pod_ready_s"] = await until("a new pod Ready", fresh, step_at, 400)
        result["scale_out_s"] = await until(f"{MAX} pods Ready", lambda: len(ready_pods(cluster)) >= MAX, step_at, 400)
        load_calls = await placing
        result["greeting_s_max"] = max((c.greeted_s or 0.0 for c in load_calls), default=None)

        # 2. the load ends
        ended_at = time.monotonic()
        for call in load_calls:
            await hang_up(call)
        result["scale_in_s"] = await until(f"back to {MIN} pods", lambda: rolled(cluster, MIN), ended_at,
                                           STABILIZATION_S + 300)  # fmt: skip

        # 3. a rollout with live calls
        old = {p["metadata"]["name"] for p in ready_pods(cluster)}
        live = await load(["rollout-a", "rollout-b"])
        instructions = va(cluster)["spec"]["pipeline"]["instructions"]
        edited_at = time.monotonic()
        patch_va(cluster, {"pipeline": {"instructions": instructions + " Be brief."}})
        new_ready = lambda: len({p["metadata"]["name"] for p in ready_pods(cluster)} - old) >= MIN  # noqa: E731
        result["rollout_new_pods_ready_s"] = await until("the new pods Ready", new_ready, edited_at, 600)
        for after in await load(["rollout-new"]):
            after.pod = await asyncio.to_thread(pod_of, cluster, after.room)
            result["rollout_new_call_on_new_pod"] = after.pod not in old
        for call in live:  # the calls on the draining pods are answered to their end
            try:
                await call.caller.turn("Add buy milk to my tasks", timeout=120)
            except TimeoutError:
                unanswered.add(call.room)
            await hang_up(call)
        for call in calls:
            await hang_up(call)
        result["rollout_done_s"] = await until("the old pods gone", lambda: rolled(cluster, MIN), edited_at, 300)
        result["pods_left"] = len(ready_pods(cluster))
    finally:
        for call in calls:
            await hang_up(call)
    result["calls"] = len(calls) + unplaced
    result["redispatched"] = sum(c.redispatched for c in calls)
    result["dropped_calls"] = unplaced + sum(1 for c in calls if c.dropped or c.room in unanswered)
    return result


def run(n: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="voicefleet-bench-autoscale-"))
    started = time.monotonic()
    ground = up(root, real_node=True)
    try:
        assert ground.cluster is not None and ground.livekit is not None and ground.node is not None
        on_node = NodeGround(ground.cluster, ground.livekit, ground.node)
        install.install_as_documented(on_node)
        result = asyncio.run(measure(on_node, n))
    finally:
        down(root)
    result["total_s"] = round(time.monotonic() - started, 1)
    result["load_average"] = [round(x, 1) for x in os.getloadavg()]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=4, help="concurrent calls of the load step")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "autoscale.json")
    args = parser.parse_args()
    result = run(args.calls)
    for key in ("hpa_sees_sessions_s", "first_new_pod_ready_s", "scale_out_s", "scale_in_s",
                "rollout_new_pods_ready_s", "rollout_done_s", "rollout_new_call_on_new_pod", "pods_left",
                "calls", "dropped_calls", "redispatched", "total_s", "load_average"):  # fmt: skip
        print(f"{key:<30}{json.dumps(result.get(key)):>16}")
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
