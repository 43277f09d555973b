"""Calls in real rooms through a fleet flip: voiceroom callers talk to a real agent worker (``VoiceStack``: the
offline providers, the tasks server, ``python -m voicefleet_agent start``) through the real livekit-server, while the
worker follows a ProviderPolicy of the real operator. Each caller keeps asking; Deepgram is faulted, the fleet flips
to Whisper, Deepgram recovers and the fleet fails back, with the calls live throughout.

Like a person on the phone, a caller who hears nothing within ``REPEAT_S`` asks again (the utterance counts as
*unanswered*). A call is *dropped* when the caller sees the agent leave, or when it gets no answer for ``GIVE_UP_S``
however often it asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from livekit import rtc

from failover.harness import FleetPass, join_fleet, keys_doc, policy_doc
from voicefleet_agent import contract
from voicefleet_agent.fleet_client import FleetFollower, FleetTarget
from voiceroom import Caller, LiveKitCredentials, VoiceStack

REQUEST = "Add buy milk to my tasks"
REPEAT_S = 12.0  # silence after the caller's last word before it asks again
GIVE_UP_S = 45.0  # no answer this long, however often asked: the call is dropped
ROOMS_POLICY = "rooms"
ROOMS_MEMBER = "room-agents"


@dataclass
class Call:
    """One caller's conversation: when the agent answered, what went unanswered, and why the call dropped."""

    caller: Caller
    answered: list[float] = field(default_factory=list)  # time.time() of each answer's first audio
    unanswered: int = 0
    dropped: str | None = None
    task: asyncio.Task[None] | None = None

    def answers_after(self, t: float) -> int:
        return sum(a > t for a in self.answered)


async def _converse(call: Call) -> None:
    caller = call.caller
    while call.dropped is None:
        asked = time.monotonic()
        while True:
            utterance = await caller.say(REQUEST)
            try:
                start = await caller.wait_agent_speech(utterance.ended_at, timeout=REPEAT_S)
                break
            except TimeoutError:
                call.unanswered += 1
                if time.monotonic() - asked > GIVE_UP_S:
                    call.dropped = f"no answer for {GIVE_UP_S:g} s"
                    return
        call.answered.append(time.time() - (time.monotonic() - start))
        with contextlib.suppress(TimeoutError):
            await caller.wait_agent_quiet(start, timeout=30)


def _watch_agent(call: Call) -> None:
    @call.caller.room.on("participant_disconnected")
    def _left(participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT and call.dropped is None:
            call.dropped = "the agent left the room"


@contextlib.contextmanager
def _follow_env(fleet_url: str, namespace: str, token_file: Path) -> Iterator[None]:
    """What the operator renders into an agent pod that follows a policy; the worker inherits it."""
    values = {
        contract.ENV_FLEET_URL: fleet_url,
        contract.ENV_POD_NAMESPACE: namespace,
        contract.ENV_POD_NAME: "bench-rooms-agent",
        contract.ENV_VOICEAGENT: ROOMS_MEMBER,
        contract.ENV_FLEET_TOKEN_FILE: str(token_file),
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def _until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.1)


def calls_through_flip(
    ns: Any,
    fleet_url: str,
    livekit: Any,
    work: Path,
    health_check: dict[str, Any],
    calls: int,
    fault: str = "hang",
) -> dict[str, Any]:
    """``calls`` real-room calls through Deepgram ``fault`` → flip → recovery → failback; what the callers lived."""
    token_file = work / "rooms-fleet-token"
    result: dict[str, Any] = {"calls": calls, "fault": fault}
    with _follow_env(fleet_url, ns.name, token_file), VoiceStack(work / "rooms", LiveKitCredentials.of(livekit),
            configure=lambda c: c.model_copy(update={"policy_name": ROOMS_POLICY})) as stack:  # fmt: skip
        doc = policy_doc(stack.urls.deepgram, stack.urls.openai, name=ROOMS_POLICY, hold_s=2, **health_check)
        applied = ns.apply(keys_doc(), doc)
        assert applied.returncode == 0, applied.stderr
        fleet_pass = join_fleet(ns, token_file, policy=ROOMS_POLICY, name=ROOMS_MEMBER)
        try:
            asyncio.run(_through_flip(stack, fleet_url, ns.name, fleet_pass, calls, fault, result))
        finally:
            stack.reset_faults()
            result["worker_switches"] = stack.worker_log.read_text(errors="replace").count("switching STT:")
    return result


async def _through_flip(
    stack: VoiceStack,
    fleet_url: str,
    namespace: str,
    fleet_pass: FleetPass,
    calls: int,
    fault: str,
    result: dict[str, Any],
) -> None:
    target = FleetTarget(fleet_url, namespace, ROOMS_POLICY, f"bench-rooms-{time.time_ns()}")
    target = replace(target, voiceagent=fleet_pass.voiceagent, token_file=str(fleet_pass.token_file))
    follower = FleetFollower(target, wait_s=20)  # times the decision; the worker's own sessions do the switching
    follower.start()
    live: list[Call] = []
    try:
        await follower.wait_for(lambda f: f.active.get("stt") == "deepgram", timeout=60)
        for i in range(calls):
            caller = Caller(stack.livekit, f"bench-{secrets.token_hex(4)}", identity=f"caller-{i}")
            await caller.connect()
            live.append(Call(caller))
            await caller.dispatch(stack.agent_name)
        for call in live:
            await call.caller.greeting(timeout=120)  # a worker on a loaded machine starts its job slowly
            _watch_agent(call)
            call.task = asyncio.create_task(_converse(call))
        started = time.time()
        await _until("an answer in every call", lambda: all(c.answers_after(started) for c in live), 90)
        t_fault = time.time()
        stack.set_fault("deepgram", fault)
        await follower.wait_for(lambda f: f.active.get("stt") == "whisper", timeout=90)
        result["detection_ms"] = round((time.time() - t_fault) * 1000)
        flipped = time.time()
        await _until("an answer after the flip in every call", lambda: all(c.answers_after(flipped) for c in live), 90)
        result["first_answer_after_flip_s"] = [round(min(a for a in c.answered if a > flipped) - flipped, 2)
                                               for c in live]  # fmt: skip
        stack.set_fault("deepgram", "ok")
        recovered = time.time()
        await follower.wait_for(lambda f: f.active.get("stt") == "deepgram", timeout=120)
        result["failback_after_recovery_s"] = round(time.time() - recovered, 2)
        back = time.time()
        await _until("an answer after the failback in every call", lambda: all(c.answers_after(back) for c in live), 90)
    except Exception as error:  # reported in the result: the calls' figures below still say what happened
        result["error"] = repr(error)
    finally:
        for call in live:
            task = call.task
            if task is None:
                continue
            if task.done() and not task.cancelled() and (failed := task.exception()) is not None:
                call.dropped = call.dropped or f"the caller failed: {failed!r}"
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        result["dropped"] = sum(c.dropped is not None for c in live)
        result["dropped_why"] = [c.dropped for c in live if c.dropped]
        result["unanswered_utterances"] = sum(c.unanswered for c in live)
        result["answers"] = [len(c.answered) for c in live]
        for call in live:
            with contextlib.suppress(Exception):
                await call.caller.aclose()
        await follower.aclose()
