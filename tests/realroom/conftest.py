"""A real room: livekit-server (test ground), offline providers, tasks MCP server and a real agent worker."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from testground.livekit import LiveKit
from voicefleet_offline import espeak
from voiceroom import Caller, LiveKitCredentials, VoiceStack


@pytest.fixture(scope="session")
def voice_stack(livekit: LiveKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoiceStack]:
    if not espeak.available():
        pytest.fail("espeak-ng or sox not installed: run `make system-deps` (apt-get install espeak-ng sox)")
    with VoiceStack(tmp_path_factory.mktemp("voiceroom"), LiveKitCredentials.of(livekit)) as stack:
        yield stack


@pytest.fixture
async def caller(voice_stack: VoiceStack) -> AsyncIterator[Caller]:
    """A caller alone with the agent in a fresh room, after the agent's greeting; empty task list."""
    voice_stack.store.clear()
    voice_stack.reset_faults()
    async with Caller(voice_stack.livekit, f"room-{secrets.token_hex(4)}") as caller:
        await caller.dispatch(voice_stack.agent_name)
        await caller.greeting()
        yield caller
    voice_stack.reset_faults()
