"""Barge-in without the framework's two waits: the VAD's report of speech one window late, and the agent's audio
queue left to play after a pause.

1. The VAD reports each window's inference before it updates its speech state, so the window that starts speech
   is reported as silence, and the framework's pause (an inference whose speech duration reaches the interruption
   minimum) comes a window (32 ms) after the VAD knew. ``EagerVAD`` follows every start of speech with an inference
   event carrying the state that start established: the pause comes with the window that started speech.
2. ``pause()`` of the room's audio output leaves the source's queue (up to 200 ms) playing until the output's
   forwarding loop comes round, which waits for room for its next 50 ms frame first: up to 50 ms more audio after
   the pause. ``install()`` makes a pause drop that queue at once, with the same bookkeeping the loop does (so a
   false alarm resumes where it would have), while more of the reply is still to come; a reply's tail already in
   the queue plays out as before (its end is what tells the session that the reply was spoken).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from livekit.agents import vad
from livekit.agents.voice.room_io._output import _ParticipantAudioOutput

_installed = False


class EagerVAD(vad.VAD):
    """``inner``'s events, each start of speech followed by the inference event that state implies."""

    def __init__(self, inner: vad.VAD) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner = inner
        self._label = inner._label

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def provider(self) -> str:
        return self.inner.provider

    @property
    def min_silence_duration(self) -> float | None:  # read by the framework's endpointing when present
        return getattr(self.inner, "min_silence_duration", None)

    def stream(self) -> vad.VADStream:
        return _EagerStream(self, self.inner.stream())


def eager_inference(start: vad.VADEvent) -> vad.VADEvent:
    """The inference event right after ``start``: speaking, with the speech that started it."""
    return replace(
        start,
        type=vad.VADEventType.INFERENCE_DONE,
        frames=[],
        inference_duration=0.0,
        speaking=True,
        silence_duration=0.0,
        raw_accumulated_silence=0.0,
        raw_accumulated_speech=start.speech_duration,
    )


class _EagerStream(vad.VADStream):
    def __init__(self, eager: EagerVAD, inner: vad.VADStream) -> None:
        self._inner = inner
        self._probability = 0.0
        super().__init__(eager)

    # frames go straight to the inner stream: no extra hop on the audio path
    def push_frame(self, frame: Any) -> None:
        self._inner.push_frame(frame)

    def flush(self) -> None:
        self._inner.flush()

    def end_input(self) -> None:
        self._inner.end_input()

    async def aclose(self) -> None:
        await self._inner.aclose()
        await super().aclose()

    async def _main_task(self) -> None:
        async for event in self._inner:
            self._event_ch.send_nowait(event)
            if event.type == vad.VADEventType.INFERENCE_DONE:
                self._probability = event.probability
            elif event.type == vad.VADEventType.START_OF_SPEECH:
                self._event_ch.send_nowait(replace(eager_inference(event), probability=self._probability))


def install() -> None:
    """Make every room audio output of this process drop its queued audio the moment it is paused."""
    global _installed
    if _installed:
        return
    _installed = True
    original = _ParticipantAudioOutput.pause

    def pause_at_once(self: _ParticipantAudioOutput) -> None:
        original(self)
        if self._audio_buf.empty():
            return  # the reply's tail is all in the source: it plays out, and its end is reported as before
        queued = self._audio_source.queued_duration
        if queued <= 0:
            return
        # what the forwarding loop does for a paused output, done now instead of after its next frame found room
        # (a frame it is handing over meanwhile is counted as played: at most one frame, 50 ms, of playhead)
        self._source_discarded_duration += queued
        self._report_run(
            offset=self._source_pushed_duration - queued,
            ended_at=time.time(),
            resumes_at=self._source_pushed_duration,
        )
        self._audio_source.clear_queue()

    pause_at_once.__wrapped__ = original  # type: ignore[attr-defined]
    _ParticipantAudioOutput.pause = pause_at_once  # type: ignore[method-assign]
