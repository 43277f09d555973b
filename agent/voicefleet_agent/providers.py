"""Build the STT/LLM/TTS a session runs from the AgentConfig's ordered provider chains.

One entry → that plugin instance; several → the framework's ``FallbackAdapter`` over them, in config order.
Every built instance stays reachable (``Chain.members``) so metrics can attribute usage, cost and errors to the
provider's configured name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from livekit.agents import llm, stt, tts
from livekit.agents.vad import VAD
from livekit.plugins import cartesia, deepgram, openai

from voicefleet_agent.contract import (
    PLACEHOLDER_API_KEY,
    AgentConfig,
    Modality,
    ProviderConfig,
    ProviderKind,
    deepgram_listen_url,
)
from voicefleet_agent.http import openai_client
from voicefleet_agent.switching import SwitchingLLM, SwitchingSTT, SwitchingTTS

log = logging.getLogger(__name__)

# Self-hosted OpenAI-compatible endpoints (e.g. a local Whisper) often need no key, but the SDK insists on one.

STT_ATTEMPT_TIMEOUT = 10.0
LLM_ATTEMPT_TIMEOUT = 5.0
TTS_MAX_RETRY = 2

AnySTT: TypeAlias = stt.STT[Any]
AnyLLM: TypeAlias = llm.LLM[Any]
AnyTTS: TypeAlias = tts.TTS[Any]
_T = TypeVar("_T", AnySTT, AnyLLM, AnyTTS)
Environ = Mapping[str, str]


class ProviderConfigError(ValueError):
    """A provider entry cannot be turned into a plugin instance."""


@dataclass(frozen=True)
class Member(Generic[_T]):
    """One configured provider and the plugin instance built for it."""

    config: ProviderConfig
    instance: _T


@dataclass(frozen=True)
class Chain(Generic[_T]):
    """A modality's providers in fallback order, and what the session should use."""

    modality: Modality
    members: tuple[Member[_T], ...]
    model: _T

    def config_for(self, provider: str, model: str) -> ProviderConfig | None:
        """The configured provider behind a usage row (the plugin's ``provider``/``model`` labels)."""
        for member in self.members:
            if member.instance.provider == provider and member.instance.model == model:
                return member.config
        return None


@dataclass(frozen=True)
class Pipeline:
    stt: Chain[AnySTT]
    llm: Chain[AnyLLM]
    tts: Chain[AnyTTS]

    def chains(self) -> tuple[Chain[AnySTT], Chain[AnyLLM], Chain[AnyTTS]]:
        return (self.stt, self.llm, self.tts)


def _api_key(config: ProviderConfig, environ: Environ) -> str | None:
    if config.api_key_env is None:
        return None
    key = environ.get(config.api_key_env)
    if not key:
        raise ProviderConfigError(f"provider {config.name!r}: env var {config.api_key_env} is unset or empty")
    return key


def _options(config: ProviderConfig, known: Mapping[str, Callable[[str], Any]]) -> dict[str, Any]:
    """Typed plugin kwargs from the string options; unknown ones are logged and ignored."""
    kwargs: dict[str, Any] = {}
    for key, raw in config.options.items():
        convert = known.get(key)
        if convert is None:
            log.warning("provider %r: ignoring unknown option %r (known: %s)", config.name, key, sorted(known))
            continue
        try:
            kwargs[key] = convert(raw)
        except ValueError as exc:
            raise ProviderConfigError(f"provider {config.name!r}: option {key}={raw!r}: {exc}") from exc
    return kwargs


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected a boolean")


def _build_deepgram(config: ProviderConfig, environ: Environ) -> AnySTT:
    kwargs = _options(
        config,
        {"language": str, "endpointing_ms": int, "smart_format": _bool, "filler_words": _bool, "keyterm": str},
    )
    if (key := _api_key(config, environ)) is not None:
        kwargs["api_key"] = key
    if config.base_url:
        kwargs["base_url"] = deepgram_listen_url(config.base_url)
    return deepgram.STT(model=config.model, **kwargs)


def _openai_key(config: ProviderConfig, environ: Environ) -> str | None:
    key = _api_key(config, environ)
    if key is None and config.base_url and not environ.get("OPENAI_API_KEY"):
        return PLACEHOLDER_API_KEY
    return key


def _build_whisper(config: ProviderConfig, environ: Environ) -> AnySTT:
    kwargs = _options(config, {"language": str, "prompt": str})
    client = openai_client(base_url=config.base_url or None, api_key=_openai_key(config, environ))
    # POST /audio/transcriptions per utterance: not streaming, so it runs behind a VAD StreamAdapter
    return openai.STT(model=config.model, use_realtime=False, client=client, **kwargs)


def _build_openai_llm(config: ProviderConfig, environ: Environ) -> AnyLLM:
    kwargs = _options(config, {"temperature": float, "max_completion_tokens": int, "parallel_tool_calls": _bool})
    client = openai_client(base_url=config.base_url or None, api_key=_openai_key(config, environ))
    return openai.LLM(model=config.model, client=client, **kwargs)


def _build_cartesia(config: ProviderConfig, environ: Environ) -> AnyTTS:
    kwargs = _options(config, {"voice": str, "language": str, "speed": float, "sample_rate": int})
    if (key := _api_key(config, environ)) is not None:
        kwargs["api_key"] = key
    if config.base_url:
        kwargs["base_url"] = config.base_url.rstrip("/")
    return cartesia.TTS(model=config.model, **kwargs)


