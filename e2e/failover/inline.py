"""What a new session loses to a dead (hanging) primary with in-session fallback alone.

The real ``stt.FallbackAdapter`` with its defaults (attempt_timeout 10 s, one retry) over the real Deepgram and
OpenAI (Whisper) plugins, against the offline servers. The caller repeats an utterance (2 s of speech, 1 s of
silence) until a transcript comes back; the penalty is the time to the first transcript with Deepgram hanging minus
the same with the fleet already flipped (Whisper first).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents import stt, utils
from livekit.plugins import deepgram, openai, silero

from voicefleet_offline.espeak import synthesize

RATE = 16000
FRAME = RATE // 100
PHRASE = "Add buy milk to my tasks for tomorrow morning"
GIVE_UP_S = 60.0


@dataclass(frozen=True)
class FirstTranscript:
    seconds: float
    utterances_spoken: int
    text: str | None  # None: nothing came back before GIVE_UP_S


async def _first_transcript(adapter: stt.STT[Any], speech: bytes, give_up_s: float) -> FirstTranscript:
    stream = adapter.stream()
    silence = bytes(2 * RATE)
    started = time.monotonic()
    spoken = 0
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        async for event in stream:
            if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT and event.alternatives[0].text.strip():
                if not got.done():
                    got.set_result(event.alternatives[0].text)
                return

    async def speak() -> None:
        nonlocal spoken
        while True:
            spoken += 1
            for chunk in (speech, silence):
                for i in range(0, len(chunk), FRAME * 2):
                    data = chunk[i : i + FRAME * 2].ljust(FRAME * 2, b"\0")
                    stream.push_frame(rtc.AudioFrame(data, RATE, 1, FRAME))
                    await asyncio.sleep(0.01)

    reader, speaker = asyncio.create_task(read()), asyncio.create_task(speak())
    text: str | None = None
    try:
        text = await asyncio.wait_for(got, give_up_s)
    except TimeoutError:
        pass
    finally:
        speaker.cancel()
        reader.cancel()
        await stream.aclose()
    return FirstTranscript(time.monotonic() - started, spoken, text)


async def measure(
    deepgram_url: str, whisper_url: str, set_deepgram_mode: Any, give_up_s: float = GIVE_UP_S
) -> dict[str, Any]:
    """``set_deepgram_mode(mode)`` switches the Deepgram server's fault (sync callable)."""
    speech = await synthesize(PHRASE, sample_rate=RATE)
    vad = silero.VAD.load()
    async with utils.http_context.open():
        dg = deepgram.STT(model="nova-3", base_url=deepgram_url, api_key="offline-key")
        wh = openai.STT(model="whisper-1", base_url=whisper_url, api_key="offline-key", use_realtime=False)
        flipped = stt.FallbackAdapter([wh, dg], vad=vad)
        baseline = await _first_transcript(flipped, speech, give_up_s)
        await flipped.aclose()
        set_deepgram_mode("hang")
        try:
            inline = stt.FallbackAdapter([dg, wh], vad=vad)  # the defaults a session without the fleet runs
            hanging = await _first_transcript(inline, speech, give_up_s)
            await inline.aclose()
        finally:
            set_deepgram_mode("ok")
    if baseline.text is None:
        raise RuntimeError("no transcript from Whisper even with a healthy stack")
    return {
        "inline_fallback_gave_up": hanging.text is None,
        "inline_give_up_s": give_up_s,
        "inline_fallback_penalty_ms": round((hanging.seconds - baseline.seconds) * 1000),
        "first_transcript_ms_with_dead_primary": round(hanging.seconds * 1000),
        "first_transcript_ms_fleet_flipped": round(baseline.seconds * 1000),
        "utterances_lost_with_dead_primary": hanging.utterances_spoken - 1,
        "transcripts": [baseline.text, hanging.text],
    }
