"""Live STT streams through a fleet flip: each stream is the agent's ``SwitchingSTT`` over the real Deepgram and
Whisper plugins on the offline servers, following the real operator through the agent's ``FleetFollower``, while a
caller repeats an utterance (2 s of speech, 1 s of silence) in real time. Deepgram is faulted mid-call, the fleet
moves to Whisper, Deepgram recovers and the fleet fails back. A stream that raises or stops transcribing is a
dropped call."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from livekit import rtc
from livekit.agents import stt, utils
from livekit.plugins import deepgram, openai, silero

from failover.harness import OFFLINE_KEY, FleetPass
from voicefleet_agent.fleet_client import FleetFollower, FleetTarget
from voicefleet_agent.switching import SwitchingRecognizeStream, SwitchingSTT
from voicefleet_offline.espeak import synthesize

RATE = 16000
FRAME = RATE // 100
PHRASE = "Add buy milk to my tasks for tomorrow morning"


@dataclass(frozen=True)
class Heard:
    at: float
    text: str
    provider: str


@dataclass
class Call:
    """One live stream and what it transcribed, by provider."""

    switcher: SwitchingSTT
    stream: SwitchingRecognizeStream
    heard: list[Heard] = field(default_factory=list)
    error: BaseException | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def count(self, provider: str, after: float) -> int:
        return sum(h.at > after and h.provider == provider for h in self.heard)

    @property
    def alive(self) -> bool:
        return self.error is None and all(not t.done() for t in self.tasks)


async def _wait(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def _call(offline_env: dict[str, str], speech: bytes, vad: Any, follower: FleetFollower) -> Call:
    dg = deepgram.STT(model="nova-3", base_url=offline_env["DEEPGRAM_BASE_URL"], api_key=OFFLINE_KEY)
    wh = openai.STT(model="whisper-1", base_url=offline_env["OPENAI_BASE_URL"], api_key=OFFLINE_KEY, use_realtime=False)
    switcher = SwitchingSTT([("deepgram", dg), ("whisper", wh)], vad=vad, active=follower.active.get("stt"))

    def follow(_generation: int, active: dict[str, str]) -> None:
        switcher.switch(active.get("stt", switcher.active))

    follower.subscribe(follow)
    stream = switcher.stream()
    assert isinstance(stream, SwitchingRecognizeStream)
    call = Call(switcher, stream)
    silence = bytes(2 * RATE)

    async def speak() -> None:
        while True:
            for chunk in (speech, silence):
                for i in range(0, len(chunk), FRAME * 2):
                    data = chunk[i : i + FRAME * 2].ljust(FRAME * 2, b"\0")
                    stream.push_frame(rtc.AudioFrame(data, RATE, 1, FRAME))
                    await asyncio.sleep(0.01)

    async def listen() -> None:
        try:
            async for event in stream:
                if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT and event.alternatives[0].text.strip():
                    call.heard.append(Heard(time.time(), event.alternatives[0].text, stream._current_name))
        except BaseException as error:
            call.error = error
            raise

    call.tasks = [asyncio.create_task(speak()), asyncio.create_task(listen())]
    return call


async def through_flip(
    fleet_url: str,
    namespace: str,
    policy: str,
    offline_env: dict[str, str],
    fault: Callable[[str], Any],
    calls: int,
    fleet_pass: FleetPass | None = None,
) -> dict[str, Any]:
    """Run ``calls`` live streams through fault → flip → recovery → failback; returns what happened."""
    speech = await synthesize(PHRASE, sample_rate=RATE)
    vad = silero.VAD.load()
    target = FleetTarget(fleet_url, namespace, policy, f"live-{time.time_ns()}")
    if fleet_pass is not None:
        target = replace(target, voiceagent=fleet_pass.voiceagent, token_file=str(fleet_pass.token_file))
    follower = FleetFollower(target, wait_s=5)
    follower.start()
    live: list[Call] = []
    result: dict[str, Any] = {"calls": calls}
    async with utils.http_context.open():
        try:
            await follower.wait_for(lambda f: f.active.get("stt") == "deepgram", timeout=60)
            live = [_call(offline_env, speech, vad, follower) for _ in range(calls)]
            await _wait(
                "a transcript from deepgram in every call", lambda: all(c.count("deepgram", 0) for c in live), 60
            )
            fault("hang")
            await follower.wait_for(lambda f: f.active.get("stt") == "whisper", timeout=30)
            flipped = time.time()
            await _wait(
                "two whisper transcripts per call", lambda: all(c.count("whisper", flipped) >= 2 for c in live), 60
            )
            fault("ok")
            await follower.wait_for(lambda f: f.active.get("stt") == "deepgram", timeout=60)
            back = time.time()
            await _wait(
                "a deepgram transcript per call again", lambda: all(c.count("deepgram", back) for c in live), 60
            )
        finally:
            fault("ok")
            result["dropped"] = sum(not c.alive for c in live)
            result["transcripts"] = [[f"{h.provider}: {h.text}" for h in c.heard] for c in live]
            result["switches"] = [c.stream.switches for c in live]
            for c in live:
                c.tasks[0].cancel()
                c.stream.end_input()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(c.tasks[1], 30)
                await c.stream.aclose()
                await c.switcher.aclose()
            await follower.aclose()
    return result
