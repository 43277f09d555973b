"""Phone calls through livekit-sip into a real agent worker (offline providers), the trunk made by the operator."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from phonecall import Phone
from testground.livekit import LiveKit
from testground.operator import Namespace
from testground.sip import SipGround
from voicefleet_offline import espeak
from voiceroom import LiveKitCredentials, VoiceStack, wait_until

AGENT_NAME = "phone-tasks"
USERNAME = "trunk-user"
PASSWORD = "s3cret-pass-word"
RINGING_TIMEOUT = 90


@pytest.fixture(scope="session")
def phone_stack(livekit: LiveKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoiceStack]:
    """A real agent worker (registered as AGENT_NAME) with the offline providers and the tasks MCP server."""
    if not espeak.available():
        pytest.fail("espeak-ng or sox not installed: run `make system-deps` (apt-get install espeak-ng sox)")
    with VoiceStack(tmp_path_factory.mktemp("phone-agent"), LiveKitCredentials.of(livekit), AGENT_NAME) as stack:
        # registered, and its warm job process up (main + forkserver + job process), as a fleet pod would be
        wait_until(lambda: stack.worker_memory().processes >= 3, timeout=120, what="the agent's warm job process")
        yield stack


@pytest.fixture(scope="session")
def phone(sip: SipGround, tmp_path_factory: pytest.TempPathFactory) -> Phone:
    return Phone(sip, tmp_path_factory.mktemp("phone-calls"))


@dataclass(frozen=True)
class Line:
    """A VoiceAgent with a phone channel, as the operator configured it in livekit-server."""

    ns: Namespace
    number: str
    body: dict[str, Any]


def voice_agent(ns: Namespace, livekit: LiveKit, number: str, allowed: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "voicefleet.io/v1alpha1",
        "kind": "VoiceAgent",
        "metadata": {"name": "tasks", "namespace": ns.name},
        "spec": {
            "image": "agent:dev",
            "agentName": AGENT_NAME,
            "livekit": {"url": livekit.url, "secretRef": {"name": "lk"}},
            "pipeline": {
                "stt": {"provider": "deepgram", "model": "nova-3"},
                "llm": {"provider": "openai", "model": "gpt-4o-mini"},
                "tts": {"provider": "cartesia", "model": "sonic-3"},
            },
            "scaling": {"minReplicas": 1, "maxReplicas": 2},
            "channels": {
                "phone": {
                    "numbers": [number],
                    "allowedAddresses": allowed,
                    "authSecretRef": {"name": "sip-auth"},
                    "roomPrefix": "call-",
                    # livekit-sip rings until the agent is in the room (then 200 OK), and gives up with 486 after
                    # this; a job process starting cold on this shared 2-core box took 20-30 s under load 17
                    "ringingTimeoutSeconds": RINGING_TIMEOUT,
                }
            },
        },
    }


@pytest.fixture
def line(ns: Namespace, livekit: LiveKit, sip: SipGround, phone_stack: VoiceStack) -> Line:
    """The VoiceAgent `tasks` answering a number of this test's own from the caller's address only."""
    number = f"+1555{secrets.randbelow(10**7):07d}"
    body = voice_agent(ns, livekit, number, [f"{sip.caller_ip}/32"])
    applied = ns.apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lk"},
         "stringData": {"apiKey": livekit.api_key, "apiSecret": livekit.api_secret}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sip-auth"},
         "stringData": {"username": USERNAME, "password": PASSWORD}},
        body,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    ns.wait_condition("voiceagent", "tasks", "PhoneReady", "True", "Configured")
    phone_stack.task_db.clear_all()
    return Line(ns, number, body)
