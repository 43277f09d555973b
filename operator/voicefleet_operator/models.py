"""The voicefleet API: pydantic models that are the single source of truth for the CRDs (see crdgen.py)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self, cast

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from voicefleet_agent.contract import ProviderKind, TurnDetectionMode

GROUP = "voicefleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
E164 = r"^\+[1-9][0-9]{6,14}$"
CIDR_OR_IP = r"^[0-9a-fA-F:.]+(/[0-9]{1,3})?$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"
DATA_KEY = r"^[-._a-zA-Z0-9]+$"  # a Secret or ConfigMap key, as the API server accepts it
MAP_KEY = r"^[A-Za-z0-9]([-._A-Za-z0-9]*[A-Za-z0-9])?$"

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
DataKey = Annotated[str, Field(min_length=1, max_length=253, pattern=DATA_KEY)]
# Small string maps (options, metadata): bounded in entries, key and value size.
MapKey = Annotated[str, Field(min_length=1, max_length=63, pattern=MAP_KEY)]
MapValue = Annotated[str, Field(max_length=1024)]
MAP_MAX_ENTRIES = 32

# Child objects are named <VoiceAgent name><suffix>. Services must be DNS-1035 labels (at most 63 characters,
# starting with a letter), so the VoiceAgent name is bounded to leave room for the longest Service suffix.
CHILD_SUFFIXES: dict[str, str] = {
    "ServiceAccount": "",
    "ConfigMap": "-config",
    "Deployment": "",
    "Service": "-metrics",
    "HorizontalPodAutoscaler": "",
    "PodDisruptionBudget": "",
    "Secret": "-fleet",  # the fleet channel token
}
# The browser channel's token service: a Deployment and a Service of this name (channels.browser.enabled).
BROWSER_SUFFIX = "-browser"
AGENT_NAME_MAX = 63 - max(len(CHILD_SUFFIXES["Service"]), len(BROWSER_SUFFIX))
# Bounds of allowedAddresses: a range wider than this is refused, whatever minPrefixLength says.
IPV4_PREFIX_FLOOR = 8
IPV6_PREFIX_FLOOR = 16


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One x-kubernetes-validations entry."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def url_rule(schemes: tuple[str, ...]) -> dict[str, str]:
    """CEL: the string parses as an absolute URL with one of `schemes` and a host."""
    allowed = ", ".join(f"'{x}'" for x in schemes)
    return cel(
        f"isURL(self) && url(self).getScheme() in [{allowed}] && url(self).getHostname() != ''",
        f"must be a URL with a host and scheme {'/'.join(schemes)}",
    )


def url_field(schemes: tuple[str, ...], description: str, **kwargs: Any) -> Any:
    """A URL field: pattern for pydantic, CEL (parse, scheme, host) for the API server."""
    return Field(
        **kwargs,
        pattern=rf"^({'|'.join(schemes)})://[^\s/?#@]+([/?#]\S*)?$",
        max_length=2048,
        description=description,
        json_schema_extra={"x-kubernetes-validations": [cast(Any, url_rule(schemes))]},
    )


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
    # CEL rules for this object, emitted as x-kubernetes-validations by crdgen.
    cel_rules: ClassVar[tuple[dict[str, str], ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.cel_rules:
            handler.resolve_ref_schema(schema)["x-kubernetes-validations"] = list(cls.cel_rules)
        return schema


# --- references ---


class LocalObjectRef(Model):
    """A reference to an object in the same namespace."""

    name: ObjectName = Field(description="Name of the object in the VoiceAgent's namespace.")


class SecretKeyRef(Model):
    """A key of a Secret in the same namespace."""

    name: ObjectName = Field(description="Name of the Secret.")
    key: DataKey = Field(default="apiKey", description="Key within the Secret.")


class LiveKitCredentialsRef(Model):
    """A Secret holding the LiveKit API key and secret."""

    name: ObjectName = Field(description="Name of the Secret.")
    api_key_key: DataKey = Field(default="apiKey", description="Key of the API key in the Secret.")
    api_secret_key: DataKey = Field(default="apiSecret", description="Key of the API secret.")


class ConfigMapKeyRef(Model):
    """A key of a ConfigMap in the same namespace."""

    name: ObjectName = Field(description="Name of the ConfigMap.")
    key: DataKey = Field(description="Key within the ConfigMap.")


# --- providers ---


class PricingSpec(Model):
    """Prices used to compute cost per call. Unset fields use voicefleet's list prices for the provider."""

    usd_per_minute: float | None = Field(default=None, ge=0, description="USD per audio minute (STT, TTS).")
    usd_per_1k_input_tokens: float | None = Field(default=None, ge=0, description="USD per 1k prompt tokens.")
    usd_per_1k_output_tokens: float | None = Field(default=None, ge=0, description="USD per 1k output tokens.")


