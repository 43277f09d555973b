"""The vectorized speaking-rate estimate is the framework's own figure."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.voice.transcription._speaking_rate import SpeakingRateDetector, SpeakingRateStream

from voicefleet_agent import speaking_rate


@pytest.mark.parametrize("sample_rate", [8000, 16000, 22050, 24000, 44100, 48000])
def test_vectorized_spectral_flux_equals_the_frameworks_loop(sample_rate: int) -> None:
    speaking_rate.install()
    original = SpeakingRateStream._spectral_flux.__wrapped__  # type: ignore[attr-defined]
    stream = object.__new__(SpeakingRateStream)  # the method reads nothing of its instance but _stft
    rng = np.random.default_rng(sample_rate)
    t = np.arange(sample_rate) / sample_rate
    for audio in (
        (rng.standard_normal(sample_rate) * 0.1).astype(np.float32),
        (np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 4 * t) * 0.3).astype(np.float32),  # syllable-like
        np.zeros(sample_rate // 3, dtype=np.float32),
    ):
        assert speaking_rate.spectral_flux(audio, sample_rate) == pytest.approx(
            original(stream, audio, sample_rate), rel=1e-9, abs=1e-12
        )
        assert stream._spectral_flux(audio, sample_rate) == speaking_rate.spectral_flux(audio, sample_rate)


def test_audio_shorter_than_two_frames_has_no_flux() -> None:
    assert speaking_rate.spectral_flux(np.ones(100, dtype=np.float32), 16000) == 0.0


async def test_a_burst_of_agent_audio_is_estimated_in_many_short_loop_steps() -> None:
    """3 s of TTS audio pushed at once: the loop runs other callbacks between the stream's frames (before, the whole
    burst went through in one step of ~40 ms of CPU)."""
    speaking_rate.install()
    rate = 24000
    rng = np.random.default_rng(3)
    frames = [
        rtc.AudioFrame(
            data=(rng.standard_normal(rate // 100) * 3000).astype(np.int16).tobytes(),
            sample_rate=rate,
            num_channels=1,
            samples_per_channel=rate // 100,
        )
        for _ in range(300)
    ]
    stream = SpeakingRateDetector().stream()
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    for frame in frames:
        stream.push_frame(frame)
    stream.end_input()
    events = [event async for event in stream]
    done.set()
    await ticking
    assert len(events) >= 20  # the estimate still comes every 100 ms of audio
    assert ticks >= len(frames), f"the loop ran other work only {ticks} times during a {len(frames)}-frame burst"
