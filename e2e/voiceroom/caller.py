"""A Python participant in a real LiveKit room: it dispatches the agent, speaks espeak-ng audio on a mic track in
real time, listens to the agent's audio and reads the transcripts.

All timestamps are ``time.monotonic()`` seconds taken in this process, so differences are what a caller hears.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
from livekit import api, rtc

from voicefleet_offline import espeak

from .stack import LiveKitCredentials

SAMPLE_RATE = 48000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
VOICED_DB = -45.0  # a frame louder than this is speech (espeak peaks near -10 dBFS, the line is digital silence)
QUIET_MS = 600  # agent audio quiet this long means it stopped (espeak pauses ~300 ms at commas and full stops)
USER_TOPIC = "lk.transcription"


@dataclass(frozen=True)
class Utterance:
    """What the caller said and when: first and last voiced frame as they leave the mic's queue for the track."""

    text: str
    started_at: float
    ended_at: float


@dataclass(frozen=True)
class Turn:
    """One spoken request and the agent's spoken answer, timed at the caller."""

    utterance: Utterance
    agent_started_at: float
    agent_stopped_at: float

    @property
    def voice_to_voice(self) -> float:
        """End of the caller's speech → first non-silent frame of the agent's answer, seconds."""
        return self.agent_started_at - self.utterance.ended_at


@dataclass(frozen=True)
class Transcript:
    """A final transcript segment from the agent's ``lk.transcription`` text streams."""

    speaker: str  # "user" (what the agent's STT heard) or "agent" (what it said)
    text: str
    at: float


@dataclass
class AgentAudio:
    """Voiced spans of the agent's audio track: (start, end) of speech separated by ≥ QUIET_MS of silence."""

    spans: list[list[float]] = field(default_factory=list)
    last_frame_at: float = 0.0
    frames: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def feed(self, voiced: bool, at: float) -> None:
        self.frames += 1
        self.last_frame_at = at
        if voiced:
            if self.spans and at - self.spans[-1][1] < QUIET_MS / 1000:
                self.spans[-1][1] = at
            else:
                self.spans.append([at, at])
        self.changed.set()

    def speaking(self, now: float) -> bool:
        return bool(self.spans) and now - self.spans[-1][1] < QUIET_MS / 1000

    def onset_after(self, t: float) -> float | None:
        return next((s for s, _ in self.spans if s >= t), None)

    def stop_after(self, t: float, now: float, *, running: bool = False) -> float | None:
        """End of the first span still running at or starting after ``t``, once it has been quiet QUIET_MS.
        ``running``: a span is also running at ``t`` in a pause shorter than QUIET_MS (between two words of one
        reply), so its end may come before ``t``: a reply that never sounds again after ``t`` stopped there."""
        since = t - QUIET_MS / 1000 if running else t
        for _start, end in self.spans:
            if end >= since and (end < self.spans[-1][1] or now - end >= QUIET_MS / 1000):
                return end
        return None


def _db(samples: np.ndarray[Any, np.dtype[np.int16]]) -> float:
    if samples.size == 0:
        return -100.0
    rms = math.sqrt(float(np.mean(np.square(samples.astype(np.float64))))) / 32768.0
    return 20 * math.log10(rms + 1e-10)


