"""Cartesia-compatible text-to-speech: ``/tts/websocket`` (contexts, continuations, word timestamps) and
``POST /tts/bytes``, backed by espeak-ng."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from .audio import wav_bytes
from .espeak import ENCODINGS, SAMPLE_RATES, SynthesisError, Voice, sample_width, stream_speech, voice_for
from .server import OfflineServer, StreamDropped, StreamFault, StreamGuard

_NAMED_SPEEDS = {"slowest": 0.6, "slow": 0.8, "normal": 1.0, "fast": 1.25, "fastest": 1.5}


class RequestError(ValueError):
    pass


@dataclass(frozen=True)
class SpeechRequest:
    """The parts of a Cartesia generation request that shape the audio."""

    sample_rate: int
    encoding: str
    container: str
    voice: Voice
    add_timestamps: bool
    max_buffer_delay_ms: int

    @classmethod
    def parse(cls, body: Mapping[str, Any], *, streaming: bool) -> SpeechRequest:
        fmt = body.get("output_format") or {}
        container = str(fmt.get("container", "raw"))
        encoding = str(fmt.get("encoding", "pcm_s16le"))
        rate = int(fmt.get("sample_rate", 24000))
        allowed_containers = ("raw",) if streaming else ("raw", "wav")
        if container not in allowed_containers:
            raise RequestError(f"offline server supports container {allowed_containers}, got {container!r}")
        if encoding not in ENCODINGS:
            raise RequestError(f"unsupported encoding {encoding!r}; use one of {sorted(ENCODINGS)}")
        if container == "wav" and encoding != "pcm_s16le":
            raise RequestError("wav output supports pcm_s16le only")
        if rate not in SAMPLE_RATES:
            raise RequestError(f"unsupported sample_rate {rate}; use one of {SAMPLE_RATES}")
        voice = body.get("voice") or {}
        speed = _speed(body, voice)
        return cls(
            sample_rate=rate,
            encoding=encoding,
            container=container,
            voice=voice_for(body.get("language"), str(voice.get("id") or ""), speed),
            add_timestamps=bool(body.get("add_timestamps", False)),
            max_buffer_delay_ms=int(body.get("max_buffer_delay_ms", 3000)),
        )


def _speed(body: Mapping[str, Any], voice: Mapping[str, Any]) -> float:
    raw = (body.get("generation_config") or {}).get("speed")
    if raw is None:
        raw = (voice.get("__experimental_controls") or {}).get("speed")
    if raw is None:
        return 1.0
    if isinstance(raw, str):
        return _NAMED_SPEEDS.get(raw, 1.0)
    return float(raw)


def word_timestamps(text: str, start: float, duration: float) -> dict[str, list[Any]]:
    """Spread a fragment's words over its audio in proportion to their length (espeak gives no alignment)."""
    words = text.split()
    weights = [len(w) + 1 for w in words]
    total = sum(weights) or 1
    starts: list[float] = []
    ends: list[float] = []
    t = start
    for weight in weights:
        span = duration * weight / total
        starts.append(round(t, 3))
        ends.append(round(t + span, 3))
        t += span
    return {"words": words, "start": starts, "end": ends}


