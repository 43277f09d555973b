"""A call through a real room, answered by an agent pod on the real node, and a provider flip that reaches that pod
in the middle of the call (docs/install.md with the offline stack and examples/, run by tests/e2e/conftest.py).

The caller is a host-side LiveKit participant (voiceroom.Caller) on the ground's livekit-server; the agents, the
offline providers, the tasks MCP server and the operator all run as pods that the charts and the operator rendered.
Timeouts are generous: a loaded 2-core machine makes a first turn take 30 s and more.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from livekit import api, rtc

from testground.install import FLEET_NS, agent_pods, component_pod_ip, tasks_token_key
from testground.kube import Cluster
from testground.operator import wait_for
from testground.pytest_plugin import NodeGround
from voicefleet_agent.session import caller_token
from voicefleet_agent.tasks_client import TasksClient
from voicefleet_offline import espeak
from voiceroom import Caller, LiveKitCredentials

# the first test also pays for the ground, the images and the install (pytest's default is 600 s per test)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

AGENT_NAME = "task-manager"  # examples/20-voiceagent.yaml
POLICY = "default"
GREETING_TIMEOUT = 180.0  # dispatch → job process → session → first words, on a loaded machine
TURN_TIMEOUT = 120.0
OFFLINE_STT_PORT, TASKS_PORT = 8790, 8800  # the chart's offline.ports


@dataclass(frozen=True)
class Fleet:
    """The examples' fleet, Ready, and where the host reads what the pods did."""

    ground: NodeGround
    offline: str  # the offline provider pod (Deepgram-compatible port): its /_control shows every server's counters
    tasks_url: str  # the tasks MCP server pod
    tasks_key: bytes

    @property
    def cluster(self) -> Cluster:
        return self.ground.cluster

    @property
    def livekit(self) -> LiveKitCredentials:
        return LiveKitCredentials.of(self.ground.livekit)


def report(what: str, value: str) -> None:
    print(f"\n[e2e figure] {what}: {value}", flush=True)


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def restarts(cluster: Cluster) -> dict[str, int]:
    """Agent pod name → restarts of its container."""
    return {p["metadata"]["name"]: sum(c["restartCount"] for c in p["status"]["containerStatuses"])
            for p in agent_pods(cluster)}  # fmt: skip


def log_records(cluster: Cluster, pod: str) -> list[dict[str, Any]]:
    """The agent's JSON log lines (livekit-agents' production format), job processes' included."""
    records = []
    for line in cluster.kubectl("-n", FLEET_NS, "logs", pod).stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = {"message": line}
        records.append(record if isinstance(record, dict) else {"message": line})
    return records


def policy_status(cluster: Cluster) -> dict[str, Any]:
    body = json.loads(cluster.kubectl("-n", FLEET_NS, "get", "providerpolicy", POLICY, "-o", "json").stdout)
    return dict(body.get("status") or {})


