"""session.py: turn handling and tool wiring chosen from the config."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable

import numpy as np
import pytest
from agent_testkit import make_config
from livekit import rtc
from livekit.agents import inference, vad
from livekit.agents.llm.mcp import MCPToolset

from voicefleet_agent.confirm import ConfirmationGate
from voicefleet_agent.contract import (
    TASKS_TOKEN_AUDIENCE,
    TASKS_TOKEN_TTL_SECONDS,
    CallerClaims,
    McpServerConfig,
    TokenError,
    VadConfig,
    verify_caller_token,
)
from voicefleet_agent.guarded_mcp import GuardedMCPServer
from voicefleet_agent.session import (
    FALSE_INTERRUPTION_TIMEOUT_S,
    INPUT_FRAME_MS,
    MIN_INTERRUPTION_S,
    agent_vad,
    caller_identity,
    caller_token,
    other_toolsets,
    room_options,
    tasks_client,
    turn_detection,
    turn_handling,
    vad_options,
)
from voicefleet_offline import espeak
from voicefleet_offline.audio import frame_db


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_semantic_uses_the_bundled_v1_mini_detector() -> None:
    detector = turn_detection(make_config(turn_detection="semantic"))

    assert isinstance(detector, inference.TurnDetector)
    assert detector.model == "turn-detector-v1-mini"


def test_semantic_falls_back_to_vad_loudly(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> inference.TurnDetector:
        raise RuntimeError("model missing")

    with caplog.at_level(logging.ERROR):
        assert turn_detection(make_config(turn_detection="semantic"), semantic=broken) == "vad"
    assert "SEMANTIC TURN DETECTION UNAVAILABLE" in caplog.text


@pytest.mark.parametrize("mode", ["vad", "stt"])
def test_other_modes_pass_through(mode: str) -> None:
    assert turn_detection(make_config(turn_detection=mode)) == mode


def test_barge_in_pauses_at_once_resumes_after_a_false_alarm_and_never_needs_the_cloud() -> None:
    options = turn_handling(make_config(turn_detection="vad"))

    assert options["interruption"] == {
        "enabled": True,
        "mode": "vad",
        "min_duration": MIN_INTERRUPTION_S,
        "resume_false_interruption": True,
        "false_interruption_timeout": FALSE_INTERRUPTION_TIMEOUT_S,
    }
    assert options["turn_detection"] == "vad"
    tuned = turn_handling(make_config(min_interruption_ms=500, false_interruption_timeout_ms=2000))["interruption"]
    assert (tuned["min_duration"], tuned["false_interruption_timeout"]) == (0.5, 2.0)


def test_the_caller_is_heard_in_20_ms_frames() -> None:
    options = room_options("alice")

    assert options.participant_identity == "alice"
    audio = options.get_audio_input_options()
    assert audio is not None and audio.frame_size_ms == INPUT_FRAME_MS == 20


async def _qualifies_after_onset(make: Callable[[], vad.VAD]) -> float:
    """Seconds from the caller's first voiced frame to the first inference whose speech duration reaches the
    interruption minimum (where the framework pauses the reply), the caller's audio fed as the room delivers it
    (24 kHz, 20 ms frames)."""
    rate, frame = 24000, 480
    speech = np.frombuffer(await espeak.synthesize("Wait, stop please", sample_rate=rate), dtype=np.int16)
    audio = np.concatenate([np.zeros(rate, dtype=np.int16), speech])
    onset = next(i for i in range(rate, audio.size, frame) if frame_db(audio[i : i + frame]) > -45) / rate
    stream = make().stream()
    for i in range(0, audio.size - frame, frame):
        stream.push_frame(rtc.AudioFrame(audio[i : i + frame].tobytes(), rate, 1, frame))
    stream.end_input()
    qualifies_at = None
    async for event in stream:
        if event.type == vad.VADEventType.INFERENCE_DONE and event.speech_duration >= MIN_INTERRUPTION_S:
            qualifies_at = event.timestamp
            break
    await stream.aclose()
    assert qualifies_at is not None, "the VAD never heard the barge-in"
    return qualifies_at - onset


async def test_a_barge_in_qualifies_with_the_start_of_speech_a_silero_window_sooner_within_60_ms() -> None:
    """The agent's own VAD (the config's defaults, as prewarm builds it): the framework would pause the reply one
    Silero window (32 ms) after the VAD started speech, at the next inference; the eager VAD reports that state
    with the start itself."""
    plain = await _qualifies_after_onset(lambda: inference.VAD(model="silero", **vad_options(VadConfig())))
    eager = await _qualifies_after_onset(lambda: agent_vad(VadConfig()))

    assert eager == pytest.approx(plain - 0.032, abs=0.001), f"eager {1000 * eager:.0f} ms, plain {1000 * plain:.0f}"
    assert eager <= 0.06, f"qualified {1000 * eager:.0f} ms after the onset"


def test_endpointing_delays_only_when_configured() -> None:
    assert "endpointing" not in turn_handling(make_config(turn_detection="vad"))
    options = turn_handling(make_config(turn_detection="vad", max_endpointing_delay_ms=1200))
    assert options["endpointing"] == {"max_delay": 1.2}


def test_vad_options_from_config() -> None:
    assert vad_options(VadConfig(activation_threshold=0.6, min_silence_duration_ms=400, min_speech_duration_ms=80)) == {
        "activation_threshold": 0.6,
        "min_silence_duration": 0.4,
        "min_speech_duration": 0.08,
    }


def test_the_tasks_server_is_wrapped_and_the_others_exposed() -> None:
    config = make_config(
        mcp_servers=(
            McpServerConfig(name="calendar", url="http://calendar:8000/mcp"),
            McpServerConfig(name="tasks", url="http://tasks:8800/mcp"),
        )
    )

    client = tasks_client(config)
    assert client is not None and client.url == "http://tasks:8800/mcp"
    [toolset] = other_toolsets(config, ConfirmationGate())
    assert isinstance(toolset, MCPToolset) and toolset.id == "calendar"
    assert isinstance(toolset._mcp_server, GuardedMCPServer)
    assert tasks_client(make_config(mcp_servers=())) is None


def test_a_phone_caller_is_known_by_number_anyone_else_by_identity() -> None:
    sip, standard = rtc.ParticipantKind.PARTICIPANT_KIND_SIP, rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    assert caller_identity(sip, "sip_+15550100", {"sip.phoneNumber": "+15550100"}) == "phone:+15550100"
    assert caller_identity(standard, "alice", {"sip.phoneNumber": "+15550100"}) == "participant:alice"
    assert caller_identity(sip, "sip_anonymous", {}) == "participant:sip_anonymous"


def test_the_session_token_names_the_caller_and_only_the_key_verifies_it() -> None:
    key = b"k" * 32
    token = caller_token("phone:+15550100", key, session_id="room-1", now=1000.0)

    claims = verify_caller_token(token, key, now=1001.0)
    assert (claims.sub, claims.sid, claims.aud) == ("phone:+15550100", "room-1", TASKS_TOKEN_AUDIENCE)
    with pytest.raises(TokenError, match="signature"):
        verify_caller_token(token, b"x" * 32, now=1001.0)
    with pytest.raises(TokenError, match="expired"):
        verify_caller_token(token, key, now=1000.0 + TASKS_TOKEN_TTL_SECONDS)
    head, _claims, signature = token.split(".")
    forged = CallerClaims(sub="phone:+15550199", sid="room-1", iat=1000, exp=9_999_999_999)
    with pytest.raises(TokenError, match="signature"):
        verify_caller_token(f"{head}.{_b64(forged.model_dump_json().encode())}.{signature}", key, now=1001.0)
