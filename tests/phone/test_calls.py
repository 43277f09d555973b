"""Real phone calls: a SIP user agent (pjsua2) in its own network namespace dials livekit-sip, which the operator's
trunk and dispatch rule route to a real agent worker. Whisper (tiny.en) hears the agent on the caller's side.

The agent worker runs as a local process (the VoiceAgent's pods are kwok's); its agentName is the one the
operator's dispatch rule names, so a call reaches it only through the operator's LiveKit objects.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from livekit import api
from livekit.protocol.room import ListRoomsRequest

from phonecall import CallResult, Phone, sip_outcomes, transcribe
from testground.livekit import LiveKit
from testground.operator import wait_for
from testground.sip import SipGround
from voicefleet_agent import contract
from voiceroom import VoiceStack

from .conftest import AGENT_NAME, PASSWORD, USERNAME, Line

pytestmark = pytest.mark.integration

SESSIONS = f'voicefleet_agent_sessions_total{{agent="{AGENT_NAME}"}}'
ACTIVE = f'voicefleet_agent_active_sessions{{agent="{AGENT_NAME}"}}'


def phone_calls(stack: VoiceStack) -> dict[str, float]:
    """The agent's answered phone calls by outcome."""
    prefix = f'{contract.PHONE_CALLS}{{agent="{AGENT_NAME}",outcome="'
    return {k[len(prefix) : -2]: v for k, v in stack.metric_samples().items() if k.startswith(prefix)}


def sessions(stack: VoiceStack) -> float:
    return stack.metric_samples().get(SESSIONS, 0.0)


def rooms_since(livekit: LiveKit, started_at: float) -> list[str]:
    """Call rooms livekit-server created since `started_at` (epoch seconds)."""

    async def list_rooms() -> list[Any]:
        async with api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as client:
            return list((await client.room.list_rooms(ListRoomsRequest())).rooms)

    return [r.name for r in asyncio.run(list_rooms()) if r.name.startswith("call-") and
            r.creation_time >= int(started_at)]  # fmt: skip


# livekit-sip drops a call no trunk and rule accept without a final answer (its flood protection: the caller
# learns nothing about the endpoint); the caller gives up after this long and CANCELs.
DROP_WAIT = 6.0
GREETING_WORDS = ("task", "keep track", "like to do")
DROPPED = 0  # CallResult.status when no final answer came


def counted(sip: SipGround, outcome: str, before: dict[str, float]) -> None:
    """livekit-sip's own Prometheus count of inbound calls by outcome went up for `outcome`."""
    wait_for(f"livekit-sip counting {outcome}",
             lambda: sip_outcomes(sip.prometheus_url).get(outcome, 0.0) > before.get(outcome, 0.0), 30)  # fmt: skip


def assert_refused(
    call: CallResult, status: int, livekit: LiveKit, stack: VoiceStack, before: float, answered_before: float
) -> None:
    assert call.status == status, call.describe()
    if status == DROPPED:
        assert 100 in call.provisional and call.hangup is not None, call.describe()
    assert call.confirmed is None and call.media is None, call.describe()
    assert rooms_since(livekit, call.started_at) == [], "a refused call got a room"
    assert sessions(stack) == before, "a refused call reached the agent"
    assert sum(phone_calls(stack).values()) == answered_before, "a refused call was counted as answered"


def test_call_with_the_right_credentials_is_greeted_adds_the_task_and_hang_up_ends_the_session(
    line: Line, phone: Phone, phone_stack: VoiceStack, livekit: LiveKit, sip: SipGround
) -> None:
    before, hung_up = sessions(phone_stack), phone_calls(phone_stack).get("caller_hung_up", 0.0)
    outcomes = sip_outcomes(sip.prometheus_url)
    call = phone.call(line.number, username=USERNAME, password=PASSWORD, say="Add buy milk to my tasks")

    assert call.answered, call.describe()
    assert call.first_audio is not None and call.greeting_end is not None, call.describe()
    assert call.recording is not None
    greeting = transcribe(call.recording, call.segment(call.first_audio, call.greeting_end)).lower()
    # "Hi! I can keep track of your tasks. What would you like to do?" through G.722 and Whisper tiny.en: heard as
    # "...track of your tasks..." and once "...track of your ass. what you like to do."
    assert any(words in greeting for words in GREETING_WORDS), f"greeting heard as {greeting!r}"

    def phone_callers_tasks() -> list[str]:  # kept under the caller's number (phone:<sip.phoneNumber>)
        by_owner = phone_stack.task_db.titles_by_owner()
        return [title for owner, titles in by_owner.items() if owner.startswith("phone:") for title in titles]

    wait_for("task in the phone caller's list", lambda: any("milk" in t for t in phone_callers_tasks()), 30)
    assert call.reply_start is not None, call.describe()
    reply = transcribe(call.recording, call.segment(call.reply_start, call.reply_end)).lower()
    assert "add" in reply or "milk" in reply, f"reply heard as {reply!r}"
    assert not call.remote_hangup and call.hangup is not None, call.describe()
    # the hang-up (BYE) ends the agent's session and frees the job
    assert sessions(phone_stack) == before + 1
    wait_for("session ended", lambda: phone_stack.metric_samples().get(ACTIVE, 0.0) == 0.0, 60)
    # protobuf JSON leaves out a zero: no "active_jobs" means none
    wait_for("job freed", lambda: int(phone_stack.worker_status().get("active_jobs", 0)) == 0, 60)
    counted(sip, "accepted", outcomes)
    counted(sip, "success/hangup", outcomes)
    # and the agent counts it for its VoiceAgent as answered and ended by the caller
    wait_for(
        "call counted as hung up by the caller",
        lambda: phone_calls(phone_stack).get("caller_hung_up") == hung_up + 1,
        30,
    )
    assert set(phone_calls(phone_stack)) == set(contract.PHONE_OUTCOMES)