async def eventually(what: str, probe: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """testground's wait_for inside a call: a blocking probe runs in a thread (the call's audio keeps flowing), a
    coroutine function is awaited."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe() if inspect.iscoroutinefunction(probe) else await asyncio.to_thread(probe)
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def fleet(installed: NodeGround) -> Fleet:
    cluster = installed.cluster  # docs/install.md ran to `kubectl wait --for=condition=Ready voiceagent/tasks`
    running = agent_pods(cluster)
    assert len(running) >= 2 and all(p["spec"]["nodeName"] == installed.node.name for p in running)
    for pod in running:
        ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
        seconds = (_time(ready["lastTransitionTime"]) - _time(pod["status"]["startTime"])).total_seconds()
        report(f"agent pod {pod['metadata']['name']} start → Ready", f"{seconds:.0f} s (1 s resolution)")
    # the operator's probes have chosen the policy's first STT before any call (its health checks are real)
    wait_for("the policy on deepgram", lambda: (policy_status(cluster).get("active") or {}).get("stt") == "deepgram",
             timeout=120, every=0.5)  # fmt: skip
    return Fleet(
        ground=installed,
        offline=f"http://{component_pod_ip(cluster, 'offline')}:{OFFLINE_STT_PORT}",
        tasks_url=f"http://{component_pod_ip(cluster, 'tasks')}:{TASKS_PORT}/mcp",
        tasks_key=tasks_token_key(cluster).encode(),
    )


@pytest.fixture(scope="module", autouse=True)
def _speech() -> None:
    if not espeak.available():
        pytest.fail("espeak-ng or sox not installed: run `make system-deps` (apt-get install espeak-ng sox)")


async def call(fleet: Fleet, identity: str) -> Caller:
    """A caller in a fresh room that dispatched the example's agent and heard its greeting."""
    caller = Caller(fleet.livekit, f"call-{secrets.token_hex(4)}", identity)
    await caller.connect()
    try:
        started = time.monotonic()
        await caller.dispatch(AGENT_NAME)
        await caller.greeting(timeout=GREETING_TIMEOUT)
        report("dispatch → greeting heard", f"{time.monotonic() - started:.1f} s")
    except BaseException:
        await caller.aclose()
        raise
    return caller


async def answering_pod(fleet: Fleet, caller: Caller) -> str:
    """The agent pod whose worker LiveKit gave the room's job to, and whose participant the caller heard."""
    lk = fleet.ground.livekit
    async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as client:
        dispatches = await client.agent_dispatch.list_dispatch(room_name=caller.room_name)
    jobs = [job for d in dispatches for job in d.state.jobs]
    assert len(jobs) == 1, jobs
    (job,) = jobs
    assert job.state.participant_identity == caller.agent_identity, (job.state, caller.agent_identity)
    owners: list[str] = []
    for pod in await asyncio.to_thread(agent_pods, fleet.cluster):
        records = await asyncio.to_thread(log_records, fleet.cluster, pod["metadata"]["name"])
        registered = any(r.get("message") == "registered worker" and r.get("id") == job.state.worker_id
                         for r in records)  # fmt: skip
        took = any(r.get("message") == "received job request" and r.get("job_id") == job.id for r in records)
        if registered or took:
            assert registered and took, f"{pod['metadata']['name']}: registered {registered}, took the job {took}"
            owners.append(pod["metadata"]["name"])
    assert len(owners) == 1, f"worker {job.state.worker_id} (job {job.id}) is in the logs of {owners}"
    return owners[0]


async def task_titles(fleet: Fleet, identity: str) -> list[str]:
    """The caller's own list, read from the tasks server as the agent does: over MCP with a token for the caller."""
    token = caller_token(f"participant:{identity}", fleet.tasks_key, session_id="e2e-check", now=time.time())
    client = TasksClient(fleet.tasks_url, token=token)
    try:
        return [t.title for t in await client.list_tasks()]
    finally:
        await client.aclose()


def offline_counters(fleet: Fleet) -> dict[str, dict[str, Any]]:
    """Each offline provider's own request counters (GET /_control?target=all on the provider pod)."""
    with urllib.request.urlopen(f"{fleet.offline}/_control?target=all", timeout=10) as response:
        services: dict[str, dict[str, Any]] = json.load(response)["services"]
    return {name: state["counters"] for name, state in services.items()}


def transcriptions(counters: dict[str, dict[str, Any]]) -> int:
    return int(counters["openai"]["by_path"].get("/v1/audio/transcriptions", 0))


async def test_a_spoken_request_is_answered_by_an_agent_pod_and_lands_in_the_task_store(fleet: Fleet) -> None:
    identity = f"caller-{secrets.token_hex(3)}"
    caller = await call(fleet, identity)
    try:
        turn = await caller.turn("Add buy milk to my tasks", timeout=TURN_TIMEOUT)
        report("first turn, voice-to-voice at the caller", f"{turn.voice_to_voice:.2f} s")
        heard = await caller.wait_transcript("user", after=turn.utterance.started_at, timeout=TURN_TIMEOUT)
        answer = await caller.wait_transcript(
            "agent", after=turn.utterance.ended_at, timeout=TURN_TIMEOUT, contains="added"
        )
        pod = await answering_pod(fleet, caller)
    finally:
        await caller.aclose()

    assert pod in restarts(fleet.cluster)
    assert "milk" in heard.text.lower(), heard
    assert "added" in answer.text.lower(), answer

    async def titles() -> list[str]:
        return await task_titles(fleet, identity)

    stored = await eventually("the task in the tasks server", titles, 30)
    assert any("milk" in t for t in stored), stored


async def test_a_provider_flip_reaches_the_agent_pod_mid_call_without_a_restart(fleet: Fleet) -> None:
    cluster = fleet.cluster
    caller = await call(fleet, f"caller-{secrets.token_hex(3)}")
    try:
        await caller.turn("Add buy milk to my tasks", timeout=TURN_TIMEOUT)
        pod = await answering_pod(fleet, caller)

        def following() -> bool:  # the session's job process long-polls the fleet channel the operator rendered
            rollout = policy_status(cluster).get("rollout") or {}
            return rollout.get("agents", 0) >= 1 and rollout.get("acknowledged") == rollout.get("agents")

        await eventually("the call's agent process following the policy", following, 60)
        on_deepgram = (await asyncio.to_thread(offline_counters, fleet))["deepgram"]
        assert on_deepgram["ws_active"] >= 1, f"the call streams its audio to Deepgram: {on_deepgram}"
        pods_before = await asyncio.to_thread(restarts, cluster)

        flipped = time.monotonic()
        override = {"spec": {"override": {"stt": "whisper", "reason": "e2e: flip mid-call"}}}
        await asyncio.to_thread(cluster.kubectl, "-n", FLEET_NS, "patch", "providerpolicy", POLICY, "--type=merge",
                                "-p", json.dumps(override))  # fmt: skip
        await eventually(
            f"{pod} switching the call's STT",
            lambda: any(r.get("message") == "switching STT: deepgram → whisper" for r in log_records(cluster, pod)),
            60,
        )
        report("override patched → the pod's live session switched STT", f"{time.monotonic() - flipped:.1f} s")
        # the session's Deepgram stream drains what it heard and closes; from now on no audio goes there
        await eventually("the call's Deepgram stream closed",
                         lambda: offline_counters(fleet)["deepgram"]["ws_active"] == 0, 30)  # fmt: skip
        before = await asyncio.to_thread(offline_counters, fleet)

        turn = await caller.turn("Show me my list", timeout=TURN_TIMEOUT)
        heard = await caller.wait_transcript("user", after=turn.utterance.started_at, timeout=TURN_TIMEOUT)
        answer = await caller.wait_transcript(
            "agent", after=turn.utterance.ended_at, timeout=TURN_TIMEOUT, contains="milk"
        )
        after = await asyncio.to_thread(offline_counters, fleet)
        report("override patched → the next utterance answered", f"{time.monotonic() - flipped:.1f} s")
        report("turn after the flip, voice-to-voice at the caller", f"{turn.voice_to_voice:.2f} s")

        # Whisper tiny.en hears "list" as "lid" at times; the answer below proves the list was read
        assert heard.text.lower().startswith("show me"), heard
        assert "milk" in answer.text.lower(), answer  # the first turn's task, read back in the same call
        assert after["deepgram"]["ws_messages_in"] == before["deepgram"]["ws_messages_in"], "audio went to Deepgram"
        assert after["deepgram"]["ws_connections"] == before["deepgram"]["ws_connections"]
        assert transcriptions(after) > transcriptions(before), "Whisper transcribed nothing"
        # the same call, still up, with the same agent; no pod restarted or replaced
        assert caller.room.connection_state == rtc.ConnectionState.CONN_CONNECTED
        assert caller.agent_identity in {p.identity for p in caller.room.remote_participants.values()}
        assert await asyncio.to_thread(restarts, cluster) == pods_before
        assert (await asyncio.to_thread(policy_status, cluster)).get("active", {}).get("stt") == "whisper"
    finally:
        await caller.aclose()
        cluster.kubectl("-n", FLEET_NS, "patch", "providerpolicy", POLICY, "--type=json",
                        "-p", '[{"op": "remove", "path": "/spec/override"}]', check=False)  # fmt: skip
