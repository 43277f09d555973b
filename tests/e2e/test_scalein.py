"""Scale-in and rollouts with live calls on the real node: the HPA removes idle agent pods first, a spec edit lets
calls finish on the old pod while new calls land on the new one, and no call ever loses its agent.

The examples' VoiceAgent (docs/install.md, tests/e2e/conftest.py) is edited to 3 small pods of at most 2 sessions,
the test ground's metrics loop runs (Prometheus → prometheus-adapter → custom.metrics.k8s.io), and 6 host-side
callers (testground.livecalls: voiceroom, offline providers) fill the 3 pods. The calls on two pods hang up; the
operator sets each pod's `controller.kubernetes.io/pod-deletion-cost` to its live sessions; the HPA scales in to one
pod, and the pods it removes are the idle ones, while the 2 calls on the busy pod go on and are answered after it.
Without the costs the ReplicaSet controller picks among pods of equal cost by how recently they became ready, so we
keep the calls on the youngest pod, the one it would rank first to go (with costs that are all equal, the busy pod
would survive both removals only by a 1-in-3 chance).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from testground.livecalls import (
    SMALL_RESOURCES,
    Call,
    agent_left_early,
    all_pods,
    hang_up,
    patch_va,
    place_call,
    pod_of,
    ready_pods,
    rolled,
    va,
    va_columns,
)
from testground.metrics import Metrics
from testground.operator import wait_for
from testground.pytest_plugin import NodeGround
from voicefleet_offline import espeak
from voicefleet_operator.sessions import DELETION_COST

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

PODS, PER_POD = 3, 2  # the 6 calls over 3 pods
TURN_TIMEOUT = 120.0
STABILIZATION_S = 45  # the HPA's scale-down window: time for the deletion costs to follow the calls that ended
TURN = "Add buy milk to my tasks"


def report(what: str, value: str) -> None:
    print(f"\n[e2e figure] {what}: {value}", flush=True)


@pytest.fixture(scope="module")
def small_fleet(installed: NodeGround, node_metrics: Metrics) -> Iterator[NodeGround]:
    """The examples' VoiceAgent as 3 small pods of at most 2 sessions, Ready; its spec put back afterwards."""
    cluster = installed.cluster
    original = va(cluster)["spec"]
    scaling = {"minReplicas": PODS, "maxReplicas": PODS, "targetSessionsPerPod": PER_POD,
               "maxSessionsPerPod": PER_POD, "scaleDownStabilizationSeconds": STABILIZATION_S}  # fmt: skip
    patch_va(cluster, {"scaling": scaling, "resources": SMALL_RESOURCES})
    wait_for("3 small agent pods Ready at the new generation", lambda: rolled(cluster, PODS), timeout=600, every=2)
    yield installed
    restore = [{"op": "replace", "path": "/spec", "value": original}]
    cluster.kubectl("-n", "voice", "patch", "va", "tasks", "--type=json", "-p", json.dumps(restore))


@pytest.fixture(scope="module", autouse=True)
def _speech() -> None:
    if not espeak.available():
        pytest.fail("espeak-ng or sox not installed: run `make system-deps` (apt-get install espeak-ng sox)")


async def calls_on_pods(ground: NodeGround, labels: list[str]) -> list[Call]:
    """One call after the other (each pod reports its load before the next dispatch), with the pod that took it."""
    calls: list[Call] = []
    try:
        for label in labels:
            calls.append(await place_call(ground.livekit, label))
            again = " (dispatched again: LiveKit dropped the first)" if calls[-1].redispatched else ""
            report(f"{label}: dispatch → greeting heard{again}", f"{calls[-1].greeted_s:.1f} s")
        for call in calls:
            call.pod = await asyncio.to_thread(pod_of, ground.cluster, call.room)
    except BaseException:
        for call in calls:
            await hang_up(call)
        raise
    return calls


def shows(ground: NodeGround, **expected: int) -> dict[str, str] | None:
    """`kubectl get va -o wide`, once its columns show `expected` (SESSIONS=…, FULL=…, DRAINING=…)."""
    columns = va_columns(ground.cluster)
    return columns if all(columns.get(k.upper()) == str(v) for k, v in expected.items()) else None