class ProviderSpec(Model):
    """One provider: which service, which model, where, and with which credentials."""

    provider: ProviderKind = Field(description="Provider implementation.")
    model: str = Field(min_length=1, max_length=128, description="Model name, e.g. nova-3, gpt-4o-mini, sonic-3.")
    base_url: str | None = url_field(
        ("http", "https", "ws", "wss"),
        "Endpoint override, e.g. a self-hosted Whisper or the offline provider stack.",
        default=None,
    )
    secret_ref: SecretKeyRef | None = Field(default=None, description="Secret key holding the provider API key.")
    options: dict[MapKey, MapValue] = Field(
        default_factory=dict, max_length=MAP_MAX_ENTRIES, description="Provider-specific options (e.g. voice)."
    )
    pricing: PricingSpec | None = Field(default=None, description="Price overrides for cost reporting.")


class NamedProviderSpec(ProviderSpec):
    """A provider in a ProviderPolicy chain; the name identifies it in status, overrides and metrics."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Name unique in the chain.")


class ProviderChain(Model):
    """Providers of one modality, in order of preference."""

    providers: list[NamedProviderSpec] = Field(
        min_length=1,
        max_length=8,
        description="Ordered providers; the first healthy one is used.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class HealthCheckSpec(Model):
    """How the operator probes providers."""

    interval_seconds: int = Field(default=10, ge=1, le=3600, description="Seconds between probes.")
    timeout_seconds: int = Field(default=3, ge=1, le=60, description="Probe timeout.")
    latency_threshold_ms: int = Field(default=1500, ge=1, le=60000, description="A slower probe counts as failed.")
    failure_threshold: int = Field(default=3, ge=1, le=100, description="Failures in a row to mark unhealthy.")
    recovery_threshold: int = Field(default=5, ge=1, le=100, description="Successes in a row to mark healthy.")


class FailbackSpec(Model):
    """What happens when a preferred provider recovers."""

    mode: Literal["Automatic", "Manual"] = Field(
        default="Automatic", description="Automatic: return to the preferred provider once it is healthy."
    )
    hold_seconds: int = Field(default=60, ge=0, le=86400, description="Minimum healthy time before failback.")


class OverrideSpec(Model):
    """On-call override: pin a modality to a named provider, whatever its health."""

    stt: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL, description="Provider name to pin STT to.")
    llm: str | None = Field(
        default=None, max_length=63, pattern=DNS_LABEL, description="Provider name to pin the LLM to."
    )
    tts: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL, description="Provider name to pin TTS to.")
    reason: str | None = Field(default=None, max_length=1024, description="Why (shown in Events).")


MODALITY_KINDS: dict[str, tuple[str, ...]] = {
    "stt": ("deepgram", "whisper"),
    "llm": ("openai",),
    "tts": ("cartesia",),
}


def _kinds_rule(path: str, modality: str, chain: bool) -> dict[str, str]:
    kinds = ", ".join(f"'{k}'" for k in MODALITY_KINDS[modality])
    if chain:
        rule = f"!has(self.{path}) || self.{path}.providers.all(p, p.provider in [{kinds}])"
    else:
        rule = f"self.{path}.provider in [{kinds}]"
    return cel(rule, f"{modality} providers must be one of {kinds.replace(chr(39), '')}", f".{path}")


class ProviderPolicySpec(Model):
    """Ordered STT/LLM/TTS provider chains, health checks, failback and an on-call override."""

    stt: ProviderChain | None = Field(default=None, description="Speech-to-text chain.")
    llm: ProviderChain | None = Field(default=None, description="Language-model chain.")
    tts: ProviderChain | None = Field(default=None, description="Text-to-speech chain.")
    health_check: HealthCheckSpec = Field(default_factory=HealthCheckSpec, description="Probe settings.")
    failback: FailbackSpec = Field(default_factory=FailbackSpec, description="Failback behaviour.")
    override: OverrideSpec | None = Field(default=None, description="On-call override; wins over health.")

    cel_rules = tuple(
        cel(
            f"!has(self.override) || !has(self.override.{m}) || "
            f"(has(self.{m}) && self.{m}.providers.exists(p, p.name == self.override.{m}))",
            f"override.{m} must name a provider in {m}.providers",
            f".override.{m}",
        )
        for m in ("stt", "llm", "tts")
    ) + tuple(_kinds_rule(m, m, chain=True) for m in ("stt", "llm", "tts"))


# --- VoiceAgent ---


class VadSpec(Model):
    """Silero voice-activity detection."""

    activation_threshold: float = Field(default=0.5, ge=0.05, le=0.95, description="Speech probability threshold.")
    min_silence_duration_ms: int = Field(default=550, ge=50, le=5000, description="Silence that ends speech.")


class TurnDetectionSpec(Model):
    """End-of-turn detection."""

    mode: TurnDetectionMode = Field(default="semantic", description="semantic (bundled model), vad or stt.")


class PipelineSpec(Model):
    """The voice pipeline. With a providerPolicyRef, the policy's chains replace stt/llm/tts for set modalities."""

    stt: ProviderSpec = Field(description="Speech-to-text provider.")
    llm: ProviderSpec = Field(description="Language model provider.")
    tts: ProviderSpec = Field(description="Text-to-speech provider.")
    vad: VadSpec = Field(default_factory=VadSpec, description="Voice-activity detection.")
    turn_detection: TurnDetectionSpec = Field(default_factory=TurnDetectionSpec, description="Turn detection.")
    instructions: str | None = Field(default=None, max_length=65536, description="System instructions.")
    instructions_config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="ConfigMap key holding the instructions (instead of instructions)."
    )
    filler_after_ms: int = Field(default=700, ge=0, le=10000, description="Filler speech after a slow tool call.")

    cel_rules = (
        cel(
            "!(has(self.instructions) && has(self.instructionsConfigMapRef))",
            "set either instructions or instructionsConfigMapRef, not both",
        ),
        *(_kinds_rule(m, m, chain=False) for m in ("stt", "llm", "tts")),
    )


