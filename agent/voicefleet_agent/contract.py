"""The contract between the operator and the agent: the rendered config file, env names, ports, metric names.

Defined once here and imported by both sides. This module imports only pydantic so the operator can use it
without pulling in LiveKit.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

SCHEMA_VERSION = 1

# Environment of an agent pod.
ENV_CONFIG_PATH = "VOICEFLEET_CONFIG"
ENV_LIVEKIT_URL = "LIVEKIT_URL"
ENV_LIVEKIT_API_KEY = "LIVEKIT_API_KEY"
ENV_LIVEKIT_API_SECRET = "LIVEKIT_API_SECRET"
ENV_AGENT_NAME = "LIVEKIT_AGENT_NAME"
ENV_PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
ENV_PRELOAD_LOCAL_INFERENCE = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"
ENV_POD_NAME = "VOICEFLEET_POD_NAME"
ENV_POD_NAMESPACE = "VOICEFLEET_POD_NAMESPACE"
# Where the agent long-polls the operator for the providers in use (set when the agent follows a ProviderPolicy).
ENV_FLEET_URL = "VOICEFLEET_FLEET_URL"
FLEET_PATH = "/v1/fleet"

# Dev/test overrides of the ports below (a pod never sets them).
ENV_WORKER_PORT = "VOICEFLEET_WORKER_PORT"
ENV_METRICS_PORT = "VOICEFLEET_METRICS_PORT"

# Attempts to reach LiveKit before the worker gives up (exit status EXIT_GAVE_UP); livekit-agents' default is 16.
ENV_LIVEKIT_MAX_RETRY = "VOICEFLEET_LIVEKIT_MAX_RETRY"
EXIT_GAVE_UP = 3

# Health endpoints on the worker port: readiness means registered with LiveKit; liveness that the worker's event
# loop answers.
READINESS_PATH = "/"
LIVENESS_PATH = "/worker"

# Where the operator mounts the rendered config inside the pod.
CONFIG_DIR = "/etc/voicefleet"
CONFIG_FILE = "agent.json"

# Ports of an agent pod.
WORKER_PORT = 8081
METRICS_PORT = 9464

# Metrics exported by the agent (the HPA scales on ACTIVE_SESSIONS).
ACTIVE_SESSIONS = "voicefleet_agent_active_sessions"
TURN_LATENCY = "voicefleet_agent_voice_to_voice_seconds"
STAGE_LATENCY = "voicefleet_agent_stage_latency_seconds"
END_OF_TURN_DELAY = "voicefleet_agent_end_of_turn_delay_seconds"
INTERRUPTIONS = "voicefleet_agent_interruptions_total"
PROVIDER_ERRORS = "voicefleet_agent_provider_errors_total"
SESSION_MINUTES = "voicefleet_agent_session_minutes_total"
COST_USD = "voicefleet_agent_cost_usd_total"
SESSIONS_TOTAL = "voicefleet_agent_sessions_total"

# The MCP server (by McpServerConfig.name) whose task tools the agent wraps with spoken confirmation.
TASKS_MCP_SERVER = "tasks"

Modality = Literal["stt", "llm", "tts"]
ProviderKind = Literal["deepgram", "whisper", "openai", "cartesia"]
TurnDetectionMode = Literal["semantic", "vad", "stt"]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Pricing(_Model):
    """USD prices used to compute cost per call; per audio minute for STT/TTS, per 1k tokens for LLMs."""

    usd_per_minute: float = 0.0
    usd_per_1k_input_tokens: float = 0.0
    usd_per_1k_output_tokens: float = 0.0
    usd_per_1k_characters: float = 0.0


# List prices (November 2026) used when a provider sets no pricing of its own.
DEFAULT_PRICING: dict[str, Pricing] = {
    "deepgram": Pricing(usd_per_minute=0.0077),
    "cartesia": Pricing(usd_per_minute=0.024),
    "openai": Pricing(usd_per_1k_input_tokens=0.00015, usd_per_1k_output_tokens=0.0006),
    "whisper": Pricing(),
}


class ProviderConfig(_Model):
    """One provider in a modality's ordered chain, as the agent runs it."""

    name: str
    provider: ProviderKind
    model: str
    base_url: str | None = None
    api_key_env: str | None = Field(default=None, description="Name of the env var holding the API key.")
    options: dict[str, str] = Field(default_factory=dict)
    pricing: Pricing = Field(default_factory=Pricing)


class VadConfig(_Model):
    activation_threshold: float = 0.5
    min_silence_duration_ms: int = 550
    min_speech_duration_ms: int = 50


class McpServerConfig(_Model):
    name: str
    url: str


_OMITTED_WHEN_UNSET = ("max_sessions", "idle_processes", "min_endpointing_delay_ms", "max_endpointing_delay_ms")


class AgentConfig(_Model):
    """The file the operator renders into each VoiceAgent's ConfigMap and the agent reads at start."""

    schema_version: int = SCHEMA_VERSION
    agent_name: str
    stt: tuple[ProviderConfig, ...]
    llm: tuple[ProviderConfig, ...]
    tts: tuple[ProviderConfig, ...]
    vad: VadConfig = Field(default_factory=VadConfig)
    turn_detection: TurnDetectionMode = "semantic"
    # None: the framework's defaults (0.3 s / 2.5 s with semantic turn detection, 0.5 s / 3 s otherwise)
    min_endpointing_delay_ms: int | None = Field(default=None, ge=0)
    max_endpointing_delay_ms: int | None = Field(default=None, ge=0)
    instructions: str
    mcp_servers: tuple[McpServerConfig, ...] = ()
    filler_after_ms: int = 700
    drain_timeout_seconds: int = 600
    max_sessions: int | None = Field(
        default=None, ge=1, description="Sessions per pod before it reports full; None: LiveKit's CPU-based load."
    )
    idle_processes: int | None = Field(
        default=None, ge=0, description="Warm job processes kept ready; None: LiveKit's default (one per CPU)."
    )
    policy_name: str | None = None
    policy_generation: int | None = None

    def to_json(self) -> str:
        data = self.model_dump(mode="json", by_alias=True)
        # unset tuning knobs stay out of the file: configs rendered before they existed keep their bytes (and hash,
        # so an operator upgrade does not roll every agent)
        for name in _OMITTED_WHEN_UNSET:
            alias = to_camel(name)
            if data.get(alias) is None:
                data.pop(alias, None)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> AgentConfig:
        return cls.model_validate_json(text)
