"""One voice session: pipeline, turn handling, tools and metrics wired into an AgentSession."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from livekit import rtc
from livekit.agents import AgentSession, CloseEvent, JobContext, inference, llm
from livekit.agents.inference import TurnDetectorVersions
from livekit.agents.llm.mcp import MCPToolset
from livekit.agents.vad import VAD
from livekit.agents.voice.room_io import AudioInputOptions, RoomOptions
from livekit.agents.voice.turn import EndpointingOptions, TurnDetectionMode, TurnHandlingOptions

from voicefleet_agent.assistant import TaskAssistant, transcript
from voicefleet_agent.bargein import EagerVAD
from voicefleet_agent.confirm import ConfirmationGate
from voicefleet_agent.contract import (
    ENV_TASKS_TOKEN_KEY,
    SIP_PHONE_NUMBER_ATTRIBUTE,
    TASKS_MCP_SERVER,
    TASKS_TOKEN_TTL_SECONDS,
    AgentConfig,
    CallerClaims,
    VadConfig,
    sign_caller_token,
)
from voicefleet_agent.fleet_client import FleetFollower, process_follower
from voicefleet_agent.guarded_mcp import GuardedMCPServer
from voicefleet_agent.metrics import SessionRecorder, default_metrics, phone_outcome
from voicefleet_agent.providers import Pipeline, build_pipeline
from voicefleet_agent.screenshare import ScreenShareWatcher
from voicefleet_agent.switching import Switching
from voicefleet_agent.tasklist import TaskListPublisher
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


# Barge-in: the agent's audio pauses as soon as the VAD has heard this much of the caller (the framework waits
# 0.5 s, which callers hear as the agent talking over them): one Silero window, the speech that starts speech at
# the config's default minimum, so the pause comes with the start of speech (bargein.EagerVAD). It resumes when no
# words come of it (a cough, a backchannel such as "uh-huh", which Deepgram drops as a filler word unless asked
# for) after this much silence.
# A pause costs nothing when it was a false alarm; a final transcript turns it into an interruption. The silence
# must outlast the STT final's delay (about 1 s here, seconds under load: at 1 s the agent resumed 3 of 5 real
# barge-ins before their words arrived), so it stays at the framework's 2 s.
MIN_INTERRUPTION_S = 0.032
FALSE_INTERRUPTION_TIMEOUT_S = 2.0
# The caller's audio reaches the VAD in frames of this length (the framework's 50 ms adds up to 50 ms to every
# barge-in and end of turn: the VAD sees nothing of a frame until it is whole).
INPUT_FRAME_MS = 20


def room_options(participant_identity: str) -> RoomOptions:
    """The session hears exactly the caller whose tasks it serves, in short frames."""
    return RoomOptions(
        participant_identity=participant_identity, audio_input=AudioInputOptions(frame_size_ms=INPUT_FRAME_MS)
    )


def turn_handling(config: AgentConfig, *, detection: TurnDetectionMode | None = None) -> TurnHandlingOptions:
    min_interruption = MIN_INTERRUPTION_S if config.min_interruption_ms is None else config.min_interruption_ms / 1000
    false_timeout = (
        FALSE_INTERRUPTION_TIMEOUT_S
        if config.false_interruption_timeout_ms is None
        else config.false_interruption_timeout_ms / 1000
    )
    options: TurnHandlingOptions = {
        "turn_detection": detection if detection is not None else turn_detection(config),
        # barge-in on voice activity; "adaptive" would call LiveKit's hosted inference, which pods cannot reach
        "interruption": {
            "enabled": True,
            "mode": "vad",
            "min_duration": min_interruption,
            "resume_false_interruption": True,
            "false_interruption_timeout": false_timeout,
        },
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


def agent_vad(config: VadConfig) -> VAD:
    """The session's VAD: Silero (bundled with livekit-local-inference, no download), its start of speech also
    reported as the inference that qualifies a barge-in."""
    return EagerVAD(inference.VAD(model="silero", **vad_options(config)))


def vad_options(vad: VadConfig) -> VadOptions:
    return {
        "activation_threshold": vad.activation_threshold,
        "min_silence_duration": vad.min_silence_duration_ms / 1000,
        "min_speech_duration": vad.min_speech_duration_ms / 1000,
    }


def caller_identity(kind: int, identity: str, attributes: Mapping[str, str]) -> str:
    """Whose tasks a session serves: a phone caller by number, anyone else by participant identity."""
    number = attributes.get(SIP_PHONE_NUMBER_ATTRIBUTE)
    if kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP and number:
        return f"phone:{number}"
    return f"participant:{identity}"


def caller_token(caller: str, key: bytes, *, session_id: str, now: float) -> str:
    """The session's token for the tasks server, naming ``caller``."""
    issued = int(now)
    claims = CallerClaims(sub=caller, sid=session_id, iat=issued, exp=issued + TASKS_TOKEN_TTL_SECONDS)
    return sign_caller_token(claims, key)