class McpServerSpec(Model):
    """An MCP server whose tools the agent may call."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL, description="Name of the server.")
    url: str = url_field(("http", "https"), "Streamable HTTP endpoint.")


class ToolsSpec(Model):
    """Tools available to the agent."""

    mcp_servers: list[McpServerSpec] = Field(
        default_factory=list,
        max_length=16,
        description="MCP servers (streamable HTTP).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


Origin = Annotated[
    str,
    Field(
        pattern=r"^https?://[A-Za-z0-9]([-.A-Za-z0-9]*[A-Za-z0-9])?(:[0-9]{1,5})?$",
        max_length=256,
        json_schema_extra={
            "x-kubernetes-validations": [
                cast(
                    Any,
                    cel(
                        "isURL(self) && url(self).getHostname() != '' && url(self).getEscapedPath() == ''",
                        "must be a web origin: http(s)://host[:port], no path (e.g. https://app.example.com)",
                    ),
                )
            ]
        },
    ),
]


class BrowserChannelSpec(Model):
    """The WebRTC browser channel: a token service (its own Deployment and Service `<name>-browser`, from the agent
    image) that issues short-lived LiveKit tokens for a fresh room with this agent dispatched and serves a talk
    page."""

    enabled: bool = Field(
        default=False,
        description="Run the token service and talk page. Off by default: it hands out sessions to whoever reaches it.",
    )
    allowed_origins: list[Origin] = Field(
        default_factory=list,
        max_length=32,
        description="Other web origins whose pages may ask for tokens (CORS); the talk page's own is always allowed.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    rate_per_minute: int = Field(
        default=10, ge=1, le=600, description="Tokens per client address per minute (a burst of as many, refilled)."
    )
    token_ttl_seconds: int = Field(
        default=600, ge=60, le=86400, description="Lifetime of an issued token (only joining needs it valid)."
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Shared secret callers must send in the X-Voicefleet-Key header (the talk page reads it from "
        "its URL fragment, #key=...).",
    )
    livekit_url: str | None = url_field(
        ("ws", "wss", "http", "https"),
        "LiveKit's URL as browsers reach it; default spec.livekit.url.",
        default=None,
    )


class PhoneAuthRef(Model):
    """Secret with SIP digest credentials."""

    name: ObjectName = Field(description="Name of the Secret.")
    username_key: DataKey = Field(default="username", description="Key of the username.")
    password_key: DataKey = Field(default="password", description="Key of the password.")


class PrefixLimits(Model):
    """The widest address ranges a trunk may admit, as minimum CIDR prefix lengths."""

    ipv4: int = Field(
        default=24,
        ge=IPV4_PREFIX_FLOOR,
        le=32,
        description=f"Shortest IPv4 prefix allowed (at least /{IPV4_PREFIX_FLOOR}).",
    )
    ipv6: int = Field(
        default=48,
        ge=IPV6_PREFIX_FLOOR,
        le=128,
        description=f"Shortest IPv6 prefix allowed (at least /{IPV6_PREFIX_FLOOR}).",
    )


Address = Annotated[
    str,
    Field(
        pattern=CIDR_OR_IP,
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [
                cast(
                    Any, cel("isIP(self) || isCIDR(self)", "must be an IP address or a CIDR range such as 192.0.2.0/24")
                )
            ]
        },
    ),
]


class PhoneChannelSpec(Model):
    """Phone (SIP) channel, reconciled into a LiveKit SIP inbound trunk and dispatch rule."""

    numbers: list[Annotated[str, Field(pattern=E164)]] = Field(
        min_length=1,
        max_length=64,
        description="E.164 numbers served.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    allowed_addresses: list[Address] = Field(
        default_factory=list,
        max_length=64,
        description="Source IPs or CIDR ranges allowed to send INVITEs; no range wider than minPrefixLength.",
    )
    min_prefix_length: PrefixLimits = Field(
        default_factory=PrefixLimits,
        description="Widest ranges allowedAddresses may hold; /0 and other open ranges are always refused.",
    )
    auth_secret_ref: PhoneAuthRef | None = Field(default=None, description="Digest-auth credentials.")
    krisp_enabled: bool = Field(default=False, description="Krisp noise cancellation.")
    room_prefix: str = Field(default="call-", max_length=32, pattern=r"^[a-zA-Z0-9_-]*$", description="Room prefix.")
    max_call_duration_seconds: int = Field(default=3600, ge=60, le=86400, description="Hard call limit.")
    ringing_timeout_seconds: int = Field(default=30, ge=1, le=300, description="Ringing timeout.")
    metadata: dict[MapKey, MapValue] = Field(
        default_factory=dict, max_length=MAP_MAX_ENTRIES, description="Dispatch metadata for the agent."
    )

    cel_rules = (
        cel(
            "(has(self.allowedAddresses) && size(self.allowedAddresses) > 0) || has(self.authSecretRef)",
            "a phone channel needs allowedAddresses or authSecretRef: open trunks invite toll fraud",
        ),
        cel(
            "!has(self.allowedAddresses) || self.allowedAddresses.all(a, !isCIDR(a) || "
            "cidr(a).prefixLength() >= (cidr(a).ip().family() == 4 ? self.minPrefixLength.ipv4 "
            ": self.minPrefixLength.ipv6))",
            "a range in allowedAddresses is wider than minPrefixLength allows: open ranges invite toll fraud",
            ".allowedAddresses",
        ),
    )


class ChannelsSpec(Model):
    """Channels through which users reach the agent."""

    browser: BrowserChannelSpec = Field(default_factory=BrowserChannelSpec, description="Browser (WebRTC).")
    phone: PhoneChannelSpec | None = Field(default=None, description="Phone (SIP).")


class ScalingSpec(Model):
    """Horizontal scaling on active sessions."""

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Lowest replica count.")
    max_replicas: int = Field(default=10, ge=1, le=1000, description="Highest replica count.")
    target_sessions_per_pod: int = Field(default=4, ge=1, le=200, description="Average active sessions per pod.")
    # No default: a default would change every existing agent's rendered config (a rollout on operator upgrade) and
    # refuse specs whose targetSessionsPerPod is above it; a pod's capacity depends on its pipeline, not on us.
    max_sessions_per_pod: int | None = Field(
        default=None,
        ge=1,
        le=200,
        description="Sessions at which a pod reports itself full to LiveKit, which then sends the next session to "
        "another pod. Unset: LiveKit's CPU-based load decides.",
    )
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600, description="Window before scaling down.")
    autoscaler: Literal["HPA", "External"] = Field(
        default="HPA",
        description="HPA: the operator's HPA on active sessions. External: no HPA; replicas are left to another "
        "autoscaler such as KEDA (the operator deletes the HPA it made before).",
    )

    cel_rules = (
        cel("self.minReplicas <= self.maxReplicas", "minReplicas must be <= maxReplicas", ".minReplicas"),
        cel(
            "!has(self.maxSessionsPerPod) || self.targetSessionsPerPod <= self.maxSessionsPerPod",
            "targetSessionsPerPod must be <= maxSessionsPerPod: a pod cannot average more sessions than it takes",
            ".targetSessionsPerPod",
        ),
    )


class DrainSpec(Model):
    """How long a terminating pod may finish its live calls."""

    grace_period_seconds: int = Field(default=600, ge=10, le=86400, description="Drain timeout for live sessions.")


ResourceName = Literal["cpu", "memory", "ephemeral-storage"]
Quantity = Annotated[
    str,
    Field(
        pattern=QUANTITY,
        max_length=20,
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "isQuantity(self) && quantity(self).isGreaterThan(quantity('0')) && "
                    "quantity(self).isLessThan(quantity('1Pi'))",
                    "must be a quantity above 0 and below 1Pi",
                )
            ]
        },
    ),
]


class ResourcesSpec(Model):
    """Container resources."""

    requests: dict[ResourceName, Quantity] = Field(
        default_factory=lambda: cast(dict[ResourceName, str], {"cpu": "500m", "memory": "1Gi"}),
        max_length=3,
        description="Requests.",
    )
    limits: dict[ResourceName, Quantity] = Field(
        default_factory=lambda: cast(dict[ResourceName, str], {"memory": "2Gi"}), max_length=3, description="Limits."
    )

    cel_rules = (
        cel(
            "!has(self.requests) || !has(self.limits) || self.requests.all(r, !(r in self.limits) || "
            "quantity(self.requests[r]).compareTo(quantity(self.limits[r])) <= 0)",
            "each request must be less than or equal to its limit",
            ".requests",
        ),
    )


ENV_VALUE_MAX = 8192


class EnvVarSpec(Model):
    """Extra environment variable for the agent container."""

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME, description="Variable name.")
    value: str | None = Field(default=None, max_length=ENV_VALUE_MAX, description="Literal value.")
    secret_key_ref: SecretKeyRef | None = Field(default=None, description="Value from a Secret key.")

    cel_rules = (cel("has(self.value) != has(self.secretKeyRef)", "set exactly one of value or secretKeyRef"),)


class LiveKitSpec(Model):
    """The LiveKit server the agents register with."""

    url: str = url_field(("ws", "wss", "http", "https"), "LiveKit server URL.")
    secret_ref: LiveKitCredentialsRef = Field(description="Secret with the API key and secret.")


class VoiceAgentSpec(Model):
    """A fleet of voice agents."""

    image: str = Field(min_length=1, max_length=1024, pattern=r"^\S+$", description="Agent container image.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy."
    )
    livekit: LiveKitSpec = Field(description="LiveKit server and credentials.")
    agent_name: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL, description="Agent name for explicit dispatch."
    )
    provider_policy_ref: LocalObjectRef | None = Field(default=None, description="ProviderPolicy to follow.")
    pipeline: PipelineSpec = Field(description="STT/LLM/TTS, VAD, turn detection and instructions.")
    tools: ToolsSpec = Field(default_factory=ToolsSpec, description="Tools (MCP servers).")
    channels: ChannelsSpec = Field(default_factory=ChannelsSpec, description="Browser and phone channels.")
    scaling: ScalingSpec = Field(default_factory=ScalingSpec, description="Autoscaling on active sessions.")
    drain: DrainSpec = Field(default_factory=DrainSpec, description="Draining of live calls.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Container resources.")
    env: list[EnvVarSpec] = Field(
        default_factory=list,
        max_length=64,
        description="Extra environment variables.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


# --- status ---


class Condition(Model):
    """A condition per Kubernetes API conventions."""

    type: str = Field(max_length=316, description="Condition type, e.g. Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", description="Reason.")
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: int | None = Field(default=None, ge=0, description="Generation the condition is about.")


ConditionList = Annotated[
    list[Condition],
    Field(
        default_factory=list,
        description="Observations of the object's state.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class ActiveProviders(Model):
    """Provider names in use per modality."""

    stt: str | None = Field(default=None, description="STT provider in use.")
    llm: str | None = Field(default=None, description="LLM provider in use.")
    tts: str | None = Field(default=None, description="TTS provider in use.")


class PhoneStatus(Model):
    """What LiveKit holds for the phone channel."""

    trunk_id: str = Field(default="", description="LiveKit SIP inbound trunk ID.")
    dispatch_rule_id: str = Field(default="", description="LiveKit SIP dispatch rule ID.")
    numbers: list[str] = Field(default_factory=list, description="Numbers served.")


class BrowserStatus(Model):
    """Where the browser channel's token service and talk page are served."""

    url: str = Field(description="The talk page inside the cluster; the token endpoint is POST <url>api/token.")