class CartesiaServer(OfflineServer):
    """Cartesia TTS API subset over espeak-ng; ``chunk_ms`` is the most audio one ``chunk`` message carries."""

    service = "cartesia"

    def __init__(self, *, chunk_ms: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chunk_ms = chunk_ms

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            web.get("/tts/websocket", self._websocket),
            web.post("/tts/bytes", self._bytes),
            web.get("/voices", self._voices),
        ]

    def authorized(self, request: web.Request) -> bool:
        return bool(
            request.headers.get("X-API-Key")
            or request.query.get("api_key")
            or request.query.get("access_token")
            or request.headers.get("Authorization", "").startswith("Bearer ")
        )

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": message, "status_code": status, "request_id": str(uuid.uuid4())}

    async def _voices(self, request: web.Request) -> web.Response:
        voices = [
            {"id": f"espeak:{v}", "name": v, "language": v.split("-")[0]} for v in ("en-us", "en-gb", "de", "fr", "es")
        ]
        return web.json_response(voices)

    async def _bytes(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            spec = SpeechRequest.parse(body, streaming=False)
            transcript = str(body["transcript"])
        except (ValueError, KeyError, TypeError) as e:
            return self.error_response(400, f"invalid request: {e}")
        if spec.container == "wav":
            pcm = b"".join([c async for c in self._speak(transcript, spec)])
            return web.Response(
                body=wav_bytes(np.frombuffer(pcm, dtype="<i2"), spec.sample_rate), content_type="audio/wav"
            )
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.headers["X-Request-Id"] = str(uuid.uuid4())
        guard = self.guard(request)
        try:
            async for chunk in self._speak(transcript, spec):
                await guard.before_unit()
                if not resp.prepared:
                    await resp.prepare(request)
                await resp.write(chunk)
            if not resp.prepared:
                await resp.prepare(request)
            await resp.write_eof()
        except StreamDropped:
            pass
        except StreamFault as e:
            if not resp.prepared:
                return self.error_response(e.status, "offline provider: injected failure")
            self.abort(request)
        except SynthesisError as e:
            if not resp.prepared:
                return self.error_response(500, str(e))
            self.abort(request)
        return resp

    async def _speak(self, text: str, spec: SpeechRequest) -> AsyncIterator[bytes]:
        async for chunk in stream_speech(
            text, sample_rate=spec.sample_rate, encoding=spec.encoding, voice=spec.voice, chunk_ms=self.chunk_ms
        ):
            yield chunk

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        ws.headers["X-Request-Id"] = str(uuid.uuid4())
        if not ws.can_prepare(request).ok:
            return self.error_response(400, "expected a WebSocket upgrade")
        await ws.prepare(request)
        self.track(ws)
        session = _TtsSession(self, ws, self.guard(request))
        try:
            await session.run()
        finally:
            self.untrack(ws)
        return ws


class _TtsSession:
    """One WebSocket: many contexts, each synthesised in order, several in parallel."""

    def __init__(self, server: CartesiaServer, ws: web.WebSocketResponse, guard: StreamGuard) -> None:
        self.server = server
        self.ws = ws
        self.guard = guard
        self.contexts: dict[str, _Context] = {}
        self.send_lock = asyncio.Lock()
        self.failed = asyncio.Event()
        self.fault: StreamFault | None = None

    async def send(self, payload: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.guard.send_json(self.ws, payload)

    def fail(self, exc: StreamDropped | StreamFault) -> None:
        if not self.failed.is_set():
            self.fault = exc if isinstance(exc, StreamFault) else None
            self.failed.set()

    async def run(self) -> None:
        receiver = asyncio.create_task(self._receive())
        failed = asyncio.create_task(self.failed.wait())
        try:
            await asyncio.wait([receiver, failed], return_when=asyncio.FIRST_COMPLETED)
            fault = self.fault
            if fault is not None and not self.ws.closed:
                await self.ws.close(code=1011, message=f"offline provider: injected error {fault.status}".encode())
        finally:
            failed.cancel()
            receiver.cancel()
            for ctx in self.contexts.values():
                ctx.task.cancel()
            with contextlib.suppress(BaseException):
                await receiver

    async def _receive(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                self.server.fault.ws_messages_in += 1
                self.guard.poll()
                await self._handle(msg.data)
        except (StreamDropped, StreamFault) as e:
            self.fail(e)

    async def _handle(self, raw: str) -> None:
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
        except ValueError as e:
            await self.send({"type": "error", "done": True, "status_code": 400, "error": f"invalid JSON: {e}"})
            return
        context_id = str(body.get("context_id") or uuid.uuid4())
        if body.get("cancel"):
            ctx = self.contexts.pop(context_id, None)
            if ctx is not None:
                ctx.task.cancel()
            return
        try:
            spec = SpeechRequest.parse(body, streaming=True)
            transcript = str(body.get("transcript", ""))
        except (ValueError, TypeError) as e:
            await self.send(
                {"type": "error", "done": True, "status_code": 400, "error": str(e), "context_id": context_id}
            )
            return
        ctx = self.contexts.get(context_id)
        if ctx is None or ctx.task.done():
            ctx = _Context(self, context_id, spec)
            self.contexts[context_id] = ctx
        ctx.queue.put_nowait((transcript, bool(body.get("continue", False))))


class _Context:
    def __init__(self, session: _TtsSession, context_id: str, spec: SpeechRequest) -> None:
        self.session = session
        self.context_id = context_id
        self.spec = spec
        self.queue: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        self.audio_seconds = 0.0
        self.started = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        buffer = ""
        more = True
        try:
            while more:
                transcript, more = await self._next(buffer)
                buffer += transcript
                if not more or self.spec.max_buffer_delay_ms == 0 or transcript == "":
                    ready, buffer = buffer, ""
                else:
                    ready, buffer = _split_ready(buffer)
                if ready.strip():
                    await self._speak(ready)
            await self.session.send({"type": "done", "done": True, "status_code": 200, "context_id": self.context_id})
        except (StreamDropped, StreamFault) as e:
            self.session.fail(e)
        except SynthesisError as e:
            with contextlib.suppress(StreamDropped, StreamFault):
                await self.session.send(
                    {"type": "error", "done": True, "status_code": 500, "error": str(e), "context_id": self.context_id}
                )
        finally:
            if self.session.contexts.get(self.context_id) is self:
                del self.session.contexts[self.context_id]

    async def _next(self, buffer: str) -> tuple[str, bool]:
        """The next input; text held back for longer than max_buffer_delay_ms is flushed as if input paused."""
        if not buffer.strip():
            return await self.queue.get()
        try:
            return await asyncio.wait_for(self.queue.get(), self.spec.max_buffer_delay_ms / 1000)
        except TimeoutError:
            return "", True

    async def _speak(self, text: str) -> None:
        spec = self.spec
        start = self.audio_seconds
        n_bytes = 0
        bytes_per_second = spec.sample_rate * sample_width(spec.encoding)
        last = time.perf_counter()
        async for chunk in stream_speech(
            text.strip(), sample_rate=spec.sample_rate, encoding=spec.encoding, voice=spec.voice,
            chunk_ms=self.session.server.chunk_ms,
        ):  # fmt: skip
            if not self.started:
                self.started = True
                await self.session.guard.turn_delay()
            now = time.perf_counter()
            step_ms, last = (now - last) * 1000, now
            await self.session.send(
                {
                    "type": "chunk",
                    "data": base64.b64encode(chunk).decode(),
                    "done": False,
                    "status_code": 206,
                    "step_time": round(step_ms, 3),
                    "context_id": self.context_id,
                }
            )
            n_bytes += len(chunk)
        duration = n_bytes / bytes_per_second
        self.audio_seconds += duration
        if spec.add_timestamps and duration > 0:
            await self.session.send(
                {
                    "type": "timestamps",
                    "done": False,
                    "status_code": 206,
                    "context_id": self.context_id,
                    "word_timestamps": word_timestamps(text, start, duration),
                }
            )


def _split_ready(buffer: str) -> tuple[str, str]:
    """Text up to the last sentence end is ready to speak; the rest waits for more input."""
    last = None
    for m in re.finditer(r"[.!?;:](?=\s|$)", buffer):
        last = m.end()
    if last is None:
        return "", buffer
    return buffer[:last], buffer[last:]
