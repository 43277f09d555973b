"""Live calls against the examples' VoiceAgent on the real node, for the scale-in and rollout tests
(tests/e2e/test_scalein.py) and `make bench-autoscale`: host-side voiceroom callers, each in its own room, that note
whether their agent ever left before they hung up (a dropped call), and which agent pod took each call."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc

from testground.install import AGENT_PODS, FLEET_NS, jobs_by_pod, pods
from testground.kube import Cluster
from voiceroom import Caller, LiveKitCredentials

AGENT = "tasks"  # examples/20-voiceagent.yaml
AGENT_NAME = "task-manager"
GREETING_TIMEOUT = 180.0  # dispatch → job process → session → first words, on a loaded 2-core machine
# At load ≈ 50 on 2 cores a worker can answer livekit-server's job offer after its deadline; LiveKit then drops the
# dispatch ("failed to assign job to worker ... context deadline exceeded", retry false) and no agent ever joins.
# A caller whose agent has not joined by then dispatches once more (counted in `Call.redispatched`).
JOIN_BEFORE_REDISPATCH_S = 60.0
# three agent pods with the default requests (500m CPU) do not fit the real node's 2 CPUs beside the chart's pods
SMALL_RESOURCES = {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


@dataclass
class Call:
    """One caller; `agent_left_at` holds when its agent left the room (monotonic)."""

    caller: Caller
    pod: str = ""
    greeted_s: float | None = None
    redispatched: int = 0
    hung_up_at: float | None = None
    agent_left_at: list[float] = field(default_factory=list)

    @property
    def room(self) -> str:
        return self.caller.room_name

    @property
    def dropped(self) -> bool:
        """Never greeted, or its agent left before the caller hung up."""
        return self.greeted_s is None or any(t < (self.hung_up_at or time.monotonic()) for t in self.agent_left_at)


async def place_call(livekit: Any, label: str) -> Call:
    """A caller in a fresh room that dispatched the examples' agent and heard its greeting (raises if it did not)."""
    caller = Caller(LiveKitCredentials.of(livekit), f"{label}-{secrets.token_hex(3)}", f"caller-{label}")
    call = Call(caller)

    @caller.room.on("participant_disconnected")
    def _left(participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            call.agent_left_at.append(time.monotonic())

    await caller.connect()
    started = time.monotonic()
    try:
        await caller.dispatch(AGENT_NAME)
        try:
            await caller.wait_agent_joined(JOIN_BEFORE_REDISPATCH_S)
        except TimeoutError:
            call.redispatched += 1
            await caller.dispatch(AGENT_NAME)
        await caller.greeting(timeout=GREETING_TIMEOUT)
    except BaseException:
        await hang_up(call)
        raise
    call.greeted_s = time.monotonic() - started
    return call


async def hang_up(call: Call) -> None:
    if call.hung_up_at is None:
        call.hung_up_at = time.monotonic()
        await call.caller.aclose()


def pod_of(cluster: Cluster, room: str) -> str:
    """The agent pod (not terminating) whose log shows the room's one job."""
    counts = {pod: n for pod, n in jobs_by_pod(cluster, room).items() if n}
    assert len(counts) == 1 and set(counts.values()) == {1}, f"room {room}: jobs by pod {counts}"
    return next(iter(counts))


def agent_left_early(calls: list[Call]) -> dict[str, list[float]]:
    return {c.room: c.agent_left_at for c in calls if any(t < (c.hung_up_at or 0) for t in c.agent_left_at)}


def va(cluster: Cluster) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cluster.kubectl("-n", FLEET_NS, "get", "va", AGENT, "-o", "json").stdout)
    return found


def patch_va(cluster: Cluster, spec: dict[str, Any]) -> None:
    cluster.kubectl("-n", FLEET_NS, "patch", "va", AGENT, "--type=merge", "-p", json.dumps({"spec": spec}))


def va_columns(cluster: Cluster) -> dict[str, str]:
    """`kubectl get va tasks -o wide` as column → value, what a person sees."""
    header, row = cluster.kubectl("-n", FLEET_NS, "get", "va", AGENT, "-o", "wide").stdout.splitlines()[:2]
    return dict(zip(header.split(), row.split(), strict=False))


def ready_pods(cluster: Cluster) -> list[dict[str, Any]]:
    """The agent pods that are Ready and not terminating."""

    def ready(pod: dict[str, Any]) -> bool:
        conds = pod.get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    found = pods(cluster, FLEET_NS, AGENT_PODS)
    return [p for p in found if ready(p) and not p["metadata"].get("deletionTimestamp")]


def all_pods(cluster: Cluster) -> list[dict[str, Any]]:
    """Every agent pod, terminating ones included."""
    return pods(cluster, FLEET_NS, AGENT_PODS)


def rolled(cluster: Cluster, replicas: int) -> bool:
    """The VoiceAgent Ready at its generation with exactly `replicas` agent pods, all Ready, none terminating."""
    body = va(cluster)
    status = body.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])
    current = status.get("observedGeneration") == body["metadata"]["generation"]
    return ready and current and len(all_pods(cluster)) == len(ready_pods(cluster)) == replicas
