"""fleet_client.py against the operator's real fleet channel served over HTTP on loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voicefleet_agent.fleet_client import (
    FleetFollower,
    FleetTarget,
    agent_id,
    presence_follower,
    process_follower,
    target_from_env,
)
from voicefleet_operator.fleet import Fleet


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def served() -> AsyncIterator[tuple[Fleet, str]]:
    fleet = Fleet()
    fleet.admit("ns", "va", "pol", "tok")
    port = _free_port()
    runner = await fleet.serve("127.0.0.1", port)
    yield fleet, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_follows_generations_acknowledges_and_reports_errors(served: tuple[Fleet, str]) -> None:
    fleet, url = served
    channel = fleet.channel("ns", "pol")
    channel.publish(1, {"stt": "deepgram"})
    seen: list[tuple[int, dict[str, str]]] = []
    target = FleetTarget(url, "ns", "pol", "pod-a-1", voiceagent="va", token="tok")
    follower = FleetFollower(target, wait_s=0.5, on_change=lambda g, a: seen.append((g, a)))
    follower.start()
    await follower.wait_for(lambda f: f.generation == 1, timeout=5)
    follower.report_error("deepgram", 3)
    channel.publish(2, {"stt": "whisper"})
    await follower.wait_for(lambda f: f.generation == 2, timeout=5)
    assert seen == [(1, {"stt": "deepgram"}), (2, {"stt": "whisper"})]
    # the next poll (already waiting) carried generation 2, so the agent counts as acknowledged
    for _ in range(50):
        if channel.rollout(time.monotonic()) == (1, 1):
            break
        await asyncio.sleep(0.02)
    assert channel.rollout(time.monotonic()) == (1, 1)
    _, errors = channel.take_errors(time.monotonic())
    assert errors == {"deepgram": 1}
    await follower.aclose()


async def test_an_error_reaches_the_operator_at_once_not_with_the_next_long_poll(served: tuple[Fleet, str]) -> None:
    fleet, url = served
    channel = fleet.channel("ns", "pol")
    channel.publish(1, {"stt": "deepgram"})
    alert = channel.alert = asyncio.Event()
    follower = FleetFollower(FleetTarget(url, "ns", "pol", "pod-a-1", voiceagent="va", token="tok"), wait_s=30)
    follower.start()
    await follower.wait_for(lambda f: f.generation == 1, timeout=5)
    await asyncio.sleep(0.2)  # the long poll (30 s) is open now
    reported = time.monotonic()
    follower.report_error("deepgram")
    await asyncio.wait_for(alert.wait(), timeout=5)
    assert time.monotonic() - reported < 2.0, "reported by a short poll, not after the 30 s long poll"
    assert channel.take_reports() == {"deepgram"}
    assert channel.take_errors(time.monotonic()) == (1, {"deepgram": 1})
    assert follower.generation == 1
    await follower.aclose()


async def test_an_idle_pods_presence_poll_tells_the_operator_its_pod_reaches_the_channel(
    served: tuple[Fleet, str], tmp_path: Path
) -> None:
    fleet, url = served
    fleet.channel("ns", "pol").publish(1, {"stt": "deepgram"})
    (tmp_path / "token").write_text("tok")
    env = {"VOICEFLEET_FLEET_URL": url, "VOICEFLEET_POD_NAMESPACE": "ns", "VOICEFLEET_POD_NAME": "va-6d5f-x2",
           "VOICEFLEET_VOICEAGENT": "va", "VOICEFLEET_FLEET_TOKEN_FILE": str(tmp_path / "token")}  # fmt: skip
    follower = presence_follower("pol", env)
    assert follower is not None
    await follower.wait_for(lambda f: f.generation == 1, timeout=5)
    assert set(fleet.polled("ns", "va", time.monotonic())) == {"va-6d5f-x2"}
    assert fleet.channel("ns", "pol").rollout(time.monotonic()) == (0, 0)  # not a session process
    await follower.aclose()
    assert presence_follower(None, env) is None


async def test_survives_the_operator_being_away(served: tuple[Fleet, str]) -> None:
    fleet, url = served
    dead = f"http://127.0.0.1:{_free_port()}"
    follower = FleetFollower(FleetTarget(dead, "ns", "pol", "a"), wait_s=0.5, backoff_min_s=0.01, backoff_max_s=0.05)
    follower.report_error("deepgram")
    follower.start()
    for _ in range(100):
        if follower.failures >= 3:
            break
        await asyncio.sleep(0.02)
    assert follower.failures >= 3
    assert follower.generation == -1
    # errors not delivered are kept for the next successful poll
    fleet.channel("ns", "pol").publish(4, {"stt": "whisper"})
    follower.target = FleetTarget(url, "ns", "pol", "a", voiceagent="va", token="tok")
    await follower.wait_for(lambda f: f.generation == 4, timeout=5)
    _, errors = fleet.channel("ns", "pol").take_errors(time.monotonic())
    assert errors == {"deepgram": 1}
    await follower.aclose()


async def test_a_failing_listener_does_not_stop_the_follower(served: tuple[Fleet, str]) -> None:
    fleet, url = served
    channel = fleet.channel("ns", "pol")
    channel.publish(1, {"stt": "a"})

    def boom(_g: int, _a: dict[str, str]) -> None:
        raise RuntimeError("listener bug")

    follower = FleetFollower(
        FleetTarget(url, "ns", "pol", "x", voiceagent="va", token="tok"), wait_s=0.5, on_change=boom
    )
    calls: list[int] = []

    async def also(g: int, _a: dict[str, str]) -> None:
        calls.append(g)

    unsubscribe = follower.subscribe(also)
    follower.start()
    await follower.wait_for(lambda f: f.generation == 1, timeout=5)
    unsubscribe()
    channel.publish(2, {"stt": "b"})
    await follower.wait_for(lambda f: f.generation == 2, timeout=5)
    assert calls == [1]
    await follower.aclose()


async def test_the_token_is_read_from_its_file_at_every_poll_and_a_wrong_one_is_refused(
    served: tuple[Fleet, str], tmp_path: Path
) -> None:
    fleet, url = served
    fleet.channel("ns", "pol").publish(1, {"stt": "a"})
    token = tmp_path / "token"
    token.write_text("wrong\n")
    target = FleetTarget(url, "ns", "pol", "x", voiceagent="va", token_file=str(token))
    follower = FleetFollower(target, wait_s=0.5, backoff_min_s=0.01, backoff_max_s=0.05)
    follower.start()
    for _ in range(200):
        if follower.failures >= 2:
            break
        await asyncio.sleep(0.02)
    assert follower.failures >= 2 and follower.generation == -1  # refused: 403
    token.write_text("tok\n")  # the kubelet refreshed the mounted Secret
    await follower.wait_for(lambda f: f.generation == 1, timeout=5)
    await follower.aclose()


def test_target_from_env() -> None:
    env = {"VOICEFLEET_FLEET_URL": "http://op:8089", "VOICEFLEET_POD_NAMESPACE": "prod", "VOICEFLEET_POD_NAME": "p-1",
           "VOICEFLEET_VOICEAGENT": "tasks", "VOICEFLEET_FLEET_TOKEN_FILE": "/etc/voicefleet-fleet/token"}  # fmt: skip
    target = target_from_env("pol", env)
    assert target is not None
    assert target.voiceagent == "tasks" and target.token_file == "/etc/voicefleet-fleet/token"
    assert target.endpoint() == "http://op:8089/v1/fleet/prod/pol"
    assert target.agent.startswith("p-1-")
    assert target.pod == "p-1" and not target.presence
    presence = target_from_env("pol", env, presence=True)
    assert presence is not None and presence.presence
    assert target_from_env(None, env) is None
    assert target_from_env("pol", {}) is None
    assert process_follower(None, {}) is None
    assert agent_id("pod").startswith("pod-")
