"""The caller's screen share, received: the agent subscribes to the caller's screen-share video track, reads its
frames, logs the first one and tells the page how many it got (contract.SCREEN_TOPIC). What the agent does with
the frames (a multimodal model) is for later; this is the receiving end."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from livekit import rtc

from voicefleet_agent.contract import SCREEN_TOPIC
from voicefleet_agent.tasklist import TextSender

log = logging.getLogger(__name__)

REPORT_EVERY_SECONDS = 2.0


@dataclass
class FrameCounter:
    """Frames of one screen-share track; says when the page is due a report (the first frame, then every
    `every` seconds, and the end)."""

    every: float = REPORT_EVERY_SECONDS
    frames: int = 0
    width: int = 0
    height: int = 0
    _last_report: float | None = field(default=None, repr=False)

    def frame(self, width: int, height: int, now: float) -> str | None:
        self.frames += 1
        self.width, self.height = width, height
        if self._last_report is not None and now - self._last_report < self.every:
            return None
        self._last_report = now
        return self.report(ended=False)

    def report(self, *, ended: bool) -> str:
        return json.dumps({"frames": self.frames, "width": self.width, "height": self.height, "ended": ended})


class ScreenShareWatcher:
    """Reads the screen-share video of one participant (the session's caller) while it is published."""

    def __init__(
        self, room: rtc.Room, caller: str, sender: TextSender, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._room = room
        self._caller = caller
        self._sender = sender
        self._clock = clock
        self._readers: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        self._room.on("track_published", self._on_published)
        self._room.on("track_subscribed", self._on_subscribed)
        participant = self._room.remote_participants.get(self._caller)
        if participant is None:
            return
        for publication in participant.track_publications.values():
            self._on_published(publication, participant)
            if publication.track is not None:
                self._on_subscribed(publication.track, publication, participant)

    def _is_screen(self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> bool:
        return (
            participant.identity == self._caller
            and publication.source == rtc.TrackSource.SOURCE_SCREENSHARE
            and publication.kind == rtc.TrackKind.KIND_VIDEO
        )

    def _on_published(self, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if self._is_screen(publication, participant) and not publication.subscribed:
            publication.set_subscribed(True)  # whatever the room's auto-subscribe setting

    def _on_subscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if not self._is_screen(publication, participant) or publication.sid in self._readers:
            return
        reader = asyncio.create_task(self._read(track, publication.sid), name=f"voicefleet-screen-{publication.sid}")
        self._readers[publication.sid] = reader
        reader.add_done_callback(lambda _: self._readers.pop(publication.sid, None))

    async def _read(self, track: rtc.Track, sid: str) -> None:
        counter = FrameCounter()
        stream = rtc.VideoStream(track)
        try:
            async for event in stream:
                report = counter.frame(event.frame.width, event.frame.height, self._clock())
                if counter.frames == 1:
                    log.info("screen share: first video frame from %s (%dx%d, track %s)", self._caller,
                             counter.width, counter.height, sid)  # fmt: skip
                if report is not None:
                    await self._send(report)
        finally:
            await stream.aclose()
            log.info("screen share from %s ended: %d video frames received (track %s)", self._caller,
                     counter.frames, sid)  # fmt: skip
            if counter.frames:
                await asyncio.shield(self._send(counter.report(ended=True)))

    async def _send(self, report: str) -> None:
        try:
            await self._sender.send_text(report, topic=SCREEN_TOPIC, compress=False)
        except (RuntimeError, ConnectionError) as exc:
            log.warning("screen share report not sent: %s", exc)

    async def aclose(self) -> None:
        readers = list(self._readers.values())
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
