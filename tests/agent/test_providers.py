"""providers.py: the right plugin classes, options and fallback order from an AgentConfig."""

from __future__ import annotations

import pytest
from agent_testkit import make_config, provider
from livekit.agents import llm, stt, tts
from livekit.agents.vad import VAD
from livekit.plugins import cartesia, deepgram, openai

from voicefleet_agent.providers import (
    PLACEHOLDER_API_KEY,
    ProviderConfigError,
    build_llm,
    build_pipeline,
    build_stt,
    build_tts,
    deepgram_listen_url,
)

DEEPGRAM = provider(
    "deepgram", "deepgram", "nova-3", base_url="http://fake:8790", api_key_env="VOICEFLEET_STT_0_API_KEY"
)
WHISPER = provider("whisper", "whisper", "whisper-1", base_url="http://whisper:8000/v1")
OPENAI = provider("openai", "openai", "gpt-4o-mini", base_url="http://fake:8791/v1", api_key_env="LLM_KEY")
OPENAI_B = provider("openai-b", "openai", "gpt-4o-mini", base_url="http://backup:8791/v1", api_key_env="LLM_KEY")
CARTESIA = provider(
    "cartesia", "cartesia", "sonic-3", base_url="http://fake:8792/", api_key_env="TTS_KEY", options={"voice": "v-1"}
)
CARTESIA_B = provider("cartesia-b", "cartesia", "sonic-3", base_url="http://backup:8792", api_key_env="TTS_KEY")
ENV = {"VOICEFLEET_STT_0_API_KEY": "dg-secret", "LLM_KEY": "oa-secret", "TTS_KEY": "ca-secret"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("http://fake:8790", "http://fake:8790/v1/listen"),
        ("http://fake:8790/", "http://fake:8790/v1/listen"),
        ("https://api.deepgram.com/v1/listen", "https://api.deepgram.com/v1/listen"),
        ("http://proxy/deepgram/v1/listen/", "http://proxy/deepgram/v1/listen"),
    ],
)
def test_deepgram_listen_url(given: str, expected: str) -> None:
    assert deepgram_listen_url(given) == expected


def test_single_deepgram_is_the_plugin_itself(vad: VAD) -> None:
    chain = build_stt((DEEPGRAM,), vad=vad, environ=ENV)

    assert type(chain.model) is deepgram.STT
    assert chain.model is chain.members[0].instance
    assert chain.model.model == "nova-3"
    assert chain.model._opts.endpoint_url == "http://fake:8790/v1/listen"
    assert chain.model._api_key == "dg-secret"


def test_single_whisper_runs_behind_a_vad_stream_adapter(vad: VAD) -> None:
    chain = build_stt((WHISPER,), vad=vad, environ={})

    assert isinstance(chain.model, stt.StreamAdapter)
    inner = chain.model.wrapped_stt
    assert type(inner) is openai.STT and inner is chain.members[0].instance
    assert inner.model == "whisper-1"
    assert not inner.capabilities.streaming
    assert str(inner._client.base_url) == "http://whisper:8000/v1/"
    assert inner._client.api_key == PLACEHOLDER_API_KEY  # no key configured anywhere


def test_stt_chain_is_an_ordered_fallback_with_vad_for_whisper(vad: VAD) -> None:
    chain = build_stt((DEEPGRAM, WHISPER), vad=vad, environ=ENV)

    assert isinstance(chain.model, stt.FallbackAdapter)
    first, second = chain.model._stt_instances
    assert first is chain.members[0].instance and type(first) is deepgram.STT
    assert isinstance(second, stt.StreamAdapter) and second.wrapped_stt is chain.members[1].instance
    assert [m.config.name for m in chain.members] == ["deepgram", "whisper"]


def test_reversed_chain_reverses_the_order(vad: VAD) -> None:
    chain = build_stt((WHISPER, DEEPGRAM), vad=vad, environ=ENV)

    assert isinstance(chain.model, stt.FallbackAdapter)
    assert [type(i).__name__ for i in chain.model._stt_instances] == ["StreamAdapter", "STT"]
    assert type(chain.model._stt_instances[1]) is deepgram.STT


def test_llm_single_and_fallback() -> None:
    single = build_llm((OPENAI,), environ=ENV)
    assert type(single.model) is openai.LLM
    assert single.model.model == "gpt-4o-mini"
    assert single.model.provider == "fake:8791"
    assert single.model._client.api_key == "oa-secret"

    chain = build_llm((OPENAI, OPENAI_B), environ=ENV)
    assert isinstance(chain.model, llm.FallbackAdapter)
    assert [i.provider for i in chain.model._llm_instances] == ["fake:8791", "backup:8791"]


def test_tts_single_with_options_and_fallback() -> None:
    single = build_tts((CARTESIA,), environ=ENV)
    assert type(single.model) is cartesia.TTS
    assert single.model.model == "sonic-3"
    assert single.model._opts.voice == "v-1"
    assert single.model._opts.base_url == "http://fake:8792"
    assert single.model._opts.api_key == "ca-secret"

    chain = build_tts((CARTESIA_B, CARTESIA), environ=ENV)
    assert isinstance(chain.model, tts.FallbackAdapter)
    assert chain.model._tts_instances == [m.instance for m in chain.members]
    assert [m.instance._opts.base_url for m in chain.members] == ["http://backup:8792", "http://fake:8792"]  # type: ignore[attr-defined]


def test_key_from_the_plugins_default_env_when_no_key_env(vad: VAD, provider_keys: dict[str, str]) -> None:
    config = make_config()
    pipeline = build_pipeline(config, vad=vad)

    assert pipeline.stt.model._api_key == "dg-default"  # type: ignore[attr-defined]
    assert pipeline.llm.model._client.api_key == "oa-default"  # type: ignore[attr-defined]
    assert pipeline.tts.model._opts.api_key == "ca-default"  # type: ignore[attr-defined]


def test_missing_key_env_is_a_config_error(vad: VAD) -> None:
    with pytest.raises(ProviderConfigError, match="VOICEFLEET_STT_0_API_KEY is unset"):
        build_stt((DEEPGRAM,), vad=vad, environ={})


def test_a_provider_in_the_wrong_modality_is_a_config_error() -> None:
    with pytest.raises(ProviderConfigError, match="'cartesia', which cannot serve llm"):
        build_llm((CARTESIA,), environ=ENV)


def test_bad_option_value_is_a_config_error() -> None:
    bad = provider("openai", "openai", "gpt-4o-mini", api_key_env="LLM_KEY", options={"temperature": "warm"})
    with pytest.raises(ProviderConfigError, match="temperature='warm'"):
        build_llm((bad,), environ=ENV)


def test_usage_labels_map_back_to_configured_providers(vad: VAD) -> None:
    pipeline = build_pipeline(
        make_config(stt=(DEEPGRAM, WHISPER), llm=(OPENAI, OPENAI_B), tts=(CARTESIA,)), vad=vad, environ=ENV
    )

    assert pipeline.stt.config_for("Deepgram", "nova-3") == DEEPGRAM
    assert pipeline.stt.config_for("whisper:8000", "whisper-1") == WHISPER
    assert pipeline.llm.config_for("backup:8791", "gpt-4o-mini") == OPENAI_B
    assert pipeline.tts.config_for("Cartesia", "sonic-3") == CARTESIA
    assert pipeline.tts.config_for("Cartesia", "sonic-2") is None
