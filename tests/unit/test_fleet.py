"""The fleet channel: long polls wake on a new generation, acknowledgements and error reports are counted."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from voicefleet_agent.contract import FLEET_PATH
from voicefleet_operator.fleet import ACTIVE_WINDOW_S, REFUSED, Channel, Fleet


def test_rollout_counts_agents_on_the_current_generation_and_forgets_silent_ones() -> None:
    channel = Channel()
    channel.publish(1, {"stt": "deepgram"})
    now = time.monotonic()
    channel.heard("a", 1, {}, now)
    channel.heard("b", 0, {"deepgram": 2}, now)
    channel.heard("c", 1, {}, now - ACTIVE_WINDOW_S - 1)
    assert channel.rollout(now) == (1, 2)
    assert channel.take_errors(now) == (2, {"deepgram": 1})
    assert channel.take_errors(now) == (2, {})


AUTH = {"Authorization": "Bearer tok"}
AUTH2 = {"Authorization": "Bearer tok2"}


async def test_long_poll_answers_at_once_when_behind_and_wakes_on_publish() -> None:
    fleet = Fleet()
    fleet.admit("fleet", "tasks", "default", "tok")
    channel = fleet.channel("fleet", "default")
    channel.publish(3, {"stt": "deepgram"})
    runner = await fleet.serve("127.0.0.1", 0)
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}{FLEET_PATH}/fleet/default"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(
                url, params={"agent": "a", "generation": "-1", "voiceagent": "tasks"}, headers=AUTH
            ) as r:
                assert await r.json() == {"generation": 3, "active": {"stt": "deepgram"}}
            params = {"agent": "a", "generation": "3", "wait": "20", "voiceagent": "tasks"}
            poll = asyncio.create_task(http.get(url, params=params, headers=AUTH))
            await asyncio.sleep(0.2)
            assert not poll.done()  # waiting: the agent runs the current generation
            started = time.perf_counter()
            channel.publish(4, {"stt": "whisper"})
            async with await poll as r:
                body = await r.json()
            assert body == {"generation": 4, "active": {"stt": "whisper"}}
            assert time.perf_counter() - started < 1.0
            async with http.get(url, params={**params, "generation": "4", "wait": "0.1"}, headers=AUTH) as r:
                assert (await r.json())["generation"] == 4  # timed out, same generation
            assert channel.rollout(time.monotonic()) == (1, 1)
            fleet.admit("fleet", "other", "unknown", "tok2")
            unknown = f"http://127.0.0.1:{port}{FLEET_PATH}/fleet/unknown"
            async with http.get(unknown, params={"agent": "a", "voiceagent": "other"}, headers=AUTH2) as r:
                assert r.status == 404
            async with http.get(url, params={"generation": "x"}) as r:
                assert r.status == 400
    finally:
        await runner.cleanup()


async def test_polls_without_the_voiceagents_token_are_refused_and_counted() -> None:
    fleet = Fleet()
    fleet.admit("fleet", "tasks", "default", "tok")
    fleet.channel("fleet", "default").publish(1, {"stt": "deepgram"})
    runner = await fleet.serve("127.0.0.1", 0)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}{FLEET_PATH}/fleet/default"
    before = {r: REFUSED.labels(r)._value.get() for r in ("unknown", "token", "policy")}
    cases = [
        ({"voiceagent": "tasks"}, {}, "token"),  # no token
        ({"voiceagent": "tasks"}, {"Authorization": "Bearer wrong"}, "token"),
        ({"voiceagent": "intruder"}, AUTH, "unknown"),
        ({}, AUTH, "unknown"),
    ]
    fleet.admit("fleet", "elsewhere", "other-policy", "tok3")
    cases.append(({"voiceagent": "elsewhere"}, {"Authorization": "Bearer tok3"}, "policy"))
    try:
        async with aiohttp.ClientSession() as http:
            for params, headers, _ in cases:
                query = {"agent": "x", "generation": "0", "errors": "deepgram:5", **params}
                async with http.get(url, params=query, headers=headers) as r:
                    assert r.status == 403
            assert fleet.channel("fleet", "default").take_errors(time.monotonic()) == (0, {})  # nothing counted
            async with http.get(url, params={"agent": "x", "voiceagent": "tasks"}, headers=AUTH) as r:
                assert r.status == 200
    finally:
        await runner.cleanup()
    after = {r: REFUSED.labels(r)._value.get() for r in ("unknown", "token", "policy")}
    assert {r: after[r] - before[r] for r in after} == {"unknown": 2, "token": 2, "policy": 1}


async def test_polls_are_kept_per_pod_and_presence_polls_stay_out_of_the_rollout() -> None:
    fleet = Fleet()
    fleet.admit("fleet", "tasks", "default", "tok")
    channel = fleet.channel("fleet", "default")
    channel.publish(1, {"stt": "deepgram"})
    runner = await fleet.serve("127.0.0.1", 0)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}{FLEET_PATH}/fleet/default"
    base = {"generation": "0", "wait": "0", "voiceagent": "tasks"}
    try:
        async with aiohttp.ClientSession() as http:
            session = {**base, "agent": "pod-a-7", "pod": "pod-a"}
            presence = {**base, "agent": "pod-b-1", "pod": "pod-b", "presence": "1", "errors": "deepgram:1"}
            for params in (session, presence):
                async with http.get(url, params=params, headers=AUTH) as r:
                    assert r.status == 200
            async with http.get(url, params={**base, "agent": "c", "pod": "pod-c"}, headers=AUTH2) as r:
                assert r.status == 403
    finally:
        await runner.cleanup()
    now = time.monotonic()
    assert set(fleet.polled("fleet", "tasks", now)) == {"pod-a", "pod-b"}
    assert channel.rollout(now) == (0, 1)  # the session process only
    assert channel.take_errors(now) == (1, {})
    assert fleet.refusal_of("fleet", "tasks", now) == "token"
    assert fleet.refusal_of("fleet", "tasks", now + ACTIVE_WINDOW_S + 1) is None
    assert fleet.polled("fleet", "tasks", now + ACTIVE_WINDOW_S + 1) == {}
    assert fleet.members_of("fleet", "default") == ["tasks"]
    fleet.expel("fleet", "tasks")
    assert fleet.members_of("fleet", "default") == [] and fleet.refusal_of("fleet", "tasks", now) is None


async def test_refused_polls_of_strangers_are_not_kept() -> None:
    fleet = Fleet()
    fleet.channel("fleet", "default").publish(1, {"stt": "deepgram"})
    runner = await fleet.serve("127.0.0.1", 0)
    url = f"http://127.0.0.1:{runner.addresses[0][1]}{FLEET_PATH}/fleet/default"
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(3):
                params = {"agent": "x", "voiceagent": f"stranger-{i}", "pod": "p"}
                async with http.get(url, params=params, headers=AUTH) as r:
                    assert r.status == 403
    finally:
        await runner.cleanup()
    assert fleet.refused == {} and fleet.pods == {}
