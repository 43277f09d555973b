"""The contract between the operator and the agent: the rendered config file, env names, ports, metric names.

Defined once here and imported by both sides. This module imports only pydantic so the operator can use it
without pulling in LiveKit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

SCHEMA_VERSION = 1

# How a provider's baseUrl is used, by the agent's plugins and the operator's health probes alike.
DEEPGRAM_LISTEN_PATH = "/v1/listen"
# OpenAI-compatible servers named by baseUrl without a key (a self-hosted Whisper) still get a non-empty Bearer
# token: the OpenAI client refuses to start without one, and such servers expect the header.
PLACEHOLDER_API_KEY = "unused"


def deepgram_listen_url(base_url: str) -> str:
    """Deepgram's streaming endpoint under `base_url`: a bare origin gets /v1/listen, a full URL stays."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if not path.endswith("/listen"):
        path += DEEPGRAM_LISTEN_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


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
# Who is polling: the VoiceAgent the pod belongs to, and the file holding that VoiceAgent's fleet token (from a
# Secret the operator makes, mounted read-only; read at every poll, so a new token is picked up without a restart).
ENV_VOICEAGENT = "VOICEFLEET_VOICEAGENT"
ENV_FLEET_TOKEN_FILE = "VOICEFLEET_FLEET_TOKEN_FILE"
FLEET_TOKEN_DIR = "/etc/voicefleet-fleet"
FLEET_TOKEN_KEY = "token"
FLEET_VOICEAGENT_PARAM = "voiceagent"  # query parameter naming the VoiceAgent; the token goes in Authorization
FLEET_POD_PARAM = "pod"  # query parameter naming the agent pod: the operator tells which Ready pods never poll
# "1" on the poll a pod's worker process keeps open whether or not it runs a session: it shows the pod reaches the
# channel (condition FleetConnected) and counts neither in the rollout nor in the provider error fraction.
FLEET_PRESENCE_PARAM = "presence"

# Dev/test overrides of the ports below (a pod never sets them).
ENV_WORKER_PORT = "VOICEFLEET_WORKER_PORT"
ENV_METRICS_PORT = "VOICEFLEET_METRICS_PORT"
# Log every event-loop callback of a job process that uses this much CPU (voicefleet_agent.loopwatch).
ENV_LOOP_CPU_WARN_MS = "VOICEFLEET_LOOP_CPU_WARN_MS"

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
PHONE_CALLS = "voicefleet_agent_phone_calls_total"
# how an answered phone call ended (label `outcome` of PHONE_CALLS); refused calls never reach an agent, they are
# counted by livekit-sip (livekit_sip_calls_terminated_total, per livekit-sip instance, not per VoiceAgent)
PHONE_OUTCOMES = ("caller_hung_up", "dropped", "agent_ended", "error", "shutdown")

# The MCP server (by McpServerConfig.name) whose task tools the assistant offers with its own typed client.
TASKS_MCP_SERVER = "tasks"

# Each caller's own tasks: the agent signs a token per session naming the caller; the tasks MCP server verifies it
# with the same key (from this env var on both sides) and keys the task store by the token's subject.
ENV_TASKS_TOKEN_KEY = "VOICEFLEET_TASKS_TOKEN_KEY"
TASKS_TOKEN_AUDIENCE = "voicefleet-tasks"
TASKS_TOKEN_TTL_SECONDS = 6 * 3600  # longer than any call
# The LiveKit SIP participant attribute with the caller's number (the identity of a phone caller).
SIP_PHONE_NUMBER_ATTRIBUTE = "sip.phoneNumber"

