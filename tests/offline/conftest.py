"""Fixtures for the offline provider stack: one stack per session, reset to `ok` before every test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from livekit import rtc
from livekit.agents import utils

from voicefleet_offline import OfflineStack, espeak, get_engine

SPEECH_RATE = 16000

# A missing espeak-ng fails the tests that speak, loudly: it is a component, never a reason to skip.
requires_espeak = pytest.mark.usefixtures("espeak_installed")


@pytest.fixture(scope="session")
def espeak_installed() -> None:
    if not espeak.available():
        pytest.fail("espeak-ng or sox not installed: run `make system-deps` (apt-get install espeak-ng sox)")


@pytest.fixture(scope="session")
async def stack() -> AsyncIterator[OfflineStack]:
    await get_engine().warm_up()
    async with OfflineStack.create() as s:
        yield s


@pytest.fixture(autouse=True)
async def _reset(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    if "stack" in request.fixturenames:
        await request.getfixturevalue("stack").reset()
    yield


@pytest.fixture
async def http() -> AsyncIterator[None]:
    """The shared aiohttp session the plugins expect outside an agent worker."""
    async with utils.http_context.open():
        yield


async def speak(text: str, sample_rate: int = SPEECH_RATE, trailing_silence_s: float = 1.0) -> bytes:
    pcm = await espeak.synthesize(text, sample_rate=sample_rate)
    return pcm + b"\0" * int(sample_rate * trailing_silence_s) * 2


def frames(pcm: bytes, sample_rate: int = SPEECH_RATE, ms: int = 20) -> Iterator[rtc.AudioFrame]:
    step = sample_rate * ms // 1000 * 2
    for i in range(0, len(pcm), step):
        chunk = pcm[i : i + step].ljust(step, b"\0")
        yield rtc.AudioFrame(chunk, sample_rate, 1, len(chunk) // 2)


@pytest.fixture(scope="session")
async def milk_pcm(espeak_installed: None) -> bytes:
    return await speak("Add buy milk to my tasks")
