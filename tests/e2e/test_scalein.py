"""Scale-in with live calls on the real node: the HPA removes idle agent pods first and no call loses its agent.

The examples' VoiceAgent (docs/install.md, tests/e2e/conftest.py) is edited to 3 small pods of at most 2 sessions,
the test ground's metrics loop runs (Prometheus → prometheus-adapter → custom.metrics.k8s.io), and 6 host-side
callers (voiceroom, offline providers) fill the 3 pods. The calls on the two older pods hang up; the operator sets
each pod's `controller.kubernetes.io/pod-deletion-cost` to its live sessions; the HPA scales in to one pod, and the
pods it removes are the idle ones, while the 2 calls on the busy pod go on and are answered after it.
Without the costs the ReplicaSet controller picks among pods of equal cost by how recently they became ready, so we
keep the calls on the youngest pod: the one it would pick first.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from livekit import rtc

from testground.install import AGENT_PODS, FLEET_NS, jobs_by_pod, pods
from testground.metrics import Metrics
from testground.operator import wait_for
from testground.pytest_plugin import NodeGround
from voicefleet_offline import espeak
from voicefleet_operator.sessions import DELETION_COST
from voiceroom import Caller, LiveKitCredentials

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

AGENT = "tasks"
AGENT_NAME = "task-manager"  # examples/20-voiceagent.yaml
PODS, PER_POD = 3, 2  # the 6 calls over 3 pods
GREETING_TIMEOUT = 180.0
TURN_TIMEOUT = 120.0
STABILIZATION_S = 45  # the HPA's scale-down window: time for the deletion costs to follow the calls that ended
SCALING = {
    "minReplicas": PODS,
    "maxReplicas": PODS,
    "targetSessionsPerPod": PER_POD,
    "maxSessionsPerPod": PER_POD,
    "scaleDownStabilizationSeconds": STABILIZATION_S,
}
# three agent pods with the default requests (500m CPU) do not fit the 2-CPU node beside the chart's pods
RESOURCES = {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


def report(what: str, value: str) -> None:
    print(f"\n[e2e figure] {what}: {value}", flush=True)


def kubectl_json(ground: NodeGround, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(ground.cluster.kubectl("-n", FLEET_NS, *args, "-o", "json").stdout)
    return found


def va_columns(ground: NodeGround) -> dict[str, str]:
    """`kubectl get va tasks -o wide` as column → value, what a person sees."""
    header, row = ground.cluster.kubectl("-n", FLEET_NS, "get", "va", AGENT, "-o", "wide").stdout.splitlines()[:2]
    return dict(zip(header.split(), row.split(), strict=False))


def ready_pods(ground: NodeGround) -> list[dict[str, Any]]:
    def ready(pod: dict[str, Any]) -> bool:
        conds = pod.get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    return [
        p for p in pods(ground.cluster, FLEET_NS, AGENT_PODS) if ready(p) and not p["metadata"].get("deletionTimestamp")
    ]


@pytest.fixture(scope="module")
def small_fleet(installed: NodeGround, node_metrics: Metrics) -> Iterator[NodeGround]:
    """The examples' VoiceAgent as 3 small pods of at most 2 sessions, Ready; its spec put back afterwards."""
    original = kubectl_json(installed, "get", "va", AGENT)["spec"]
    patch = {"spec": {"scaling": SCALING, "resources": RESOURCES}}
    installed.cluster.kubectl("-n", FLEET_NS, "patch", "va", AGENT, "--type=merge", "-p", json.dumps(patch))

    def rolled() -> bool:
        body = kubectl_json(installed, "get", "va", AGENT)
        status = body.get("status") or {}
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
        current = status.get("observedGeneration") == body["metadata"]["generation"]
        settled = len(pods(installed.cluster, FLEET_NS, AGENT_PODS)) == PODS  # the old pods are gone
        return ready and current and settled and len(ready_pods(installed)) == PODS

    wait_for("3 small agent pods Ready at the new generation", rolled, timeout=600, every=2)
    yield installed
    restore = [{"op": "replace", "path": "/spec", "value": original}]
    installed.cluster.kubectl("-n", FLEET_NS, "patch", "va", AGENT, "--type=json", "-p", json.dumps(restore))


@pytest.fixture(scope="module", autouse=True)
def _speech() -> None:
    if not espeak.available():
        pytest.fail("espeak-ng or sox not installed: run `make system-deps` (apt-get install espeak-ng sox)")


@dataclass
class Call:
    caller: Caller
    pod: str = ""
    hung_up_at: float | None = None
    agent_left_at: list[float] = field(default_factory=list)

    @property
    def room(self) -> str:
        return self.caller.room_name