def tasks_client(config: AgentConfig, *, token: str | None = None) -> TasksClient | None:
    for server in config.mcp_servers:
        if server.name == TASKS_MCP_SERVER:
            return TasksClient(server.url, token=token)
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
    """Report this session's provider errors to the operator and move every switching modality with the fleet;
    returns the undo."""
    undo: list[Callable[[], None]] = []
    for chain in pipeline.chains():
        for member in chain.members:

            def on_error(_ev: Any, name: str = member.config.name) -> None:
                follower.report_error(name)

            member.instance.on("error", on_error)
            undo.append(functools.partial(member.instance.off, "error", on_error))
    switching = [(chain.modality, chain.model) for chain in pipeline.chains() if isinstance(chain.model, Switching)]

    def on_change(_generation: int, active: dict[str, str]) -> None:
        for modality, model in switching:
            if (name := active.get(modality)) is not None:
                model.switch(name)

    undo.append(follower.subscribe(on_change))

    def unfollow() -> None:
        for fn in undo:
            fn()

    return unfollow


async def run_session(ctx: JobContext, config: AgentConfig, *, vad: VAD, token_key: bytes | None) -> None:
    """Start the agent in the job's room for its caller; the session ends with the room or the job."""
    participant = await ctx.wait_for_participant()
    caller = caller_identity(participant.kind, participant.identity, participant.attributes)
    if token_key is None:
        log.error("%s is not set: the task service will refuse this session's calls", ENV_TASKS_TOKEN_KEY)
    token = caller_token(caller, token_key, session_id=ctx.room.name, now=time.time()) if token_key else None
    follower = process_follower(config.policy_name)
    pipeline = build_pipeline(config, vad=vad, active=follower.active if follower else None)
    # the session's setup in several loop steps, not one of 20+ ms of CPU: the loop (audio) runs between them
    await asyncio.sleep(0)
    unfollow = follow_fleet(pipeline, follower) if follower is not None else None
    tasks = tasks_client(config, token=token)
    await asyncio.sleep(0)
    session: AgentSession[Any] = AgentSession(
        stt=pipeline.stt.model,
        llm=pipeline.llm.model,
        tts=pipeline.tts.model,
        vad=vad,
        turn_handling=turn_handling(config),
    )
    await asyncio.sleep(0)
    recorder = SessionRecorder(default_metrics(), agent=config.agent_name, pipeline=pipeline)
    recorder.attach(session)
    recorder.session_started()

    phone = participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP

    async def on_shutdown() -> None:
        if phone:
            recorder.phone_call_ended(phone_outcome(None, participant.disconnect_reason))
        recorder.session_ended(session.usage.model_usage)
        if unfollow is not None:
            unfollow()
        if tasks is not None:
            await close_quietly(tasks)

    def on_close(ev: CloseEvent) -> None:
        if phone:
            recorder.phone_call_ended(phone_outcome(ev.reason.value, participant.disconnect_reason))
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
    await session.start(agent=assistant, room=ctx.room, room_options=room_options(participant.identity))
    session.say(GREETING)
    if tasks is not None and not phone:  # a page can show the list; a phone cannot
        publisher = TaskListPublisher(ctx.room.local_participant, tasks)
        session.on("function_tools_executed", publisher.on_tools_executed)
        session.on("agent_state_changed", publisher.on_agent_state)
        ctx.add_shutdown_callback(publisher.aclose)
        publisher.publish()
    if not phone:  # the talk page can share a screen: the agent receives it (what it makes of it comes later)
        screen = ScreenShareWatcher(ctx.room, participant.identity, ctx.room.local_participant)
        screen.start()
        ctx.add_shutdown_callback(screen.aclose)
