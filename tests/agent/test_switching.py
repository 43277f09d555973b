"""switching.py: a live stream moves to the fleet's provider at the next utterance boundary, losing no audio."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from agent_testkit import ScriptedLLM, make_config, provider, say
from livekit import rtc
from livekit.agents import APIConnectOptions, llm, stt, tts, utils
from livekit.agents.language import LanguageCode
from livekit.agents.llm import ChatContext
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr
from livekit.agents.vad import VAD

from voicefleet_agent.fleet_client import FleetFollower, FleetTarget
from voicefleet_agent.providers import build_pipeline
from voicefleet_agent.session import follow_fleet
from voicefleet_agent.switching import SwitchingLLM, SwitchingSTT, SwitchingTTS, active_first

FRAME_SAMPLES = 160


def frame(tag: int) -> rtc.AudioFrame:
    """A 10 ms frame whose first sample carries ``tag``: the scripted STT names the frames it heard."""
    data = bytearray(FRAME_SAMPLES * 2)
    data[0:2] = tag.to_bytes(2, "little", signed=True)
    return rtc.AudioFrame(bytes(data), sample_rate=16000, num_channels=1, samples_per_channel=FRAME_SAMPLES)


def tag_of(f: rtc.AudioFrame) -> int:
    return int.from_bytes(bytes(f.data.cast("B")[0:2]), "little", signed=True)


class ScriptedSTT(stt.STT[Any]):
    """Our test double of the framework's STT interface: tag 1 starts speech, tag -1 ends the utterance with a
    final transcript naming the provider and every frame tag it heard."""

    def __init__(self, name: str) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=False))
        self.name = name
        self.heard: list[int] = []

    @property
    def provider(self) -> str:
        return self.name

    async def _recognize_impl(
        self, buffer: utils.AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions
    ) -> stt.SpeechEvent:
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=self.name)],
        )

    def stream(
        self, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> stt.RecognizeStream:
        return _ScriptedStream(self, conn_options)


class _ScriptedStream(stt.RecognizeStream):
    def __init__(self, owner: ScriptedSTT, conn_options: APIConnectOptions) -> None:
        super().__init__(stt=owner, conn_options=conn_options)
        self.owner = owner

    async def _run(self) -> None:
        utterance: list[int] = []
        async for data in self._input_ch:
            if not isinstance(data, rtc.AudioFrame):
                continue
            tag = tag_of(data)
            self.owner.heard.append(tag)
            if tag == 1:
                self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH))
            if tag == -1:
                text = f"{self.owner.name}:{','.join(map(str, utterance))}"
                self._event_ch.send_nowait(
                    stt.SpeechEvent(
                        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                        alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text)],
                    )
                )
                self._event_ch.send_nowait(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))
                utterance = []
            elif tag > 0:
                utterance.append(tag)


async def _collect(stream: stt.RecognizeStream, into: list[str]) -> None:
    async for event in stream:
        if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
            into.append(event.alternatives[0].text)


class ScriptedTTS(tts.TTS[Any]):
    """Our test double of the framework's TTS interface: 20 ms of silence per utterance, and a record of the text."""

    def __init__(self, name: str) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=16000, num_channels=1)
        self.name = name
        self.spoken: list[str] = []

    @property
    def provider(self) -> str:
        return self.name

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        self.spoken.append(text)
        return _Silence(tts=self, input_text=text, conn_options=conn_options)