_STT_BUILDERS: dict[ProviderKind, Callable[[ProviderConfig, Environ], AnySTT]] = {
    "deepgram": _build_deepgram,
    "whisper": _build_whisper,
}
_LLM_BUILDERS: dict[ProviderKind, Callable[[ProviderConfig, Environ], AnyLLM]] = {"openai": _build_openai_llm}
_TTS_BUILDERS: dict[ProviderKind, Callable[[ProviderConfig, Environ], AnyTTS]] = {"cartesia": _build_cartesia}


def _members(
    modality: Modality,
    configs: tuple[ProviderConfig, ...],
    builders: Mapping[ProviderKind, Callable[[ProviderConfig, Environ], _T]],
    environ: Environ,
) -> tuple[Member[_T], ...]:
    if not configs:
        raise ProviderConfigError(f"{modality}: the chain has no providers")
    members = []
    for config in configs:
        builder = builders.get(config.provider)
        if builder is None:
            raise ProviderConfigError(
                f"{modality}: provider {config.name!r} is a {config.provider!r}, which cannot serve {modality} "
                f"(supported: {', '.join(sorted(builders))})"
            )
        try:
            members.append(Member(config=config, instance=builder(config, environ)))
        except ProviderConfigError:
            raise
        except ValueError as exc:  # the plugins raise ValueError for a missing key or a bad model
            raise ProviderConfigError(f"{modality}: provider {config.name!r}: {exc}") from exc
    return tuple(members)


def build_stt(
    configs: tuple[ProviderConfig, ...],
    *,
    vad: VAD,
    environ: Environ = os.environ,
    switching: bool = False,
    active: str | None = None,
) -> Chain[AnySTT]:
    """``switching``: the session follows a ProviderPolicy, so the chain leads with ``active`` and can move live."""
    members = _members("stt", configs, _STT_BUILDERS, environ)
    model: AnySTT
    if switching and len(members) > 1:

        def adapter(ordered: list[AnySTT]) -> AnySTT:
            return stt.FallbackAdapter(ordered, vad=vad, attempt_timeout=STT_ATTEMPT_TIMEOUT, max_retry_per_stt=1)

        model = SwitchingSTT([(m.config.name, m.instance) for m in members], vad=vad, active=active, adapter=adapter)
    elif len(members) > 1:
        model = stt.FallbackAdapter(
            [m.instance for m in members], vad=vad, attempt_timeout=STT_ATTEMPT_TIMEOUT, max_retry_per_stt=1
        )
    elif not members[0].instance.capabilities.streaming:
        model = stt.StreamAdapter(stt=members[0].instance, vad=vad)
    else:
        model = members[0].instance
    return Chain(modality="stt", members=members, model=model)


def build_llm(
    configs: tuple[ProviderConfig, ...],
    *,
    environ: Environ = os.environ,
    switching: bool = False,
    active: str | None = None,
) -> Chain[AnyLLM]:
    members = _members("llm", configs, _LLM_BUILDERS, environ)
    model: AnyLLM
    if switching and len(members) > 1:

        def adapter(ordered: list[AnyLLM]) -> AnyLLM:
            return llm.FallbackAdapter(ordered, attempt_timeout=LLM_ATTEMPT_TIMEOUT)

        model = SwitchingLLM([(m.config.name, m.instance) for m in members], active=active, adapter=adapter)
    elif len(members) > 1:
        model = llm.FallbackAdapter([m.instance for m in members], attempt_timeout=LLM_ATTEMPT_TIMEOUT)
    else:
        model = members[0].instance
    return Chain(modality="llm", members=members, model=model)


def build_tts(
    configs: tuple[ProviderConfig, ...],
    *,
    environ: Environ = os.environ,
    switching: bool = False,
    active: str | None = None,
) -> Chain[AnyTTS]:
    members = _members("tts", configs, _TTS_BUILDERS, environ)
    model: AnyTTS
    if switching and len(members) > 1:

        def adapter(ordered: list[AnyTTS]) -> AnyTTS:
            return tts.FallbackAdapter(ordered, max_retry_per_tts=TTS_MAX_RETRY)

        model = SwitchingTTS([(m.config.name, m.instance) for m in members], active=active, adapter=adapter)
    elif len(members) > 1:
        model = tts.FallbackAdapter([m.instance for m in members], max_retry_per_tts=TTS_MAX_RETRY)
    else:
        model = members[0].instance
    return Chain(modality="tts", members=members, model=model)


def build_pipeline(
    config: AgentConfig, *, vad: VAD, environ: Environ = os.environ, active: Mapping[str, str] | None = None
) -> Pipeline:
    """All three chains for one session (instances hold per-session connections, so build per session).

    A session of an agent that follows a ProviderPolicy gets a switching STT, LLM and TTS led by ``active`` (the
    fleet's choice), each keeping its in-session fallback behind the leader.
    """
    follows = config.policy_name is not None
    lead = active or {}
    return Pipeline(
        stt=build_stt(config.stt, vad=vad, environ=environ, switching=follows, active=lead.get("stt")),
        llm=build_llm(config.llm, environ=environ, switching=follows, active=lead.get("llm")),
        tts=build_tts(config.tts, environ=environ, switching=follows, active=lead.get("tts")),
    )
