"""The real Cartesia plugin against the offline Cartesia-compatible server (espeak-ng)."""

from __future__ import annotations

import numpy as np
import pytest
from livekit import rtc
from livekit.plugins import cartesia, openai

from voicefleet_offline import OfflineStack

from .conftest import requires_espeak

pytestmark = [requires_espeak, pytest.mark.usefixtures("http")]

SENTENCE = "Okay, I have added buy milk to your tasks."


def _stats(frames: list[rtc.AudioFrame]) -> tuple[set[int], float, float]:
    pcm = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    rates = {f.sample_rate for f in frames}
    seconds = pcm.size / next(iter(rates))
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64))))) / 32768
    return rates, seconds, rms


async def test_synthesize_returns_speech_at_the_requested_rate(stack: OfflineStack) -> None:
    tts = cartesia.TTS(base_url=stack.cartesia.provider_url, api_key="offline", sample_rate=24000)
    frames = [a.frame async for a in tts.synthesize(SENTENCE)]
    rates, seconds, rms = _stats(frames)
    assert rates == {24000}
    assert 1.5 < seconds < 8.0
    assert rms > 0.01
    assert stack.cartesia.state()["counters"]["by_path"] == {"/tts/bytes": 1}


async def test_websocket_stream_with_several_sentences(stack: OfflineStack) -> None:
    tts = cartesia.TTS(base_url=stack.cartesia.provider_url, api_key="offline", sample_rate=16000)
    stream = tts.stream()
    stream.push_text("Sure. ")
    stream.push_text("You have two tasks: buy milk and call mom.")
    stream.end_input()
    frames = [a.frame async for a in stream]
    await stream.aclose()
    await tts.aclose()
    rates, seconds, rms = _stats(frames)
    assert rates == {16000}
    assert 2.0 < seconds < 10.0
    assert rms > 0.01
    counters = stack.cartesia.state()["counters"]
    assert counters["ws_connections"] == 1
    assert counters["ws_messages_in"] >= 2  # text (the tokenizer may merge short sentences), then continue=false


async def test_synthesized_speech_is_intelligible(stack: OfflineStack) -> None:
    """Round trip through Whisper: the audio really says the words."""
    tts = cartesia.TTS(base_url=stack.cartesia.provider_url, api_key="offline", sample_rate=16000)
    frames = [a.frame async for a in tts.synthesize("Please buy some milk.")]
    stt = openai.STT(model="whisper-1", base_url=stack.openai.provider_url, api_key="offline")
    event = await stt.recognize(frames)
    assert "milk" in event.alternatives[0].text.lower()