class _Silence(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(request_id="r", sample_rate=16000, num_channels=1, mime_type="audio/pcm")
        output_emitter.push(bytes(640))
        output_emitter.flush()


def test_active_first() -> None:
    assert active_first(["a", "b", "c"], "b") == ["b", "a", "c"]
    assert active_first(["a", "b"], None) == ["a", "b"]
    assert active_first(["a", "b"], "zzz") == ["a", "b"]


async def test_switch_waits_for_the_utterance_to_end_and_drops_no_audio() -> None:
    primary, secondary = ScriptedSTT("deepgram"), ScriptedSTT("whisper")
    switcher = SwitchingSTT([("deepgram", primary), ("whisper", secondary)], adapter=lambda ordered: ordered[0])
    stream = switcher.stream()
    finals: list[str] = []
    reader = asyncio.create_task(_collect(stream, finals))
    for tag in (1, 2, 3):
        stream.push_frame(frame(tag))
    await asyncio.sleep(0.05)
    assert switcher.switch("whisper")
    for tag in (4, 5, -1):  # the utterance in progress stays with deepgram
        stream.push_frame(frame(tag))
    await asyncio.sleep(0.05)
    for tag in (1, 6, 7, -1):  # the next one goes to whisper
        stream.push_frame(frame(tag))
    await asyncio.sleep(0.05)
    stream.end_input()
    await asyncio.wait_for(reader, 5)
    await stream.aclose()
    assert finals == ["deepgram:1,2,3,4,5", "whisper:1,6,7"]
    assert primary.heard == [1, 2, 3, 4, 5, -1]
    assert secondary.heard == [1, 6, 7, -1]
    assert switcher.provider == "whisper"


async def test_switch_between_utterances_is_immediate_and_back_again() -> None:
    a, b = ScriptedSTT("a"), ScriptedSTT("b")
    switcher = SwitchingSTT([("a", a), ("b", b)], adapter=lambda ordered: ordered[0])
    stream = switcher.stream()
    finals: list[str] = []
    reader = asyncio.create_task(_collect(stream, finals))
    for target, tags in (("b", (1, 2, -1)), ("a", (1, 3, -1)), ("b", (1, 4, -1))):
        switcher.switch(target)
        await asyncio.sleep(0.02)
        for tag in tags:
            stream.push_frame(frame(tag))
        await asyncio.sleep(0.05)
    stream.end_input()
    await asyncio.wait_for(reader, 5)
    await stream.aclose()
    assert finals == ["b:1,2", "a:1,3", "b:1,4"]


async def test_a_hanging_utterance_switches_after_max_hold() -> None:
    a, b = ScriptedSTT("a"), ScriptedSTT("b")
    switcher = SwitchingSTT([("a", a), ("b", b)], adapter=lambda ordered: ordered[0], max_hold_s=0.1)
    stream = switcher.stream()
    finals: list[str] = []
    reader = asyncio.create_task(_collect(stream, finals))
    stream.push_frame(frame(1))  # speech starts and never ends on "a"
    await asyncio.sleep(0.05)
    switcher.switch("b")
    await asyncio.sleep(0.3)
    for tag in (1, 9, -1):
        stream.push_frame(frame(tag))
    await asyncio.sleep(0.05)
    stream.end_input()
    await asyncio.wait_for(reader, 5)
    await stream.aclose()
    assert finals == ["b:1,9"]


def test_unknown_provider_is_ignored() -> None:
    switcher = SwitchingSTT([("a", ScriptedSTT("a"))], adapter=lambda ordered: ordered[0])
    assert not switcher.switch("nope")
    assert switcher.active == "a"


@pytest.mark.parametrize("active", ["a", "b"])
async def test_default_adapter_is_a_fallback_adapter_active_first(active: str) -> None:
    a, b = ScriptedSTT("a"), ScriptedSTT("b")
    switcher = SwitchingSTT([("a", a), ("b", b)], active=active)
    current = switcher.current
    assert isinstance(current, stt.FallbackAdapter)
    assert current._stt_instances[0] is (a if active == "a" else b)
    await switcher.aclose()


async def test_llm_switches_per_request() -> None:
    a, b = ScriptedLLM(say("from a")), ScriptedLLM(say("from b"))
    switcher = SwitchingLLM([("a", a), ("b", b)], adapter=lambda ordered: ordered[0])
    assert switcher.provider == switcher.current.provider
    assert switcher.switch("b") and not switcher.switch("b") and not switcher.switch("zzz")
    ctx = ChatContext.empty()
    ctx.add_message(role="user", content="hi")
    async with switcher.chat(chat_ctx=ctx) as stream:
        text = "".join([chunk.delta.content or "" async for chunk in stream if chunk.delta])
    assert text == "from b"
    assert len(b.requests) == 1 and not a.requests
    assert isinstance(SwitchingLLM([("a", a), ("b", b)], active="b").current, llm.FallbackAdapter)


async def test_tts_switches_at_the_next_utterance_and_the_one_speaking_finishes_where_it_started() -> None:
    a, b = ScriptedTTS("a"), ScriptedTTS("b")
    switcher = SwitchingTTS([("a", a), ("b", b)], adapter=lambda ordered: ordered[0])
    speaking = switcher.synthesize("first")
    assert switcher.switch("b") and not switcher.switch("b") and not switcher.switch("zzz")
    following = switcher.synthesize("second")

    async with speaking, following:
        first, second = await speaking.collect(), await following.collect()

    assert (a.spoken, b.spoken) == (["first"], ["second"])
    assert first.duration > 0 and second.duration > 0
    assert switcher.provider == "b"
    assert isinstance(SwitchingTTS([("a", a), ("b", b)], active="b").current, tts.FallbackAdapter)


async def test_closing_a_stream_leaves_no_task_behind_even_mid_switch() -> None:
    a, b = ScriptedSTT("a"), ScriptedSTT("b")
    switcher = SwitchingSTT([("a", a), ("b", b)], adapter=lambda ordered: ordered[0])

    async def hang_up_mid_switch() -> list[str]:
        stream = switcher.stream()
        reader = asyncio.create_task(_collect(stream, []))
        for tag in (1, 2):
            stream.push_frame(frame(tag))
        await _until(lambda: a.heard == [1, 2])
        switcher.switch("b")  # mid-utterance: the switch waits, a pump runs
        stream.push_frame(frame(-1))  # ends the utterance: the old stream drains while the new one opens
        stream.push_frame(frame(1))
        await stream.aclose()  # the caller hangs up right then
        await asyncio.wait_for(reader, 5)
        return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("SwitchingSTT.")]

    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        leftover = await hang_up_mid_switch()
        for _ in range(20):  # give an orphan the chance to run and fail
            await asyncio.sleep(0.01)
        gc.collect()  # the stream is gone: an exception nobody retrieved is reported now
    finally:
        loop.set_exception_handler(previous)

    assert leftover == []
    assert [c.get("exception") for c in errors] == []
    await switcher.aclose()


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def test_a_policy_follower_gets_switching_models_led_by_the_fleet(provider_keys: dict[str, str], vad: VAD) -> None:
    config = make_config(
        stt=(provider("deepgram", "deepgram", "nova-3"), provider("whisper", "whisper", "whisper-1")),
        llm=(provider("openai", "openai", "gpt-4o-mini"), provider("openai-b", "openai", "gpt-4o-mini")),
        tts=(provider("cartesia", "cartesia", "sonic-3"), provider("cartesia-b", "cartesia", "sonic-3")),
        policy_name="default",
    )
    pipeline = build_pipeline(config, vad=vad, active={"stt": "whisper", "llm": "openai-b", "tts": "cartesia-b"})
    assert isinstance(pipeline.stt.model, SwitchingSTT) and pipeline.stt.model.active == "whisper"
    assert isinstance(pipeline.llm.model, SwitchingLLM) and pipeline.llm.model.active == "openai-b"
    assert isinstance(pipeline.tts.model, SwitchingTTS) and pipeline.tts.model.active == "cartesia-b"
    plain = build_pipeline(config.model_copy(update={"policy_name": None}), vad=vad)
    assert isinstance(plain.stt.model, stt.FallbackAdapter)
    assert isinstance(plain.tts.model, tts.FallbackAdapter)

    follower = FleetFollower(FleetTarget("http://127.0.0.1:1", "ns", "default", "me"))
    unfollow = follow_fleet(pipeline, follower)
    for listener in list(follower._listeners):
        listener(2, {"stt": "deepgram", "llm": "openai", "tts": "cartesia"})
    assert pipeline.stt.model.active == "deepgram" and pipeline.llm.model.active == "openai"
    assert pipeline.tts.model.active == "cartesia"
    pipeline.stt.members[0].instance.emit("error", object())
    assert follower._errors == {"deepgram": 1}
    unfollow()
    assert not follower._listeners
    pipeline.stt.members[0].instance.emit("error", object())
    assert follower._errors == {"deepgram": 1}
