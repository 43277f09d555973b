"""A real agent worker session (livekit-server room, real caller) following a ProviderPolicy through the real
operator: Deepgram hangs mid-call, the fleet flips to Whisper and the same call's next request is understood.
In-session fallback alone never leaves a hanging Deepgram (see e2e/failover/inline.py), so the second turn
succeeding is the live switch."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from failover.harness import MEMBER, POLICY, join_fleet, keys_doc, policy_doc, wait_until
from testground.livekit import LiveKit
from testground.operator import Namespace, OperatorProcess
from voicefleet_agent import contract
from voicefleet_offline import espeak
from voiceroom import Caller, LiveKitCredentials, VoiceStack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(
    livekit: LiveKit,
    fns: Namespace,
    failover_operator: OperatorProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[VoiceStack]:
    if not espeak.available():
        pytest.fail("espeak-ng or sox not installed: run `make system-deps` (apt-get install espeak-ng sox)")
    # what the operator renders into a pod that follows a policy (the worker inherits this environment)
    monkeypatch.setenv(contract.ENV_FLEET_URL, failover_operator.fleet_url)
    monkeypatch.setenv(contract.ENV_POD_NAMESPACE, fns.name)
    monkeypatch.setenv(contract.ENV_POD_NAME, "realroom-agent")
    monkeypatch.setenv(contract.ENV_VOICEAGENT, MEMBER)  # the token file is written once the policy exists
    monkeypatch.setenv(contract.ENV_FLEET_TOKEN_FILE, str(tmp_path / "fleet-token"))
    voice = VoiceStack(
        tmp_path / "voiceroom",
        LiveKitCredentials.of(livekit),
        configure=lambda config: config.model_copy(update={"policy_name": POLICY}),
    )
    with voice:
        yield voice


def _status(ns: Namespace) -> dict[str, Any]:
    return dict((ns.get("providerpolicy", POLICY) or {}).get("status") or {})


def _titles(stack: VoiceStack) -> list[str]:
    return [t.title for t in stack.store.list_tasks()]


async def test_a_live_call_moves_to_whisper_when_deepgram_hangs(
    stack: VoiceStack, fns: Namespace, tmp_path: Path
) -> None:
    assert fns.apply(keys_doc(), policy_doc(stack.urls.deepgram, stack.urls.openai, hold_s=60)).returncode == 0
    wait_until("policy on deepgram", lambda: (_status(fns).get("active") or {}).get("stt") == "deepgram", 60)
    join_fleet(fns, tmp_path / "fleet-token")  # the token the pod's mounted Secret would hold
    stack.store.clear()
    async with Caller(stack.livekit, f"room-{secrets.token_hex(4)}") as caller:
        await caller.dispatch(stack.agent_name)
        await caller.greeting()
        await caller.turn("Add buy milk to my tasks", timeout=30)
        wait_until("task from the first turn", lambda: any("milk" in t for t in _titles(stack)), 30)

        def following() -> bool:
            rollout = _status(fns).get("rollout") or {}
            return bool(rollout.get("agents", 0) >= 1 and rollout.get("acknowledged") == rollout.get("agents"))

        wait_until("the session's process follows the policy", following, 30, every=0.2)
        stack.set_fault("deepgram", "hang")
        wait_until("fleet on whisper", lambda: (_status(fns).get("active") or {}).get("stt") == "whisper", 40)
        log = stack.worker_log
        wait_until("the live session switched", lambda: "switching STT: deepgram → whisper" in log.read_text(), 20)
        transcribed = stack.provider_state("openai")["counters"]["by_path"].get("/v1/audio/transcriptions", 0)
        started = time.monotonic()
        await caller.turn("Add buy milk to my tasks", timeout=30)  # the call goes on: the agent answers
        # This test is about STT moving mid-call; whether the intent model acts on Whisper's words is tested elsewhere.
        heard = wait_until(
            "the user's words after the flip, transcribed",
            lambda: [t.text for t in caller.transcripts if t.speaker == "user" and t.at >= started and t.text],
            10,
        )
        assert any("milk" in text.lower() for text in heard), heard
        after = stack.provider_state("openai")["counters"]["by_path"].get("/v1/audio/transcriptions", 0)
        assert after > transcribed, "the turn after the flip went to Whisper"
