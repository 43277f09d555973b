"""One voice session: pipeline, turn handling, tools and metrics wired into an AgentSession."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypedDict

from livekit.agents import AgentSession, CloseEvent, JobContext, inference, llm
from livekit.agents.inference import TurnDetectorVersions
from livekit.agents.llm.mcp import MCPToolset
from livekit.agents.vad import VAD
from livekit.agents.voice.turn import EndpointingOptions, TurnDetectionMode, TurnHandlingOptions

from voicefleet_agent.assistant import TaskAssistant, transcript
from voicefleet_agent.confirm import ConfirmationGate
from voicefleet_agent.contract import TASKS_MCP_SERVER, AgentConfig, VadConfig
from voicefleet_agent.fleet_client import FleetFollower, process_follower
from voicefleet_agent.guarded_mcp import GuardedMCPServer
from voicefleet_agent.metrics import SessionRecorder, default_metrics
from voicefleet_agent.providers import Pipeline, build_pipeline
from voicefleet_agent.switching import SwitchingLLM, SwitchingSTT
from voicefleet_agent.tasks_client import TasksClient, close_quietly

log = logging.getLogger(__name__)

GREETING = "Hi! I can keep track of your tasks. What would you like to do?"
# the only turn detector model that runs offline, bundled in livekit-local-inference; pinned on purpose
SEMANTIC_TURN_DETECTOR_VERSION: TurnDetectorVersions = "v1-mini"


def semantic_turn_detector() -> TurnDetectionMode:
    return inference.TurnDetector(version=SEMANTIC_TURN_DETECTOR_VERSION)


def turn_detection(
    config: AgentConfig, *, semantic: Callable[[], TurnDetectionMode] = semantic_turn_detector
) -> TurnDetectionMode:
    """The configured mode; semantic falls back to VAD (loudly) if its local model cannot load."""
    if config.turn_detection == "semantic":
        try:
            return semantic()
        except Exception:
            log.exception(
                "SEMANTIC TURN DETECTION UNAVAILABLE: TurnDetector(version=%r) failed to load; "
                "falling back to VAD turn detection",
                SEMANTIC_TURN_DETECTOR_VERSION,
            )
            return "vad"
    return config.turn_detection


def turn_handling(config: AgentConfig, *, detection: TurnDetectionMode | None = None) -> TurnHandlingOptions:
    options: TurnHandlingOptions = {
        "turn_detection": detection if detection is not None else turn_detection(config),
        # barge-in on voice activity; "adaptive" would call LiveKit's hosted inference, which pods cannot reach
        "interruption": {"enabled": True, "mode": "vad"},
    }
    endpointing: EndpointingOptions = {}
    if config.min_endpointing_delay_ms is not None:
        endpointing["min_delay"] = config.min_endpointing_delay_ms / 1000
    if config.max_endpointing_delay_ms is not None:
        endpointing["max_delay"] = config.max_endpointing_delay_ms / 1000
    if endpointing:
        options["endpointing"] = endpointing
    return options


class VadOptions(TypedDict):
    activation_threshold: float
    min_silence_duration: float
    min_speech_duration: float


def vad_options(vad: VadConfig) -> VadOptions:
    return {
        "activation_threshold": vad.activation_threshold,
        "min_silence_duration": vad.min_silence_duration_ms / 1000,
        "min_speech_duration": vad.min_speech_duration_ms / 1000,
    }


def tasks_client(config: AgentConfig) -> TasksClient | None:
    for server in config.mcp_servers:
        if server.name == TASKS_MCP_SERVER:
            return TasksClient(server.url)
    return None


def other_toolsets(config: AgentConfig, gate: ConfirmationGate) -> list[llm.Toolset]:
    """Tools of every configured MCP server except the tasks one, which the assistant wraps itself; the tools each
    server declares destructive ask the user first, through the session's ``gate``."""
    return [
        MCPToolset(
            id=s.name,
            mcp_server=GuardedMCPServer(s.url, gate=gate, transcript=transcript, transport_type="streamable_http"),
        )
        for s in config.mcp_servers
        if s.name != TASKS_MCP_SERVER
    ]


def follow_fleet(pipeline: Pipeline, follower: FleetFollower) -> Callable[[], None]:
    """Report this session's provider errors to the operator and move its STT with the fleet; returns the undo."""
    undo: list[Callable[[], None]] = []
    for chain in pipeline.chains():
        for member in chain.members:

            def on_error(_ev: Any, name: str = member.config.name) -> None:
                follower.report_error(name)

            member.instance.on("error", on_error)
            undo.append(functools.partial(member.instance.off, "error", on_error))
    stt_model, llm_model = pipeline.stt.model, pipeline.llm.model

    def on_change(_generation: int, active: dict[str, str]) -> None:
        if isinstance(stt_model, SwitchingSTT) and (name := active.get("stt")) is not None:
            stt_model.switch(name)
        if isinstance(llm_model, SwitchingLLM) and (name := active.get("llm")) is not None:
            llm_model.switch(name)

    undo.append(follower.subscribe(on_change))

    def unfollow() -> None:
        for fn in undo:
            fn()

    return unfollow


async def run_session(ctx: JobContext, config: AgentConfig, *, vad: VAD) -> None:
    """Start the agent in the job's room; the session ends with the room or the job."""
    follower = process_follower(config.policy_name)
    pipeline = build_pipeline(config, vad=vad, active=follower.active if follower else None)
    unfollow = follow_fleet(pipeline, follower) if follower is not None else None
    tasks = tasks_client(config)
    session: AgentSession[Any] = AgentSession(
        stt=pipeline.stt.model,
        llm=pipeline.llm.model,
        tts=pipeline.tts.model,
        vad=vad,
        turn_handling=turn_handling(config),
    )
    recorder = SessionRecorder(default_metrics(), agent=config.agent_name, pipeline=pipeline)
    recorder.attach(session)
    recorder.session_started()

    async def on_shutdown() -> None:
        recorder.session_ended(session.usage.model_usage)
        if unfollow is not None:
            unfollow()
        if tasks is not None:
            await close_quietly(tasks)

    def on_close(_ev: CloseEvent) -> None:
        recorder.session_ended(session.usage.model_usage)
        # the caller left or the session failed: free the job process now rather than when the room empties
        ctx.shutdown(reason="agent session closed")

    ctx.add_shutdown_callback(on_shutdown)
    session.on("close", on_close)

    gate = ConfirmationGate()
    assistant = TaskAssistant(
        instructions=config.instructions,
        tasks=tasks,
        filler_after_ms=config.filler_after_ms,
        toolsets=other_toolsets(config, gate),
        confirmations=gate,
    )
    await session.start(agent=assistant, room=ctx.room)
    session.say(GREETING)
