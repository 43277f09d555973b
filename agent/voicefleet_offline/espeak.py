"""Speech synthesis with espeak-ng, resampled and encoded by sox, streamed as it is produced."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from .audio import read_wav, resample, to_float

ENCODINGS: dict[str, tuple[str, int]] = {
    "pcm_s16le": ("signed-integer", 16),
    "pcm_f32le": ("floating-point", 32),
    "pcm_mulaw": ("u-law", 8),
    "pcm_alaw": ("a-law", 8),
}
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
BASE_WPM = 175


class SynthesisError(RuntimeError):
    pass


def espeak_binary() -> str | None:
    return shutil.which("espeak-ng") or shutil.which("espeak")


def available() -> bool:
    return espeak_binary() is not None


@dataclass(frozen=True)
class Voice:
    """An espeak voice ("en-us", "en-gb+f3") and a speed factor (1.0 = 175 words per minute)."""

    name: str = "en-us"
    speed: float = 1.0

    @property
    def wpm(self) -> int:
        return max(80, min(450, round(BASE_WPM * self.speed)))


def voice_for(language: str | None, voice_id: str | None = None, speed: float = 1.0) -> Voice:
    """Cartesia voice ids are opaque; ``espeak:<voice>`` picks an espeak voice, otherwise the language decides."""
    if voice_id and voice_id.startswith("espeak:"):
        return Voice(voice_id.split(":", 1)[1], speed)
    lang = (language or "en").lower()
    return Voice("en-us" if lang in ("en", "en-us") else lang, speed)


def sample_width(encoding: str) -> int:
    return ENCODINGS[encoding][1] // 8


async def stream_speech(
    text: str, *, sample_rate: int, encoding: str = "pcm_s16le", voice: Voice | None = None, chunk_ms: int = 100
) -> AsyncIterator[bytes]:
    """Yield raw audio for `text` as espeak produces it; every chunk holds whole samples."""
    if encoding not in ENCODINGS:
        raise SynthesisError(f"unsupported encoding {encoding!r}")
    espeak = espeak_binary()
    if espeak is None:
        raise SynthesisError("espeak-ng is not installed (apt-get install espeak-ng)")
    voice = voice or Voice()
    if not text.strip():
        return
    sox = shutil.which("sox")
    width = sample_width(encoding)
    chunk_bytes = max(width, sample_rate * width * chunk_ms // 1000)
    argv = [espeak, "--stdout", "-v", voice.name, "-s", str(voice.wpm)]
    if sox is None:
        async for chunk in _numpy_path(argv, text, sample_rate, encoding, chunk_bytes):
            yield chunk
        return
    read_fd, write_fd = os.pipe()
    try:
        speaker = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=write_fd, stderr=asyncio.subprocess.DEVNULL
        )
    finally:
        os.close(write_fd)
    sox_enc, bits = ENCODINGS[encoding]
    try:
        converter = await asyncio.create_subprocess_exec(
            sox, "-q", "--buffer", "2048", "-t", "wav", "-", "-t", "raw", "-r", str(sample_rate),
            "-e", sox_enc, "-b", str(bits), "-c", "1", "-",
            stdin=read_fd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        os.close(read_fd)
    assert speaker.stdin is not None and converter.stdout is not None
    try:
        speaker.stdin.write(_sanitise(text).encode())
        await speaker.stdin.drain()
        speaker.stdin.close()
        carry = b""
        while data := await converter.stdout.read(chunk_bytes):
            data = carry + data
            cut = len(data) - len(data) % width
            carry = data[cut:]
            if cut:
                yield data[:cut]
        await converter.wait()
        await speaker.wait()
        if speaker.returncode != 0:
            raise SynthesisError(f"espeak-ng exited with {speaker.returncode}")
    finally:
        for proc in (speaker, converter):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


async def synthesize(text: str, *, sample_rate: int, encoding: str = "pcm_s16le", voice: Voice | None = None) -> bytes:
    return b"".join([c async for c in stream_speech(text, sample_rate=sample_rate, encoding=encoding, voice=voice)])


def _sanitise(text: str) -> str:
    # "[[" switches espeak to phoneme input; nothing a chat model says should do that
    return re.sub(r"\[\[|\]\]", " ", text)


async def _numpy_path(argv: list[str], text: str, rate: int, encoding: str, chunk_bytes: int) -> AsyncIterator[bytes]:
    """No sox: synthesise the whole WAV, resample with numpy (s16 and f32 only)."""
    if encoding not in ("pcm_s16le", "pcm_f32le"):
        raise SynthesisError(f"{encoding} needs sox (apt-get install sox)")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    wav, _ = await proc.communicate(_sanitise(text).encode())
    samples, src_rate = read_wav(_fix_wav_sizes(wav))
    audio = resample(to_float(samples), src_rate, rate)
    if encoding == "pcm_s16le":
        data = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    else:
        data = audio.astype("<f4").tobytes()
    for i in range(0, len(data), chunk_bytes):
        yield data[i : i + chunk_bytes]


def _fix_wav_sizes(wav: bytes) -> bytes:
    """espeak writes a streaming WAV header with placeholder sizes; make it exact for the `wave` module."""
    if len(wav) < 44 or wav[:4] != b"RIFF":
        raise SynthesisError("espeak-ng produced no WAV output")
    data_at = wav.find(b"data", 12)
    if data_at < 0:
        raise SynthesisError("espeak-ng WAV has no data chunk")
    payload = len(wav) - data_at - 8
    fixed = bytearray(wav)
    fixed[4:8] = (len(wav) - 8).to_bytes(4, "little")
    fixed[data_at + 4 : data_at + 8] = payload.to_bytes(4, "little")
    return bytes(fixed)
