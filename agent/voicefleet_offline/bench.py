"""``python -m voicefleet_offline.bench``: latency of the offline stack as the real plugins see it.

Prints a Markdown table (median and max over ``--runs``). A benchmark, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator

import numpy as np
from livekit import rtc
from livekit.agents import stt, utils
from livekit.agents.llm import ChatContext, function_tool
from livekit.plugins import cartesia, deepgram, openai

from . import espeak
from .audio import for_whisper, frame_db, pcm16_from_bytes
from .stack import OfflineStack
from .whisper import get_engine

RATE = 16000
UTTERANCES = ("Add buy milk to my tasks", "What is on my list for tomorrow?", "Mark call the dentist as done")
REPLY = "Okay, I've added buy milk to your tasks. Anything else?"


def _frames(pcm: bytes, ms: int = 20) -> Iterator[rtc.AudioFrame]:
    step = RATE * ms // 1000 * 2
    for i in range(0, len(pcm), step):
        chunk = pcm[i : i + step].ljust(step, b"\0")
        yield rtc.AudioFrame(chunk, RATE, 1, len(chunk) // 2)


@function_tool
async def add_task(title: str, due: str | None = None) -> str:
    """Add a task to the user's list."""
    return "ok"


async def stt_final_after_speech(stack: OfflineStack, pcm: bytes) -> float:
    """Seconds from the last voiced 20 ms frame (audio pushed in real time) to the final transcript."""
    dg = deepgram.STT(base_url=stack.deepgram.provider_url, api_key="offline")
    stream = dg.stream()
    done = asyncio.Event()
    final_at = 0.0

    async def read() -> None:
        nonlocal final_at
        async for ev in stream:
            if ev.type is stt.SpeechEventType.FINAL_TRANSCRIPT:
                final_at = time.perf_counter()
                done.set()
                return

    reader = asyncio.create_task(read())
    all_frames = list(_frames(pcm + b"\0" * (RATE * 2 * 2)))
    last_voiced = max(i for i, f in enumerate(all_frames) if frame_db(np.frombuffer(f.data, dtype=np.int16)) > -45)
    start = time.perf_counter()
    speech_end = 0.0
    for i, frame in enumerate(all_frames):
        await asyncio.sleep(max(0.0, start + i * 0.02 - time.perf_counter()))
        stream.push_frame(frame)
        if i == last_voiced:
            speech_end = time.perf_counter()
        if done.is_set():
            break
    await asyncio.wait_for(done.wait(), 10)
    reader.cancel()
    await stream.aclose()
    return final_at - speech_end


async def whisper_decode(pcm: bytes) -> float:
    audio = for_whisper(pcm16_from_bytes(pcm), RATE)
    t0 = time.perf_counter()
    await get_engine().transcribe(audio)
    return time.perf_counter() - t0


async def openai_stt(stack: OfflineStack, pcm: bytes) -> float:
    model = openai.STT(model="whisper-1", base_url=stack.openai.provider_url, api_key="offline")
    t0 = time.perf_counter()
    await model.recognize(list(_frames(pcm)))
    return time.perf_counter() - t0


async def llm_ttft(stack: OfflineStack, text: str) -> float:
    model = openai.LLM(model="gpt-4o-mini", base_url=stack.openai.provider_url, api_key="offline")
    ctx = ChatContext.empty()
    ctx.add_message(role="user", content=text)
    t0 = time.perf_counter()
    first = 0.0
    async with model.chat(chat_ctx=ctx, tools=[add_task]) as stream:
        async for chunk in stream:
            if not first and chunk.delta and (chunk.delta.content or chunk.delta.tool_calls):
                first = time.perf_counter() - t0
    await model.aclose()
    return first


async def tts_ttfb_bytes(stack: OfflineStack) -> float:
    tts = cartesia.TTS(base_url=stack.cartesia.provider_url, api_key="offline")
    t0 = time.perf_counter()
    async for _ in tts.synthesize(REPLY):
        return time.perf_counter() - t0
    return float("nan")


async def tts_ttfb_ws(tts: cartesia.TTS) -> float:
    stream = tts.stream()
    t0 = time.perf_counter()
    stream.push_text(REPLY)
    stream.end_input()
    first = float("nan")
    async for _ in stream:
        if first != first:
            first = time.perf_counter() - t0
    await stream.aclose()
    return first


async def _series(runs: int, fn: Callable[[int], Awaitable[float]]) -> list[float]:
    return [await fn(i) for i in range(runs)]


def _row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"| {name} | {statistics.median(ms):.0f} | {max(ms):.0f} | {len(ms)} |"


async def main(runs: int) -> None:
    await get_engine().warm_up()
    speech = [await espeak.synthesize(u, sample_rate=RATE) for u in UTTERANCES]
    async with OfflineStack.create() as stack, utils.http_context.open():
        rows = [
            _row(
                "STT final after the last voiced frame (Deepgram WS, real-time audio, 300 ms endpointing)",
                await _series(runs, lambda i: stt_final_after_speech(stack, speech[i % len(speech)])),
            ),
            _row(
                "Whisper tiny.en decode of the same utterances, alone",
                await _series(runs, lambda i: whisper_decode(speech[i % 3])),
            ),
            _row(
                "OpenAI STT whole request (POST /audio/transcriptions, same clips)",
                await _series(runs, lambda i: openai_stt(stack, speech[i % len(speech)])),
            ),
            _row(
                "LLM time to first token/tool call (streamed)",
                await _series(runs, lambda i: llm_ttft(stack, "add buy milk to my tasks")),
            ),
            _row("TTS time to first audio, POST /tts/bytes", await _series(runs, lambda i: tts_ttfb_bytes(stack))),
        ]
        tts = cartesia.TTS(base_url=stack.cartesia.provider_url, api_key="offline")
        rows.append(_row("TTS time to first audio, WebSocket", await _series(runs, lambda i: tts_ttfb_ws(tts))))
        await tts.aclose()
    print("| measure | median ms | max ms | runs |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m voicefleet_offline.bench")
    parser.add_argument("--runs", type=int, default=9)
    asyncio.run(main(parser.parse_args().runs))