# The browser channel's token service (voicefleet_browser): its own Deployment and Service per VoiceAgent, run from
# the agent image with this module. It mints LiveKit tokens for a fresh room with an explicit dispatch of the agent
# and serves the talk page at "/".
BROWSER_MODULE = "voicefleet_browser"
BROWSER_PORT = 8080
BROWSER_TOKEN_PATH = "/api/token"  # LiveKit's standard token endpoint shape: POST → {server_url, participant_token}
BROWSER_HEALTH_PATH = "/healthz"
ENV_BROWSER_PORT = "VOICEFLEET_BROWSER_PORT"  # dev/test override of BROWSER_PORT
ENV_BROWSER_ALLOWED_ORIGINS = "VOICEFLEET_BROWSER_ALLOWED_ORIGINS"  # comma-separated; the page's own always allowed
ENV_BROWSER_RATE_PER_MINUTE = "VOICEFLEET_BROWSER_RATE_PER_MINUTE"  # tokens per client address per minute
ENV_BROWSER_TOKEN_TTL_SECONDS = "VOICEFLEET_BROWSER_TOKEN_TTL_SECONDS"
ENV_BROWSER_SHARED_SECRET = "VOICEFLEET_BROWSER_SHARED_SECRET"  # optional; then requests need BROWSER_SECRET_HEADER
BROWSER_SECRET_HEADER = "X-Voicefleet-Key"
# LiveKit's URL as the browser reaches it (the agents' LIVEKIT_URL is often cluster-internal); default LIVEKIT_URL.
ENV_BROWSER_LIVEKIT_PUBLIC_URL = "VOICEFLEET_BROWSER_LIVEKIT_PUBLIC_URL"
# The identity prefix of browser participants (tasks are kept per identity: each page load is a new caller).
BROWSER_IDENTITY_PREFIX = "browser-"
# After a task tool ran, the agent sends the caller's task list as JSON ([{id, title, due, done, ...}]) on a text
# stream of this topic, so a page can show it (voicefleet_agent.tasklist); also once when the session starts.
TASKS_TOPIC = "voicefleet.tasks"
# While the caller shares a screen, the agent reads that video track and reports what it received as JSON
# ({frames, width, height, ended}) on a text stream of this topic (voicefleet_agent.screenshare).
SCREEN_TOPIC = "voicefleet.screen"
BROWSER_ROOM_PREFIX = "web-"

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
    # one Silero window (32 ms at 16 kHz): speech starts, and a barge-in pauses the agent, a window earlier than
    # with the framework's 50 ms, which takes two
    min_speech_duration_ms: int = 32


class McpServerConfig(_Model):
    name: str
    url: str


_OMITTED_WHEN_UNSET = (
    "max_sessions",
    "idle_processes",
    "min_endpointing_delay_ms",
    "max_endpointing_delay_ms",
    "min_interruption_ms",
    "false_interruption_timeout_ms",
)


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
    # None: the agent's barge-in defaults (voicefleet_agent.session), not the framework's 0.5 s / 2 s
    min_interruption_ms: int | None = Field(
        default=None, ge=0, description="Speech the caller must make before the agent's audio pauses."
    )
    false_interruption_timeout_ms: int | None = Field(
        default=None, ge=0, description="Silence after a pause with no words heard before the agent resumes."
    )
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


class CallerClaims(_Model):
    """What a tasks token says: whose tasks (``sub``), for which server, in which session, until when (Unix s)."""

    sub: str = Field(min_length=1)
    aud: str = TASKS_TOKEN_AUDIENCE
    sid: str = ""
    iat: int
    exp: int


MIN_TOKEN_KEY_LENGTH = 16


def tasks_token_key(environ: Mapping[str, str]) -> bytes | None:
    """The shared key from ``ENV_TASKS_TOKEN_KEY`` (None when unset); a short key is refused."""
    key = environ.get(ENV_TASKS_TOKEN_KEY, "")
    if not key:
        return None
    if len(key) < MIN_TOKEN_KEY_LENGTH:
        raise ValueError(f"{ENV_TASKS_TOKEN_KEY} must have at least {MIN_TOKEN_KEY_LENGTH} characters")
    return key.encode()


class TokenError(ValueError):
    """A tasks token that is malformed, forged, expired or meant for another audience."""


_TOKEN_VERSION = "v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode(), hashlib.sha256).digest()


def sign_caller_token(claims: CallerClaims, key: bytes) -> str:
    """``v1.<claims>.<HMAC-SHA256>``, base64url: short, and verifiable with nothing but the shared key."""
    signed = f"{_TOKEN_VERSION}.{_b64(claims.model_dump_json().encode())}"
    return f"{signed}.{_b64(_mac(key, signed))}"


def verify_caller_token(token: str, key: bytes, *, now: float) -> CallerClaims:
    """The claims of a token signed with ``key`` for the tasks server and not expired at ``now``."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _TOKEN_VERSION:
        raise TokenError("not a voicefleet tasks token")
    signed = f"{parts[0]}.{parts[1]}"
    try:
        signature, payload = _unb64(parts[2]), _unb64(parts[1])
    except ValueError as exc:
        raise TokenError("malformed token") from exc
    if not hmac.compare_digest(signature, _mac(key, signed)):
        raise TokenError("bad signature")
    try:
        claims = CallerClaims.model_validate_json(payload)
    except ValueError as exc:
        raise TokenError("malformed claims") from exc
    if claims.aud != TASKS_TOKEN_AUDIENCE:
        raise TokenError(f"token is for {claims.aud!r}")
    if claims.exp <= now:
        raise TokenError("token expired")
    return claims