async def test_scale_in_with_live_calls_removes_the_idle_pods_first_and_every_call_keeps_its_agent(
    small_fleet: NodeGround,
) -> None:
    ground, cluster = small_fleet, small_fleet.cluster
    calls = await calls_on_pods(ground, [f"scalein-{n}" for n in range(PODS * PER_POD)])
    try:
        by_pod: dict[str, list[Call]] = {}
        for call in calls:
            by_pod.setdefault(call.pod, []).append(call)
        assert sorted(len(c) for c in by_pod.values()) == [PER_POD] * PODS, {p: len(c) for p, c in by_pod.items()}
        shown = await asyncio.to_thread(wait_for, "kubectl get va: 6 sessions, 3 pods full",
                                        lambda: shows(ground, sessions=6, full=3), timeout=120, every=1)  # fmt: skip
        report("kubectl get va -o wide, 6 calls", json.dumps(shown))

        # The HPA may now go down to one pod; with 6 calls on 3 pods of target 2 it keeps 3.
        patch_va(cluster, {"scaling": {"minReplicas": 1}})

        # The load drops: the calls on all but the youngest pod hang up.
        def became_ready(pod: dict[str, Any]) -> str:
            return str(next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")["lastTransitionTime"])

        youngest = max(ready_pods(cluster), key=lambda p: (became_ready(p), p["metadata"]["creationTimestamp"]))
        busy = str(youngest["metadata"]["name"])
        idle = sorted(set(by_pod) - {busy})
        dropped_at = time.monotonic()
        for pod in idle:
            for call in by_pod[pod]:
                await hang_up(call)

        # Watch the pods until the HPA has removed both idle ones: which goes, in what order, with what cost.
        removed: dict[str, tuple[float, str | None]] = {}  # pod → (seconds after the drop, its cost then)
        costs: dict[str, str | None] = {}

        def watch() -> bool:
            for pod in all_pods(cluster):
                meta = pod["metadata"]
                cost = (meta.get("annotations") or {}).get(DELETION_COST)
                if meta.get("deletionTimestamp"):
                    removed.setdefault(
                        meta["name"], (round(time.monotonic() - dropped_at, 1), costs.get(meta["name"], cost))
                    )
                else:
                    costs[meta["name"]] = cost
            return set(idle) <= set(removed) or busy in removed

        await asyncio.to_thread(wait_for, "the HPA to scale in to one pod", watch,
                                timeout=STABILIZATION_S + 240, every=1)  # fmt: skip
        report("scale-in: load drop → pod removed (s, its deletion cost then)", json.dumps(removed))
        assert busy not in removed, f"the busy pod {busy} was removed: {removed}; costs {costs}"
        assert sorted(removed) == idle
        assert all(cost in (None, "0") for _, cost in removed.values()), removed
        assert costs[busy] == str(PER_POD), costs

        # The calls on the busy pod go on: each is answered after the scale-in, then hangs up.
        for call in by_pod[busy]:
            turn = await call.caller.turn(TURN, timeout=TURN_TIMEOUT)
            report(f"{call.room} after the scale-in: voice-to-voice", f"{turn.voice_to_voice:.2f} s")
            await hang_up(call)
        assert not agent_left_early(calls), f"the agent left these calls before the caller hung up: {calls}"
        await asyncio.to_thread(wait_for, "kubectl get va: 0 sessions", lambda: shows(ground, sessions=0, full=0),
                                timeout=120, every=1)  # fmt: skip
        assert len(ready_pods(cluster)) == 1
    finally:
        for call in calls:
            await hang_up(call)


async def test_a_spec_edit_during_live_calls_finishes_them_on_the_old_pod_and_new_calls_land_on_the_new_pod(
    small_fleet: NodeGround,
) -> None:
    ground, cluster = small_fleet, small_fleet.cluster
    patch_va(cluster, {"scaling": {"minReplicas": 1, "maxReplicas": 1}})
    await asyncio.to_thread(wait_for, "one agent pod", lambda: rolled(cluster, 1), timeout=STABILIZATION_S + 300,
                            every=2)  # fmt: skip
    (old,) = [str(p["metadata"]["name"]) for p in ready_pods(cluster)]
    calls = await calls_on_pods(ground, [f"rollout-{n}" for n in range(PER_POD)])
    try:
        assert {c.pod for c in calls} == {old}
        instructions = va(cluster)["spec"]["pipeline"]["instructions"]
        edited_at = time.monotonic()
        patch_va(cluster, {"pipeline": {"instructions": instructions + " Be brief."}})

        def new_ready_old_draining() -> dict[str, str] | None:
            ready = [str(p["metadata"]["name"]) for p in ready_pods(cluster)]
            return shows(ground, draining=1) if ready and old not in ready else None

        shown = await asyncio.to_thread(wait_for, "a new pod Ready, the old one draining in kubectl get va",
                                        new_ready_old_draining, timeout=300, every=1)  # fmt: skip
        report("spec edit → new pod Ready and the old one shown draining", f"{time.monotonic() - edited_at:.1f} s")
        report("kubectl get va -o wide, a rollout with live calls", json.dumps(shown))
        (new,) = [str(p["metadata"]["name"]) for p in ready_pods(cluster)]

        (fresh,) = await calls_on_pods(ground, ["rollout-new"])
        calls.append(fresh)
        assert fresh.pod == new, f"a new call went to {fresh.pod}, not the new pod {new} (old: {old})"

        for call in calls[:PER_POD]:  # the calls on the draining pod go on until their callers hang up
            turn = await call.caller.turn(TURN, timeout=TURN_TIMEOUT)
            report(f"{call.room} on the draining pod: voice-to-voice", f"{turn.voice_to_voice:.2f} s")
            await hang_up(call)

        def drained() -> bool:
            return old not in {p["metadata"]["name"] for p in all_pods(cluster)} and bool(shows(ground, draining=0))

        await asyncio.to_thread(wait_for, "the old pod gone once its calls ended", drained, timeout=180, every=1)
        await fresh.caller.turn(TURN, timeout=TURN_TIMEOUT)
        await hang_up(fresh)
        assert not agent_left_early(calls), f"the agent left these calls before the caller hung up: {calls}"
    finally:
        for call in calls:
            await hang_up(call)
