"""session.py: turn handling and tool wiring chosen from the config."""

from __future__ import annotations

import logging

import pytest
from agent_testkit import make_config
from livekit.agents import inference
from livekit.agents.llm.mcp import MCPToolset

from voicefleet_agent.confirm import ConfirmationGate
from voicefleet_agent.contract import McpServerConfig, VadConfig
from voicefleet_agent.guarded_mcp import GuardedMCPServer
from voicefleet_agent.session import other_toolsets, tasks_client, turn_detection, turn_handling, vad_options


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


def test_barge_in_is_on_and_never_needs_the_cloud() -> None:
    options = turn_handling(make_config(turn_detection="vad"))

    assert options["interruption"] == {"enabled": True, "mode": "vad"}
    assert options["turn_detection"] == "vad"


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