class VoiceAgentStatus(Model):
    """Observed state of a VoiceAgent."""

    observed_generation: int | None = Field(default=None, description="Last spec generation reconciled.")
    conditions: ConditionList
    replicas: int | None = Field(default=None, description="Pods of the agent Deployment.")
    ready_replicas: int | None = Field(default=None, description="Ready pods.")
    sessions: int | None = Field(
        default=None,
        description="Active sessions across the fleet, from the custom metrics API the HPA reads "
        "(voicefleet_agent_active_sessions).",
    )
    full_pods: int | None = Field(
        default=None, description="Pods at scaling.maxSessionsPerPod: LiveKit sends them no new session."
    )
    draining: int | None = Field(
        default=None,
        description="Agent pods terminating (scale-in, rollout): they take no new session and finish their calls "
        "within drain.gracePeriodSeconds.",
    )
    providers: ActiveProviders | None = Field(default=None, description="Providers in use.")
    config_hash: str | None = Field(default=None, description="Hash of the rendered agent config.")
    phone: PhoneStatus | None = Field(default=None, description="LiveKit SIP objects of the phone channel.")
    browser: BrowserStatus | None = Field(default=None, description="The browser channel's talk page.")


class ProviderHealthStatus(Model):
    """Health of one provider of the policy."""

    modality: Literal["stt", "llm", "tts"] = Field(description="stt, llm or tts.")
    name: str = Field(description="Provider name in the chain.")
    healthy: bool = Field(description="The verdict, with hysteresis.")
    consecutive_failures: int = Field(default=0, description="Failed observations in a row.")
    last_probe_latency_ms: float | None = Field(
        default=None,
        description="Latency of the newest synthetic probe when this status was written. Status is written when a "
        "verdict, choice or rollout changes, never for a probe alone (a policy at rest costs no API writes); the "
        "operator's voicefleet_operator_probe_seconds metric has every probe.",
    )
    last_error: str = Field(default="", description="Why the last failed observation failed.")
    since: datetime | None = Field(default=None, description="When the verdict last changed.")
    last_probe: datetime | None = Field(
        default=None, description="When the newest probe ran as of this status's last write (see lastProbeLatencyMs)."
    )


