"""Prometheus metrics of voice sessions, correct across the worker's job processes.

Sessions run in separate job processes, so every metric is recorded in prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set before start) and the worker's ``/metrics`` endpoint sums the files. The active
sessions gauge uses ``livesum`` so a finished process stops counting; ``reap_dead_processes`` removes the live
gauge files of job processes that died without decrementing it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit.agents import (
    AgentSession,
    ChatMessage,
    ConversationItemAddedEvent,
    FunctionToolsExecutedEvent,
    SessionUsageUpdatedEvent,
)
from livekit.agents.llm import LLM
from livekit.agents.metrics import LLMMetrics, LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.metrics.usage import ModelUsage
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import mark_process_dead

from voicefleet_agent import contract
from voicefleet_agent.contract import AgentConfig, Modality, Pricing, ProviderConfig
from voicefleet_agent.providers import Pipeline

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
STAGE_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)

RECENT_LLM_REQUESTS = 16
CALL_AFTER_STREAM_SLACK_S = 0.25  # the framework turns a streamed tool call into a call item just after the stream
# the stage label's values; ``llm_tool_calls`` and ``tool`` are observed once per batch of tool calls
STAGES = ("stt", "llm", "tts", "llm_tool_calls", "tool")
# ChatMessage.metrics key → pipeline stage it measures
_USER_STAGES = {"transcription_delay": "stt"}
_ASSISTANT_STAGES = {"llm_node_ttft": "llm", "tts_node_ttfb": "tts"}


class Metrics:
    """The agent's metric families (one set per process; a fresh registry per test)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.active_sessions = Gauge(
            contract.ACTIVE_SESSIONS,
            "Voice sessions in progress.",
            ["agent"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.sessions = Counter(contract.SESSIONS_TOTAL, "Voice sessions started.", ["agent"], registry=registry)
        self.turn_latency = Histogram(
            contract.TURN_LATENCY,
            "From the end of the user's speech to the agent's first audio (voice-to-voice).",
            ["agent"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage_latency = Histogram(
            contract.STAGE_LATENCY,
            "Per-turn latency of one pipeline stage: stt (transcription delay), llm (TTFT), tts (TTFB), "
            "llm_tool_calls (the LLM requests that ended in tool calls, whole), tool (a call's run).",
            ["agent", "stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.end_of_turn_delay = Histogram(
            contract.END_OF_TURN_DELAY,
            "From the end of the user's speech to the decision that their turn is over.",
            ["agent"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.interruptions = Counter(
            contract.INTERRUPTIONS, "Agent replies the user interrupted (barge-in).", ["agent"], registry=registry
        )
        self.provider_errors = Counter(
            contract.PROVIDER_ERRORS,
            "Errors reported by a provider, retried or not.",
            ["agent", "modality", "provider"],
            registry=registry,
        )
        self.session_minutes = Counter(
            contract.SESSION_MINUTES, "Minutes of finished voice sessions.", ["agent"], registry=registry
        )
        self.phone_calls = Counter(
            contract.PHONE_CALLS,
            "Phone calls (SIP) an agent answered, by how they ended: " + ", ".join(contract.PHONE_OUTCOMES) + ".",
            ["agent", "outcome"],
            registry=registry,
        )
        self.cost = Counter(
            contract.COST_USD,
            "Provider cost in USD, from usage and the configured pricing.",
            ["agent", "modality", "provider"],
            registry=registry,
        )

    def touch(self, config: AgentConfig) -> None:
        """Create every series of this agent at zero, so dashboards and the HPA see them before the first call."""
        agent = config.agent_name
        self.active_sessions.labels(agent=agent).inc(0)
        for family in (self.sessions, self.turn_latency, self.end_of_turn_delay, self.interruptions):
            family.labels(agent=agent)
        self.session_minutes.labels(agent=agent)
        for outcome in contract.PHONE_OUTCOMES:
            self.phone_calls.labels(agent=agent, outcome=outcome)
        for stage in STAGES:
            self.stage_latency.labels(agent=agent, stage=stage)
        for modality, chain in (("stt", config.stt), ("llm", config.llm), ("tts", config.tts)):
            for p in chain:
                self.provider_errors.labels(agent=agent, modality=modality, provider=p.name)
                self.cost.labels(agent=agent, modality=modality, provider=p.name)


_default: Metrics | None = None


def default_metrics() -> Metrics:
    """The process-wide metrics, created on first use (after PROMETHEUS_MULTIPROC_DIR is in place)."""
    global _default
    if _default is None:
        _default = Metrics()
    return _default


def usage_cost(usage: ModelUsage, pricing: Pricing) -> float:
    """USD for one model's cumulative usage under ``pricing``."""
    per_token = (
        getattr(usage, "input_tokens", 0) / 1000 * pricing.usd_per_1k_input_tokens
        + getattr(usage, "output_tokens", 0) / 1000 * pricing.usd_per_1k_output_tokens
    )
    if isinstance(usage, STTModelUsage):
        return usage.audio_duration / 60 * pricing.usd_per_minute + per_token
    if isinstance(usage, TTSModelUsage):
        return (
            usage.audio_duration / 60 * pricing.usd_per_minute
            + usage.characters_count / 1000 * pricing.usd_per_1k_characters
            + per_token
        )
    if isinstance(usage, LLMModelUsage):
        return per_token
    return 0.0


_USAGE_MODALITY: dict[type, Modality] = {STTModelUsage: "stt", LLMModelUsage: "llm", TTSModelUsage: "tts"}
ConfigLookup = Callable[[Modality, str, str], ProviderConfig | None]


def pipeline_lookup(pipeline: Pipeline) -> ConfigLookup:
    chains = {chain.modality: chain for chain in pipeline.chains()}
    return lambda modality, provider, model: chains[modality].config_for(provider, model)


@dataclass
class CostTracker:
    """Turns cumulative session usage into per-provider cost increments."""

    lookup: ConfigLookup
    totals: dict[tuple[Modality, str], float] = field(default_factory=dict)

    def update(self, usages: Iterable[ModelUsage]) -> dict[tuple[Modality, str], float]:
        """The cost added since the previous update, keyed by (modality, configured provider name)."""
        current: dict[tuple[Modality, str], float] = {}
        for usage in usages:
            modality = _USAGE_MODALITY.get(type(usage))
            if modality is None:
                continue
            config = self.lookup(modality, usage.provider, usage.model)
            if config is None:
                log.debug("no configured provider for %s usage of %s/%s", modality, usage.provider, usage.model)
                continue
            key = (modality, config.name)
            current[key] = current.get(key, 0.0) + usage_cost(usage, config.pricing)
        deltas = {}
        for key, total in current.items():
            delta = total - self.totals.get(key, 0.0)
            if delta > 0:
                deltas[key] = delta
                self.totals[key] = total
        return deltas


# what a phone caller's participant leaving means, by its DisconnectReason (livekit.rtc): hung up, or lost
_HANG_UPS = frozenset({1})  # CLIENT_INITIATED: livekit-sip removes the participant on the caller's BYE


def phone_outcome(close_reason: str | None, disconnect_reason: int | None) -> str:
    """How an answered phone call ended (one of ``contract.PHONE_OUTCOMES``), from the session's close reason
    (``CloseReason`` value; None when the job shut down without a close event) and the caller participant's
    ``DisconnectReason``."""
    if close_reason == "participant_disconnected":
        return "caller_hung_up" if disconnect_reason in _HANG_UPS else "dropped"
    if close_reason in ("user_initiated", "task_completed"):
        return "agent_ended"
    if close_reason == "error":
        return "error"
    return "shutdown"


class SessionRecorder:
    """Feeds one AgentSession's events into the metrics."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        agent: str,
        pipeline: Pipeline | None = None,
        lookup: ConfigLookup | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._m = metrics
        self._agent = agent
        self._clock = clock
        self._started_at: float | None = None
        self._closed = False
        self._phone_ended = False
        if lookup is None and pipeline is not None:
            lookup = pipeline_lookup(pipeline)
        self._costs = CostTracker(lookup or (lambda *_: None))
        # (start, end) wall-clock times of the session's latest LLM requests, to find those that made tool calls
        self._llm_requests: deque[tuple[float, float]] = deque(maxlen=RECENT_LLM_REQUESTS)
        if pipeline is not None:
            for chain in pipeline.chains():
                for member in chain.members:
                    member.instance.on("error", self._error_counter(chain.modality, member.config.name))

    def _error_counter(self, modality: Modality, provider: str) -> Callable[[Any], None]:
        counter = self._m.provider_errors.labels(agent=self._agent, modality=modality, provider=provider)
        return lambda _ev: counter.inc()

    def attach(self, session: AgentSession[Any]) -> None:
        session.on("conversation_item_added", self._on_item_added)
        session.on("session_usage_updated", self._on_usage)
        session.on("function_tools_executed", self._on_tools_executed)
        if isinstance(session.llm, LLM):  # the switching LLM forwards each member's request metrics
            session.llm.on("metrics_collected", self._on_llm_request)

    def _on_llm_request(self, metrics: Any) -> None:
        if isinstance(metrics, LLMMetrics) and not metrics.cancelled:
            self._llm_requests.append((metrics.timestamp - metrics.duration, metrics.timestamp))

    def _on_tools_executed(self, ev: FunctionToolsExecutedEvent) -> None:
        """Stage ``tool``: from the LLM emitting a call to its output (the tool's run: for the tasks tools the
        MCP round trip). Stage ``llm_tool_calls``: the LLM requests that led to these calls, start to end of their
        streams (provider time; the answer's request counts only to its first token, as stage ``llm``). So a tool
        turn's time splits into providers, tools and the pipeline's own."""
        stage = self._m.stage_latency.labels(agent=self._agent, stage="tool")
        for call, output in zip(ev.function_calls, ev.function_call_outputs, strict=False):
            stage.observe(max(0.0, output.created_at - call.created_at))
        # a call is made while its request streams (or just after its last chunk): matched by time, not by order,
        # since a preemptive request may start, and end, before the user's turn is committed
        made = [
            (start, end)
            for start, end in self._llm_requests
            if any(start <= call.created_at <= end + CALL_AFTER_STREAM_SLACK_S for call in ev.function_calls)
        ]
        if made:
            requests = self._m.stage_latency.labels(agent=self._agent, stage="llm_tool_calls")
            requests.observe(sum(end - start for start, end in made))
            for request in made:
                self._llm_requests.remove(request)

    def _on_item_added(self, ev: ConversationItemAddedEvent) -> None:
        if isinstance(ev.item, ChatMessage):
            self.record_message(ev.item)

    def _on_usage(self, ev: SessionUsageUpdatedEvent) -> None:
        self.record_usage(ev.usage.model_usage)

    def session_started(self) -> None:
        self._started_at = self._clock()
        self._m.sessions.labels(agent=self._agent).inc()
        self._m.active_sessions.labels(agent=self._agent).inc()

    def session_ended(self, usages: Iterable[ModelUsage] = ()) -> None:
        """Idempotent: the last usage, the session's minutes, and one fewer active session."""
        if self._closed or self._started_at is None:
            return
        self._closed = True
        self.record_usage(usages)
        self._m.session_minutes.labels(agent=self._agent).inc((self._clock() - self._started_at) / 60)
        self._m.active_sessions.labels(agent=self._agent).dec()

    def phone_call_ended(self, outcome: str) -> None:
        """Idempotent: count the answered phone call once, by the first outcome known."""
        if self._phone_ended or self._started_at is None:
            return
        self._phone_ended = True
        self._m.phone_calls.labels(agent=self._agent, outcome=outcome).inc()

    def record_message(self, msg: ChatMessage) -> None:
        metrics = msg.metrics
        if msg.role == "user":
            if (eot := metrics.get("end_of_turn_delay")) is not None:
                self._m.end_of_turn_delay.labels(agent=self._agent).observe(eot)
            stages = _USER_STAGES
        elif msg.role == "assistant":
            if msg.interrupted:
                self._m.interruptions.labels(agent=self._agent).inc()
            if (e2e := metrics.get("e2e_latency")) is not None:
                self._m.turn_latency.labels(agent=self._agent).observe(e2e)
            stages = _ASSISTANT_STAGES
        else:
            return
        for key, stage in stages.items():
            value = metrics.get(key)
            if isinstance(value, int | float) and value >= 0:
                self._m.stage_latency.labels(agent=self._agent, stage=stage).observe(value)

    def record_usage(self, usages: Iterable[ModelUsage]) -> None:
        for (modality, provider), delta in self._costs.update(usages).items():
            self._m.cost.labels(agent=self._agent, modality=modality, provider=provider).inc(delta)


def reap_dead_processes(
    directory: str | Path | None = None, *, alive: Callable[[int], bool] | None = None
) -> list[int]:
    """Drop the live-gauge files of processes that no longer exist; returns their pids."""
    path = Path(directory or os.environ.get(contract.ENV_PROMETHEUS_MULTIPROC_DIR, ""))
    if not path.name or not path.is_dir():
        return []
    is_alive = alive or _pid_alive
    dead = set()
    for f in path.glob("gauge_live*_*.db"):
        pid_text = f.stem.rsplit("_", 1)[-1]
        if pid_text.isdigit() and not is_alive(int(pid_text)):
            dead.add(int(pid_text))
    for pid in dead:
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]
    return sorted(dead)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
