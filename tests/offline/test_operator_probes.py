"""The operator's health probes against the offline servers, at the URLs examples/10-providerpolicy.yaml gives
(bare origins, a keyless Whisper): every provider of the example policy must probe healthy, as it does for agents,
and an STT probe's silence is answered without queuing behind the calls' audio."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import yaml

from voicefleet_offline import OfflineStack, get_engine
from voicefleet_offline.whisper import SILENCE_PEAK, WHISPER_RATE, WhisperEngine
from voicefleet_operator.models import NamedProviderSpec, ProviderPolicy
from voicefleet_operator.probes import probe

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"deepgram": "offline", "openai": "offline", "cartesia": "offline"}  # examples/00-secrets.yaml


async def test_every_provider_of_the_example_policy_probes_healthy_on_the_offline_stack(stack: OfflineStack) -> None:
    body = yaml.safe_load((ROOT / "examples/10-providerpolicy.yaml").read_text())
    body["metadata"]["namespace"] = "voice"
    policy = ProviderPolicy.model_validate(body)
    # the example's Service ports, served here by the stack on free loopback ports
    servers = {8790: stack.deepgram, 8791: stack.openai, 8792: stack.cartesia, 8000: stack.openai}
    results = {}
    for chain in (policy.spec.stt, policy.spec.llm, policy.spec.tts):
        for spec in chain.providers:
            assert spec.base_url is not None
            url = urlsplit(spec.base_url)
            assert url.port is not None
            local = urlsplit(servers[url.port].base_url)
            moved = spec.model_copy(update={"base_url": urlunsplit((local.scheme, local.netloc, *url[2:]))})
            key = KEYS.get(spec.secret_ref.key) if spec.secret_ref else None
            results[spec.name] = await probe(moved, key, timeout_s=10)
    assert set(results) == {"deepgram", "whisper", "openai", "cartesia"}
    assert {name: (o.ok, o.error) for name, o in results.items()} == {name: (True, "") for name in results}


async def test_a_silent_probe_is_answered_while_the_decoding_thread_is_busy_with_calls(stack: OfflineStack) -> None:
    """Both STT servers share one decoding thread with the calls' audio; the probe's digital silence does not wait
    in that queue (Whisper has nothing to hear in it), so the probe measures the server, not the calls ahead."""
    engine = get_engine()
    rng = np.random.default_rng(7)
    speechlike = [(0.2 * rng.standard_normal(WHISPER_RATE * 20)).astype(np.float32) for _ in range(2)]
    before = engine.transcriptions
    calls = [asyncio.ensure_future(engine.transcribe(audio)) for audio in speechlike]
    try:
        deepgram = NamedProviderSpec(name="deepgram", provider="deepgram", model="nova-3",
                                     base_url=stack.deepgram.base_url)  # fmt: skip
        observation = await probe(deepgram, "offline", timeout_s=30)
        assert (observation.ok, observation.error) == (True, "")
        assert not calls[1].done(), "the probe waited behind the calls' decoding"
    finally:
        await asyncio.gather(*calls)
    assert engine.transcriptions == before + 2  # the calls' audio was decoded; the probe's silence was not


async def test_digital_silence_is_answered_empty_without_the_model_and_any_signal_is_decoded(tmp_path: Path) -> None:
    engine = WhisperEngine(model_path=str(tmp_path))  # no model.bin there: loading the model fails
    silent = await engine.transcribe(np.zeros(WHISPER_RATE // 2, dtype=np.float32))
    assert (silent.text, silent.duration, engine.transcriptions) == ("", 0.5, 0)
    faint = np.full(WHISPER_RATE // 2, 2 * SILENCE_PEAK, dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"model\.bin"):
        await engine.transcribe(faint)