class Caller:
    """One caller in one room. ``async with Caller.join(livekit, room) as caller: await caller.turn("...")``."""

    def __init__(self, livekit: LiveKitCredentials, room_name: str, identity: str = "caller") -> None:
        self.livekit = livekit
        self.room_name = room_name
        self.identity = identity
        self.room = rtc.Room()
        self.source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=100)
        self.agent_audio = AgentAudio()
        self.transcripts: list[Transcript] = []
        self.agent_identity: str | None = None
        self._speech: list[np.ndarray[Any, np.dtype[np.int16]]] = []
        self._speech_done: asyncio.Future[Utterance] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._transcript_event = asyncio.Event()

    @classmethod
    def join(cls, livekit: LiveKitCredentials, room_name: str, identity: str = "caller") -> Caller:
        return cls(livekit, room_name, identity)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # -- room ---------------------------------------------------------------------------------------------

    def _token(self) -> str:
        grants = api.VideoGrants(room_join=True, room=self.room_name, can_publish=True, can_subscribe=True)
        token = api.AccessToken(self.livekit.api_key, self.livekit.api_secret)
        return token.with_identity(self.identity).with_name(self.identity).with_grants(grants).to_jwt()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def connect(self) -> None:
        """Join (creating the room), publish the mic track and start feeding it silence in real time."""

        @self.room.on("track_subscribed")
        def _on_track(track: rtc.Track, _pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
            if (
                track.kind == rtc.TrackKind.KIND_AUDIO
                and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            ):
                self.agent_identity = participant.identity
                self._spawn(self._listen(track))

        self.room.register_text_stream_handler(USER_TOPIC, self._on_transcript)
        await self.room.connect(self.livekit.url, self._token())
        track = rtc.LocalAudioTrack.create_audio_track("mic", self.source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await self.room.local_participant.publish_track(track, options)
        self._spawn(self._microphone())

    async def dispatch(self, agent_name: str) -> None:
        """Explicit dispatch: ask livekit-server to send ``agent_name`` into this room."""
        async with api.LiveKitAPI(self.livekit.http_url, self.livekit.api_key, self.livekit.api_secret) as lk:
            await lk.agent_dispatch.create_dispatch(
                api.CreateAgentDispatchRequest(agent_name=agent_name, room=self.room_name)
            )

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.room.disconnect()
        await self.source.aclose()

    # -- speaking -----------------------------------------------------------------------------------------

    async def _microphone(self) -> None:
        """A real mic never stops: speech when there is some, silence otherwise, paced by the wall clock."""
        silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        started, n = time.monotonic(), 0
        first_voiced = last_voiced = 0.0
        while True:
            frame = silence
            if self._speech:
                frame = self._speech[0][:FRAME_SAMPLES]
                self._speech[0] = self._speech[0][FRAME_SAMPLES:]
                if frame.size < FRAME_SAMPLES:
                    frame = np.concatenate([frame, silence[: FRAME_SAMPLES - frame.size]])
            await self.source.capture_frame(rtc.AudioFrame(frame.tobytes(), SAMPLE_RATE, 1, FRAME_SAMPLES))
            # when this frame leaves the source's queue for the track (~100 ms of audio queue ahead of it): the
            # moment a real microphone, which holds nothing back, would have sent it
            now = time.monotonic() + max(0.0, self.source.queued_duration - FRAME_MS / 1000)
            if frame is not silence and _db(frame) > VOICED_DB:
                first_voiced = first_voiced or now
                last_voiced = now
            if self._speech and self._speech[0].size == 0:
                self._speech.pop(0)
                if self._speech_done is not None and not self._speech_done.done():
                    self._speech_done.set_result(Utterance("", first_voiced, last_voiced))
                first_voiced = last_voiced = 0.0
            n += 1
            await asyncio.sleep(max(0.0, started + n * FRAME_MS / 1000 - time.monotonic()))

    async def synthesize(self, text: str, voice: espeak.Voice | None = None) -> np.ndarray[Any, np.dtype[np.int16]]:
        pcm = await espeak.synthesize(text, sample_rate=SAMPLE_RATE, voice=voice)
        return np.frombuffer(pcm, dtype=np.int16).copy()

    async def say(self, text: str, *, voice: espeak.Voice | None = None, wait: bool = True) -> Utterance:
        """Speak ``text`` on the mic track in real time; returns when the audio has been sent (or, with
        ``wait=False``, as soon as it starts: await ``utterance_done()`` for the timings)."""
        audio = await self.synthesize(text, voice)
        loop = asyncio.get_running_loop()
        self._speech_done = loop.create_future()
        self._speech.append(audio)
        if not wait:
            return Utterance(text, time.monotonic(), 0.0)
        return await self.utterance_done(text)

    async def utterance_done(self, text: str = "") -> Utterance:
        assert self._speech_done is not None, "say() first"
        done = await self._speech_done
        return Utterance(text or done.text, done.started_at, done.ended_at)

    # -- listening ----------------------------------------------------------------------------------------

    async def _listen(self, track: rtc.Track) -> None:
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
        try:
            async for event in stream:
                samples = np.frombuffer(event.frame.data, dtype=np.int16)
                self.agent_audio.feed(_db(samples) > VOICED_DB, time.monotonic())
        finally:
            await stream.aclose()

    def _on_transcript(self, reader: rtc.TextStreamReader, _participant_identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            attributes = reader.info.attributes or {}
            if attributes.get("lk.transcription_final") == "false" or not text.strip():
                return
            # the agent streams both sides: a user transcript names the caller's own mic track
            own = self._is_own_track(attributes.get("lk.transcribed_track_id", ""))
            speaker = "user" if own else "agent"
            self.transcripts.append(Transcript(speaker, text.strip(), time.monotonic()))
            self._transcript_event.set()

        self._spawn(read())

    def _is_own_track(self, track_id: str) -> bool:
        return bool(track_id) and any(
            pub.sid == track_id for pub in self.room.local_participant.track_publications.values()
        )

    async def _until(self, predicate: Callable[[], Any], timeout: float, what: str, event: asyncio.Event) -> Any:
        deadline = time.monotonic() + timeout
        while not (result := predicate()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{what}: not within {timeout:.1f}s")
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, 0.1))
        return result

    async def wait_agent_joined(self, timeout: float = 30.0) -> str:
        """The agent's identity, once its audio track is subscribed."""
        joined: str = await self._until(lambda: self.agent_identity, timeout, "agent joined", self.agent_audio.changed)
        return joined

    async def wait_agent_speech(self, after: float, timeout: float = 20.0) -> float:
        """When the agent's audio turned non-silent, at or after ``after``."""
        onset: float = await self._until(
            lambda: self.agent_audio.onset_after(after), timeout, "agent audio", self.agent_audio.changed
        )
        return onset

    async def wait_agent_quiet(self, after: float, timeout: float = 30.0, *, running: bool = False) -> float:
        """When the agent's audio (a span running at or after ``after``) went silent for good; ``running``: the
        span the agent was in at ``after`` counts even when ``after`` fell in a pause between its words."""
        end: float = await self._until(
            lambda: self.agent_audio.stop_after(after, time.monotonic(), running=running),
            timeout,
            "agent audio stop",
            self.agent_audio.changed,
        )
        return end

    async def wait_transcript(
        self, speaker: str, after: float = 0.0, timeout: float = 20.0, contains: str = ""
    ) -> Transcript:
        """The first final transcript of ``speaker`` ("user"/"agent") received after ``after``."""

        def find() -> Transcript | None:
            return next(
                (t for t in self.transcripts
                 if t.speaker == speaker and t.at >= after and contains.lower() in t.text.lower()),
                None,
            )  # fmt: skip

        found: Transcript = await self._until(find, timeout, f"{speaker} transcript", self._transcript_event)
        return found

    async def greeting(self, timeout: float = 30.0) -> Turn:
        """Wait for the agent to join and finish its greeting."""
        await self.wait_agent_joined(timeout)
        start = await self.wait_agent_speech(0.0, timeout)
        end = await self.wait_agent_quiet(start, timeout)
        return Turn(Utterance("", start, start), start, end)

    async def turn(self, text: str, *, timeout: float = 30.0, voice: espeak.Voice | None = None) -> Turn:
        """Say ``text`` and wait for the agent's whole spoken answer."""
        utterance = await self.say(text, voice=voice)
        start = await self.wait_agent_speech(utterance.ended_at, timeout)
        end = await self.wait_agent_quiet(start, timeout)
        return Turn(utterance, start, end)
