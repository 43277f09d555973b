"""Synthetic provider probes over each provider's real protocol: a short transcription for STT, a one-token
completion for the LLM, a one-word synthesis for TTS."""

from __future__ import annotations

import io
import time
import wave
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from voicefleet_agent.contract import PLACEHOLDER_API_KEY, deepgram_listen_url
from voicefleet_operator.health import Observation
from voicefleet_operator.models import NamedProviderSpec

CARTESIA_VERSION = "2025-04-16"
DEFAULT_URLS = {
    "deepgram": "https://api.deepgram.com/v1/listen",
    "whisper": "https://api.openai.com/v1",
    "openai": "https://api.openai.com/v1",
    "cartesia": "https://api.cartesia.ai",
}


def _http(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, *parts[1:]))


def _silence_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(rate * seconds))
    return buffer.getvalue()


SILENCE = _silence_wav()


async def _request(
    session: aiohttp.ClientSession, spec: NamedProviderSpec, api_key: str | None
) -> aiohttp.ClientResponse:
    base = _http(spec.base_url or DEFAULT_URLS[spec.provider]).rstrip("/")
    key = api_key or ""
    if spec.provider == "deepgram":
        base = deepgram_listen_url(base)  # the endpoint the agent's plugin uses under a bare origin too
        return await session.post(
            base, params={"model": spec.model}, data=SILENCE,
            headers={"Authorization": f"Token {key}", "Content-Type": "audio/wav"},
        )  # fmt: skip
    if spec.provider in ("whisper", "openai") and not key and spec.base_url:
        key = PLACEHOLDER_API_KEY  # what the agent sends a keyless OpenAI-compatible server
    if spec.provider == "whisper":
        form = aiohttp.FormData()
        form.add_field("file", SILENCE, filename="probe.wav", content_type="audio/wav")
        form.add_field("model", spec.model)
        return await session.post(f"{base}/audio/transcriptions", data=form, headers={"Authorization": f"Bearer {key}"})
    if spec.provider == "openai":
        body = {"model": spec.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        return await session.post(f"{base}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    body = {
        "model_id": spec.model,
        "transcript": "ok",
        "voice": {"mode": "id", "id": spec.options.get("voice", "")},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 16000},
    }
    headers = {"X-API-Key": key, "Cartesia-Version": CARTESIA_VERSION}
    return await session.post(f"{base}/tts/bytes", json=body, headers=headers)


async def probe(spec: NamedProviderSpec, api_key: str | None, timeout_s: float) -> Observation:
    """One probe; never raises: a failure is an Observation with the reason."""
    started = time.perf_counter()
    at = datetime.now(UTC)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            response = await _request(session, spec, api_key)
            async with response:
                await response.read()
                latency = (time.perf_counter() - started) * 1000
                if response.status >= 400:
                    return Observation(False, at, latency, f"HTTP {response.status}")
                return Observation(True, at, latency)
    except TimeoutError:
        return Observation(False, at, timeout_s * 1000, f"no answer within {timeout_s:g} s", slow=True)
    except aiohttp.ClientError as error:
        return Observation(False, at, None, f"{error.__class__.__name__}: {error}")