def test_wrong_password_is_refused_with_401_and_reaches_no_agent(
    line: Line, phone: Phone, phone_stack: VoiceStack, livekit: LiveKit, sip: SipGround
) -> None:
    before, outcomes = sessions(phone_stack), sip_outcomes(sip.prometheus_url)
    answered = sum(phone_calls(phone_stack).values())
    call = phone.call(line.number, username=USERNAME, password="not-the-password")
    assert_refused(call, 401, livekit, phone_stack, before, answered)
    counted(sip, "client_error/unauthorized", outcomes)


def test_call_without_credentials_is_challenged_with_407_and_reaches_no_agent(
    line: Line, phone: Phone, phone_stack: VoiceStack, livekit: LiveKit
) -> None:
    before, answered = sessions(phone_stack), sum(phone_calls(phone_stack).values())
    call = phone.call(line.number)
    assert_refused(call, 407, livekit, phone_stack, before, answered)


def test_caller_outside_allowed_addresses_is_dropped_and_reaches_no_agent(
    line: Line, phone: Phone, phone_stack: VoiceStack, livekit: LiveKit, sip: SipGround
) -> None:
    before, outcomes = sessions(phone_stack), sip_outcomes(sip.prometheus_url)
    answered = sum(phone_calls(phone_stack).values())
    call = phone.call(line.number, username=USERNAME, password=PASSWORD, from_ip=sip.stranger_ip,
                      answer_timeout=DROP_WAIT)  # fmt: skip
    assert_refused(call, DROPPED, livekit, phone_stack, before, answered)
    counted(sip, "client_error/flood", outcomes)


def test_number_no_trunk_owns_is_dropped_and_reaches_no_agent(
    line: Line, phone: Phone, phone_stack: VoiceStack, livekit: LiveKit
) -> None:
    before, answered = sessions(phone_stack), sum(phone_calls(phone_stack).values())
    stranger_number = line.number[:-1] + str((int(line.number[-1]) + 1) % 10)
    call = phone.call(stranger_number, username=USERNAME, password=PASSWORD, answer_timeout=DROP_WAIT)
    assert_refused(call, DROPPED, livekit, phone_stack, before, answered)


def test_removing_the_phone_channel_refuses_the_next_call_and_restoring_it_answers(
    line: Line, phone: Phone, phone_stack: VoiceStack, livekit: LiveKit
) -> None:
    ns = line.ns
    ns.kubectl("patch", "voiceagent", "tasks", "--type=json", "-p", '[{"op":"remove","path":"/spec/channels/phone"}]')
    wait_for("PhoneReady gone", lambda: ns.condition("voiceagent", "tasks", "PhoneReady") is None)
    before, answered = sessions(phone_stack), sum(phone_calls(phone_stack).values())
    call = phone.call(line.number, username=USERNAME, password=PASSWORD, answer_timeout=DROP_WAIT)
    assert_refused(call, DROPPED, livekit, phone_stack, before, answered)

    phone_channel = line.body["spec"]["channels"]["phone"]
    ns.kubectl("patch", "voiceagent", "tasks", "--type=merge", "-p",
               json.dumps({"spec": {"channels": {"phone": phone_channel}}}))  # fmt: skip
    ns.wait_condition("voiceagent", "tasks", "PhoneReady", "True", "Configured")
    started = time.monotonic()
    call = phone.call(line.number, username=USERNAME, password=PASSWORD)
    assert call.answered and call.first_audio is not None, call.describe()
    assert time.monotonic() - started < 120
