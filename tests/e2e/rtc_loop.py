"""Run inside an agent pod (python -): two participants in one room, one publishes a tone, the other counts the
audio frames it receives. Uses the pod's own LiveKit URL and credentials (what the operator rendered). Prints JSON."""

import asyncio
import json
import math
import os

from livekit import api, rtc

URL = os.environ["LIVEKIT_URL"]
RATE, SAMPLES = 48000, 480


def token(identity: str) -> str:
    grants = api.VideoGrants(room_join=True, room=f"rtc-loop-{os.getpid()}")
    key, secret = os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"]
    return api.AccessToken(key, secret).with_identity(identity).with_grants(grants).to_jwt()


async def main() -> None:
    speaker, listener = rtc.Room(), rtc.Room()
    enough: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    tasks: list[asyncio.Task[None]] = []

    async def count(track: rtc.Track) -> None:
        frames = 0
        async for _ in rtc.AudioStream(track):
            frames += 1
            if frames >= 50 and not enough.done():
                enough.set_result(frames)

    @listener.on("track_subscribed")
    def subscribed(track: rtc.Track, *_: object) -> None:
        tasks.append(asyncio.ensure_future(count(track)))

    await listener.connect(URL, token("listener"))
    await speaker.connect(URL, token("speaker"))
    source = rtc.AudioSource(RATE, 1)
    await speaker.local_participant.publish_track(rtc.LocalAudioTrack.create_audio_track("tone", source))

    async def play() -> None:
        n = 0
        while True:
            frame = rtc.AudioFrame.create(RATE, 1, SAMPLES)
            data = frame.data
            for i in range(SAMPLES):
                data[i] = int(8000 * math.sin(2 * math.pi * 440 * (n + i) / RATE))
            n += SAMPLES
            await source.capture_frame(frame)

    player = asyncio.ensure_future(play())
    frames = await asyncio.wait_for(enough, 60)
    player.cancel()
    for task in tasks:
        task.cancel()
    await speaker.disconnect()
    await listener.disconnect()
    print(json.dumps({"frames": frames, "url": URL}))


if __name__ == "__main__":
    asyncio.run(main())