async def place_call(ground: NodeGround, n: int) -> Call:
    caller = Caller(LiveKitCredentials.of(ground.livekit), f"scalein-{n}-{secrets.token_hex(3)}", f"caller-{n}")
    call = Call(caller)

    @caller.room.on("participant_disconnected")
    def _left(participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            call.agent_left_at.append(time.monotonic())

    await caller.connect()
    started = time.monotonic()
    await caller.dispatch(AGENT_NAME)
    await caller.greeting(timeout=GREETING_TIMEOUT)
    report(f"call {n}: dispatch → greeting heard", f"{time.monotonic() - started:.1f} s")
    return call


async def hang_up(call: Call) -> None:
    call.hung_up_at = time.monotonic()
    await call.caller.aclose()


def pod_of(ground: NodeGround, room: str) -> str:
    counts = {pod: n for pod, n in jobs_by_pod(ground.cluster, room).items() if n}
    assert len(counts) == 1 and set(counts.values()) == {1}, f"room {room}: jobs by pod {counts}"
    return next(iter(counts))


async def test_scale_in_with_live_calls_removes_the_idle_pods_first_and_every_call_keeps_its_agent(
    small_fleet: NodeGround,
) -> None:
    ground = small_fleet
    calls: list[Call] = []
    try:
        for n in range(PODS * PER_POD):  # one at a time: each pod reports its load before the next dispatch
            calls.append(await place_call(ground, n))
        for call in calls:
            call.pod = await asyncio.to_thread(pod_of, ground, call.room)
        by_pod: dict[str, list[Call]] = {}
        for call in calls:
            by_pod.setdefault(call.pod, []).append(call)
        assert sorted(len(c) for c in by_pod.values()) == [PER_POD] * PODS, {p: len(c) for p, c in by_pod.items()}

        def shows(sessions: int, full: int) -> dict[str, str] | None:
            columns = va_columns(ground)
            return columns if (columns.get("SESSIONS"), columns.get("FULL")) == (str(sessions), str(full)) else None

        shown = await asyncio.to_thread(wait_for, "kubectl get va: 6 sessions, 3 pods full", lambda: shows(6, 3),
                                        timeout=120, every=1)  # fmt: skip
        report("kubectl get va -o wide, 6 calls", json.dumps(shown))

        # The HPA may now go down to one pod; with 6 calls on 3 pods of target 2 it keeps 3.
        lower = {"spec": {"scaling": {"minReplicas": 1}}}
        ground.cluster.kubectl("-n", FLEET_NS, "patch", "va", AGENT, "--type=merge", "-p", json.dumps(lower))

        # The load drops: the calls on all but the youngest pod hang up.
        def became_ready(pod: dict[str, Any]) -> str:
            return str(next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")["lastTransitionTime"])

        youngest = max(ready_pods(ground), key=lambda p: (became_ready(p), p["metadata"]["creationTimestamp"]))
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
            for pod in pods(ground.cluster, FLEET_NS, AGENT_PODS):
                meta = pod["metadata"]
                cost = (meta.get("annotations") or {}).get(DELETION_COST)
                if meta.get("deletionTimestamp"):
                    removed.setdefault(meta["name"], (time.monotonic() - dropped_at, costs.get(meta["name"], cost)))
                else:
                    costs[meta["name"]] = cost
            return set(idle) <= set(removed) or busy in removed

        await asyncio.to_thread(wait_for, "the HPA to scale in to one pod", watch,
                                timeout=STABILIZATION_S + 240, every=1)  # fmt: skip
        report("scale-in, load drop → each pod removed (s, its deletion cost then)", json.dumps(removed))
        assert busy not in removed, f"the busy pod {busy} was removed: {removed}; costs {costs}"
        assert sorted(removed) == idle
        assert all(cost in (None, "0") for _, cost in removed.values()), removed
        assert costs[busy] == str(PER_POD), costs

        # The calls on the busy pod go on: each is answered after the scale-in, then hangs up.
        for call in by_pod[busy]:
            turn = await call.caller.turn("Add buy milk to my tasks", timeout=TURN_TIMEOUT)
            report(f"{call.room} after the scale-in: voice-to-voice", f"{turn.voice_to_voice:.2f} s")
            await hang_up(call)
        left_early = {c.room: c.agent_left_at for c in calls if any(t < (c.hung_up_at or 0) for t in c.agent_left_at)}
        assert not left_early, f"the agent left these calls before the caller hung up: {left_early}"
        shown = await asyncio.to_thread(wait_for, "kubectl get va: 0 sessions", lambda: shows(0, 0),
                                        timeout=120, every=1)  # fmt: skip
        assert len(ready_pods(ground)) == 1
    finally:
        for call in calls:
            if call.hung_up_at is None:
                await hang_up(call)
