"""The real Deepgram plugin against the offline Deepgram-compatible server."""

from __future__ import annotations

import asyncio

import pytest
from livekit.agents import stt
from livekit.plugins import deepgram

from voicefleet_offline import OfflineStack

from .conftest import frames, requires_espeak, speak

pytestmark = [requires_espeak, pytest.mark.usefixtures("http")]


async def _collect_until_end_of_speech(stream: deepgram.stt.SpeechStream) -> list[stt.SpeechEvent]:
    events: list[stt.SpeechEvent] = []
    async for ev in stream:
        events.append(ev)
        if ev.type is stt.SpeechEventType.END_OF_SPEECH:
            break
    return events


async def test_stream_returns_final_transcript_and_endpoint(stack: OfflineStack, milk_pcm: bytes) -> None:
    dg = deepgram.STT(base_url=stack.deepgram.provider_url, api_key="offline")
    stream = dg.stream()
    for f in frames(milk_pcm):
        stream.push_frame(f)
    events = await asyncio.wait_for(_collect_until_end_of_speech(stream), 30)
    await stream.aclose()

    kinds = [e.type for e in events]
    assert kinds[0] is stt.SpeechEventType.START_OF_SPEECH
    finals = [e for e in events if e.type is stt.SpeechEventType.FINAL_TRANSCRIPT]
    assert len(finals) == 1
    alt = finals[0].alternatives[0]
    assert "milk" in alt.text.lower()
    assert 0 < alt.confidence <= 1
    audio_s = len(milk_pcm) / 2 / 16000
    assert alt.words and all(0 <= w.start_time <= w.end_time <= audio_s for w in alt.words)
    assert alt.end_time > alt.start_time
    counters = stack.deepgram.state()["counters"]
    assert counters["by_path"] == {"/v1/listen": 1}
    assert counters["ws_messages_in"] > 0


async def test_end_input_finalizes_speech_without_trailing_silence(stack: OfflineStack) -> None:
    pcm = await speak("Add buy milk to my tasks", trailing_silence_s=0.0)
    dg = deepgram.STT(base_url=stack.deepgram.provider_url, api_key="offline")
    stream = dg.stream()
    for f in frames(pcm):
        stream.push_frame(f)
    stream.end_input()  # the plugin sends Finalize, then CloseStream

    async def first_final() -> stt.SpeechEvent:
        async for ev in stream:
            if ev.type is stt.SpeechEventType.FINAL_TRANSCRIPT:
                return ev
        raise AssertionError("stream ended without a final transcript")

    final = await asyncio.wait_for(first_final(), 30)
    await stream.aclose()
    assert "milk" in final.alternatives[0].text.lower()


async def test_interim_results_precede_the_final(stack: OfflineStack) -> None:
    pcm = await speak("Please add a task to call the dentist about my appointment next Tuesday afternoon")
    dg = deepgram.STT(base_url=stack.deepgram.provider_url, api_key="offline", interim_results=True)
    stream = dg.stream()
    for f in frames(pcm):
        stream.push_frame(f)
    events = await asyncio.wait_for(_collect_until_end_of_speech(stream), 60)
    await stream.aclose()

    kinds = [e.type for e in events]
    assert stt.SpeechEventType.INTERIM_TRANSCRIPT in kinds
    assert kinds.index(stt.SpeechEventType.INTERIM_TRANSCRIPT) < kinds.index(stt.SpeechEventType.FINAL_TRANSCRIPT)
    final = next(e for e in events if e.type is stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert "dentist" in final.alternatives[0].text.lower()


async def test_prerecorded_recognize(stack: OfflineStack, milk_pcm: bytes) -> None:
    dg = deepgram.STT(base_url=stack.deepgram.provider_url, api_key="offline")
    event = await dg.recognize(list(frames(milk_pcm)))
    assert event.type is stt.SpeechEventType.FINAL_TRANSCRIPT
    assert "milk" in event.alternatives[0].text.lower()


async def test_missing_api_key_header_is_rejected(stack: OfflineStack) -> None:
    from livekit.agents import utils

    async with utils.http_context.http_session().get(stack.deepgram.provider_url) as resp:
        assert resp.status == 401
        assert (await resp.json())["err_code"] == "INVALID_AUTH"


@pytest.mark.parametrize("filler_words", [False, True])
async def test_a_backchannel_is_a_filler_word_transcribed_only_on_request(
    stack: OfflineStack, filler_words: bool
) -> None:
    """Deepgram drops "uh-huh" & co. unless filler_words=true, so a backchannel yields no words to interrupt on."""
    pcm = await speak("uh-huh")
    dg = deepgram.STT(base_url=stack.deepgram.provider_url, api_key="offline", filler_words=filler_words)
    stream = dg.stream()
    for f in frames(pcm):
        stream.push_frame(f)
    events = await asyncio.wait_for(_collect_until_end_of_speech(stream), 30)
    await stream.aclose()

    finals = [e.alternatives[0].text for e in events if e.type is stt.SpeechEventType.FINAL_TRANSCRIPT]
    heard = " ".join(finals).lower().strip(" .")
    assert ("uh" in heard) if filler_words else heard == "", heard
