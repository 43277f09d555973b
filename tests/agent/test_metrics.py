"""metrics.py: cost from usage and pricing, per-turn figures, and correctness across job processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from agent_testkit import ScriptedLLM, call, make_config, provider, say
from livekit.agents import Agent, AgentSession, ChatMessage, function_tool
from livekit.agents.metrics import LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.stt import STTError
from livekit.agents.vad import VAD
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from voicefleet_agent import contract
from voicefleet_agent.contract import DEFAULT_PRICING, Pricing
from voicefleet_agent.metrics import (
    CostTracker,
    Metrics,
    SessionRecorder,
    phone_outcome,
    reap_dead_processes,
    usage_cost,
)
from voicefleet_agent.providers import build_pipeline

AGENT = "task-manager"
DEEPGRAM = provider("deepgram", "deepgram", "nova-3", pricing=DEFAULT_PRICING["deepgram"])
OPENAI = provider("openai", "openai", "gpt-4o-mini", base_url="http://llm:1/v1", pricing=DEFAULT_PRICING["openai"])
CARTESIA = provider("cartesia", "cartesia", "sonic-3", pricing=Pricing(usd_per_minute=0.024, usd_per_1k_characters=0.5))


def lookup(modality: str, provider_label: str, model: str) -> Any:
    return {("stt", "Deepgram"): DEEPGRAM, ("llm", "llm:1"): OPENAI, ("tts", "Cartesia"): CARTESIA}.get(
        (modality, provider_label)
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, {"agent": AGENT, **labels})
    return 0.0 if value is None else value


def test_usage_cost_per_kind() -> None:
    stt = STTModelUsage(provider="Deepgram", model="nova-3", audio_duration=120)
    llm = LLMModelUsage(provider="api.openai.com", model="gpt-4o-mini", input_tokens=10_000, output_tokens=2_000)
    tts = TTSModelUsage(provider="Cartesia", model="sonic-3", audio_duration=30, characters_count=400)

    assert usage_cost(stt, DEFAULT_PRICING["deepgram"]) == pytest.approx(2 * 0.0077)
    assert usage_cost(llm, DEFAULT_PRICING["openai"]) == pytest.approx(10 * 0.00015 + 2 * 0.0006)
    assert usage_cost(tts, CARTESIA.pricing) == pytest.approx(0.5 * 0.024 + 0.4 * 0.5)
    assert usage_cost(stt, Pricing()) == 0.0


def test_cost_tracker_turns_cumulative_usage_into_increments() -> None:
    tracker = CostTracker(lookup)
    first = tracker.update(
        [
            STTModelUsage(provider="Deepgram", model="nova-3", audio_duration=60),
            LLMModelUsage(provider="llm:1", model="gpt-4o-mini", input_tokens=1000, output_tokens=1000),
            LLMModelUsage(provider="elsewhere", model="gpt-4o", input_tokens=10**6),  # not configured: no cost
        ]
    )
    second = tracker.update(
        [
            STTModelUsage(provider="Deepgram", model="nova-3", audio_duration=180),
            LLMModelUsage(provider="llm:1", model="gpt-4o-mini", input_tokens=1000, output_tokens=1000),
        ]
    )

    assert first == pytest.approx({("stt", "deepgram"): 0.0077, ("llm", "openai"): 0.00075})
    assert second == pytest.approx({("stt", "deepgram"): 2 * 0.0077})  # unchanged LLM usage adds nothing


def test_recorder_per_turn_figures_and_session_lifecycle() -> None:
    registry = CollectorRegistry()
    now = [1000.0]
    recorder = SessionRecorder(Metrics(registry), agent=AGENT, lookup=lookup, clock=lambda: now[0])

    recorder.session_started()
    assert sample(registry, contract.ACTIVE_SESSIONS) == 1
    recorder.record_message(
        ChatMessage(role="user", content=["add milk"], metrics={"end_of_turn_delay": 0.4, "transcription_delay": 0.2})
    )
    recorder.record_message(
        ChatMessage(
            role="assistant",
            content=["Added."],
            interrupted=True,
            metrics={"e2e_latency": 0.75, "llm_node_ttft": 0.3, "tts_node_ttfb": 0.15},
        )
    )
    now[0] += 90
    recorder.session_ended([TTSModelUsage(provider="Cartesia", model="sonic-3", audio_duration=60)])
    recorder.session_ended([TTSModelUsage(provider="Cartesia", model="sonic-3", audio_duration=600)])  # idempotent

    assert sample(registry, contract.ACTIVE_SESSIONS) == 0
    assert sample(registry, f"{contract.SESSIONS_TOTAL}") == 1
    assert sample(registry, f"{contract.TURN_LATENCY}_sum") == pytest.approx(0.75)
    assert sample(registry, f"{contract.TURN_LATENCY}_bucket", le="0.8") == 1
    assert sample(registry, f"{contract.TURN_LATENCY}_bucket", le="0.7") == 0
    assert sample(registry, f"{contract.END_OF_TURN_DELAY}_sum") == pytest.approx(0.4)
    for stage, value in (("stt", 0.2), ("llm", 0.3), ("tts", 0.15)):
        assert sample(registry, f"{contract.STAGE_LATENCY}_sum", stage=stage) == pytest.approx(value)
    assert sample(registry, contract.INTERRUPTIONS) == 1
    assert sample(registry, contract.SESSION_MINUTES) == pytest.approx(1.5)
    assert sample(registry, contract.COST_USD, modality="tts", provider="cartesia") == pytest.approx(0.024)


@pytest.mark.parametrize(
    ("close_reason", "disconnect_reason", "outcome"),
    [
        ("participant_disconnected", 1, "caller_hung_up"),  # CLIENT_INITIATED: the caller's BYE
        ("participant_disconnected", 13, "dropped"),  # SIP_TRUNK_FAILURE
        ("participant_disconnected", 14, "dropped"),  # CONNECTION_TIMEOUT
        ("participant_disconnected", None, "dropped"),
        ("user_initiated", None, "agent_ended"),
        ("task_completed", 1, "agent_ended"),
        ("error", None, "error"),
        ("job_shutdown", None, "shutdown"),
        (None, None, "shutdown"),  # the job ended without a close event
    ],
)
def test_phone_outcome_from_close_and_disconnect_reasons(
    close_reason: str | None, disconnect_reason: int | None, outcome: str
) -> None:
    assert phone_outcome(close_reason, disconnect_reason) == outcome
    assert outcome in contract.PHONE_OUTCOMES


def test_a_phone_call_is_counted_once_by_its_first_known_outcome() -> None:
    registry = CollectorRegistry()
    recorder = SessionRecorder(Metrics(registry), agent=AGENT)
    recorder.phone_call_ended("caller_hung_up")  # before the session started: not a call that was answered
    assert sample(registry, contract.PHONE_CALLS, outcome="caller_hung_up") == 0
    recorder.session_started()
    recorder.phone_call_ended("caller_hung_up")
    recorder.phone_call_ended("shutdown")  # the job's shutdown after the close event
    assert sample(registry, contract.PHONE_CALLS, outcome="caller_hung_up") == 1
    assert sample(registry, contract.PHONE_CALLS, outcome="shutdown") == 0


def test_provider_errors_are_counted_by_configured_name(vad: VAD, provider_keys: dict[str, str]) -> None:
    registry = CollectorRegistry()
    config = make_config(stt=(provider("primary", "deepgram", "nova-3"), provider("backup", "whisper", "whisper-1")))
    pipeline = build_pipeline(config, vad=vad)
    SessionRecorder(Metrics(registry), agent=AGENT, pipeline=pipeline)

    backup = pipeline.stt.members[1].instance
    for _ in range(2):
        backup.emit("error", STTError(timestamp=0, label=backup.label, error=RuntimeError("503"), recoverable=True))

    assert sample(registry, contract.PROVIDER_ERRORS, modality="stt", provider="backup") == 2
    assert sample(registry, contract.PROVIDER_ERRORS, modality="stt", provider="primary") == 0


async def test_recorder_follows_a_live_session() -> None:
    registry = CollectorRegistry()
    recorder = SessionRecorder(Metrics(registry), agent=AGENT)
    async with AgentSession[Any](llm=ScriptedLLM(say("Hello."), say("Bye.")), vad=None) as session:
        recorder.attach(session)
        await session.start(Agent(instructions="Be brief."))
        await session.run(user_input="hi")
        await session.run(user_input="bye")

    # every assistant reply of a text session carries its LLM time to first token
    assert sample(registry, f"{contract.STAGE_LATENCY}_count", stage="llm") == 2
    # and no request led to a tool call
    assert sample(registry, f"{contract.STAGE_LATENCY}_count", stage="llm_tool_calls") == 0


TOOL_RUN_S = 0.08


class _SlowTool(Agent):
    @function_tool
    async def lookup(self) -> str:
        """Look something up."""
        await asyncio.sleep(TOOL_RUN_S)  # the tool's own work, e.g. an MCP round trip
        return "found"


CALL_REQUEST_S = 0.05
ANSWER_REQUEST_S = 0.3


async def test_a_tool_call_and_the_request_that_made_it_are_timed_as_their_own_stages() -> None:
    registry = CollectorRegistry()
    recorder = SessionRecorder(Metrics(registry), agent=AGENT)
    replies = (replace(call("lookup"), delay=CALL_REQUEST_S), replace(say("Found it."), delay=ANSWER_REQUEST_S))
    async with AgentSession[Any](llm=ScriptedLLM(*replies), vad=None) as session:
        recorder.attach(session)
        await session.start(_SlowTool(instructions="Be brief."))
        await session.run(user_input="look it up")

    assert sample(registry, f"{contract.STAGE_LATENCY}_count", stage="tool") == 1
    assert TOOL_RUN_S <= sample(registry, f"{contract.STAGE_LATENCY}_sum", stage="tool") < 5
    # the request that asked for the tool, whole; the answer's request is not in it (its TTFT is stage llm)
    assert sample(registry, f"{contract.STAGE_LATENCY}_count", stage="llm_tool_calls") == 1
    assert (
        CALL_REQUEST_S <= sample(registry, f"{contract.STAGE_LATENCY}_sum", stage="llm_tool_calls") < ANSWER_REQUEST_S
    )
    assert sample(registry, f"{contract.STAGE_LATENCY}_sum", stage="llm") >= ANSWER_REQUEST_S


CHILD = textwrap.dedent(
    """
    import sys
    from livekit.agents.metrics import STTModelUsage
    from voicefleet_agent.contract import Pricing, ProviderConfig
    from voicefleet_agent.metrics import Metrics, SessionRecorder

    deepgram = ProviderConfig(name="deepgram", provider="deepgram", model="nova-3", pricing=Pricing(usd_per_minute=1))
    recorder = SessionRecorder(Metrics(), agent="task-manager", lookup=lambda m, p, n: deepgram if m == "stt" else None)
    recorder.session_started()
    recorder.record_usage([STTModelUsage(provider="Deepgram", model="nova-3", audio_duration=60)])
    mode = sys.argv[1]
    if mode == "ends":
        recorder.session_ended()
    elif mode == "stays":
        print("ready", flush=True)
        sys.stdin.readline()
        recorder.session_ended()
    # "crashes": exits without ending the session
    """
)


def collect(directory: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry


def test_metrics_add_up_across_job_processes(tmp_path: Path) -> None:
    env = {**os.environ, contract.ENV_PROMETHEUS_MULTIPROC_DIR: str(tmp_path)}

    def child(mode: str, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", CHILD, mode], env=env, text=True, **kwargs)

    stays = child("stays", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        finished = [child("ends"), child("crashes")]
        assert [p.wait(timeout=180) for p in finished] == [0, 0]  # importing livekit: slow on a loaded machine
        assert stays.stdout is not None and stays.stdout.readline() == "ready\n"

        before_reap = collect(tmp_path)
        assert sample(before_reap, contract.COST_USD, modality="stt", provider="deepgram") == pytest.approx(3.0)
        assert sample(before_reap, f"{contract.SESSIONS_TOTAL}") == 3
        assert sample(before_reap, contract.ACTIVE_SESSIONS) == 2  # the crashed process still counts

        assert reap_dead_processes(tmp_path) == sorted(p.pid for p in finished)
        assert sample(collect(tmp_path), contract.ACTIVE_SESSIONS) == 1  # only the live session

        assert stays.stdin is not None
        stays.stdin.write("\n")
        stays.stdin.close()
        assert stays.wait(timeout=180) == 0
    finally:
        stays.kill()
    reap_dead_processes(tmp_path)
    after = collect(tmp_path)
    assert sample(after, contract.ACTIVE_SESSIONS) == 0
    assert sample(after, contract.COST_USD, modality="stt", provider="deepgram") == pytest.approx(3.0)