class RolloutStatus(Model):
    """How far the agents have switched to the providers in use."""

    generation: int = Field(description="Provider generation the agents should run.")
    acknowledged: int = Field(description="Agent processes running it.")
    agents: int = Field(description="Agent processes heard from recently.")
    summary: str = Field(default="", description="E.g. 'stt=whisper: 198/200 agents'.")


class ProviderPolicyStatus(Model):
    """Observed state of a ProviderPolicy."""

    observed_generation: int | None = Field(default=None, description="Last spec generation reconciled.")
    conditions: ConditionList
    active: ActiveProviders | None = Field(default=None, description="Provider in use per modality.")
    provider_generation: int | None = Field(default=None, description="Bumped on every change of active.")
    providers: list[ProviderHealthStatus] = Field(default_factory=list, description="Health of every provider.")
    rollout: RolloutStatus | None = Field(default=None, description="Agents switched to the providers in use.")


class Resource(Model):
    """Common shape of a custom resource."""

    api_version: str = API_VERSION
    kind: str
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Parse what the API server returned; status is read separately, it may hold fields of newer versions."""
        return cls.model_validate({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")})


def conditions_of(body: Mapping[str, Any]) -> list[Condition]:
    """The conditions in a body's status."""
    return [Condition.model_validate(c) for c in (body.get("status") or {}).get("conditions") or []]


class VoiceAgent(Resource):
    kind: Literal["VoiceAgent"] = "VoiceAgent"
    spec: VoiceAgentSpec
    status: VoiceAgentStatus = Field(default_factory=VoiceAgentStatus)


class ProviderPolicy(Resource):
    kind: Literal["ProviderPolicy"] = "ProviderPolicy"
    spec: ProviderPolicySpec
    status: ProviderPolicyStatus = Field(default_factory=ProviderPolicyStatus)
