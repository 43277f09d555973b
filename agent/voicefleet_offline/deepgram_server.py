"""Deepgram-compatible speech-to-text: streaming ``/v1/listen`` WebSocket and prerecorded ``POST /v1/listen``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Awaitable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import WSMsgType, web

from .audio import (
    Endpointer,
    EndpointerConfig,
    Event,
    Segment,
    SpeechStarted,
    UtteranceEnded,
    for_whisper,
    pcm16_from_bytes,
)
from .server import OfflineServer, StreamDropped, StreamFault, StreamGuard
from .whisper import Transcript, WhisperEngine, Word, decode_audio_bytes, get_engine

_T = TypeVar("_T")
MODEL_UUID = "00000000-0ff1-4e00-8000-000000000003"
NET0001 = "Deepgram did not receive audio data or a text message within the timeout window. See https://dpgr.am/net0001"


def _bool(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.strip().lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class ListenOptions:
    """The query parameters of ``/v1/listen`` this server honours (Deepgram's defaults)."""

    model: str = "nova-3"
    language: str = "en"
    encoding: str = "linear16"
    sample_rate: int = 16000
    channels: int = 1
    interim_results: bool = False
    punctuate: bool = False
    smart_format: bool = False
    endpointing_ms: int | None = 10
    vad_events: bool = False
    utterance_end_ms: int | None = None
    diarize: bool = False
    filler_words: bool = False
    hotwords: str | None = None

    @classmethod
    def from_query(cls, query: Mapping[str, str], keyterms: list[str], keywords: list[str]) -> ListenOptions:
        encoding = query.get("encoding", "linear16").lower()
        if encoding != "linear16":
            raise ValueError(f"offline server supports only encoding=linear16, got {encoding!r}")
        endpointing_raw = query.get("endpointing")
        endpointing: int | None = 10
        if endpointing_raw is not None:
            low = endpointing_raw.lower()
            endpointing = None if low == "false" else 10 if low == "true" else int(low)
        utterance_end = query.get("utterance_end_ms")
        utterance_end_ms = int(utterance_end) if utterance_end else None
        if utterance_end_ms is not None and utterance_end_ms < 1000:
            raise ValueError("utterance_end_ms must be at least 1000")
        words = [*keyterms, *(k.rsplit(":", 1)[0] for k in keywords)]
        return cls(
            model=query.get("model", "nova-3"),
            language=query.get("language", "en"),
            encoding=encoding,
            sample_rate=int(query.get("sample_rate", "16000")),
            channels=int(query.get("channels", "1")),
            interim_results=_bool(query.get("interim_results"), False),
            punctuate=_bool(query.get("punctuate"), False),
            smart_format=_bool(query.get("smart_format"), False),
            endpointing_ms=endpointing,
            vad_events=_bool(query.get("vad_events"), False),
            utterance_end_ms=utterance_end_ms,
            diarize=_bool(query.get("diarize"), False),
            filler_words=_bool(query.get("filler_words"), False),
            hotwords=" ".join(words) or None,
        )

    @property
    def formatted(self) -> bool:
        return self.punctuate or self.smart_format


_NON_WORD = re.compile(r"[^\w'-]+")
# what Deepgram transcribes only with filler_words=true (its docs: "uh, um, mhmm, mm-mm, uh-uh, uh-huh, and nuh-uh")
FILLER_WORDS = frozenset({"uh", "um", "mhmm", "mm-mm", "uh-uh", "uh-huh", "nuh-uh", "mm-hmm", "uh-hum", "hmm"})


def _joined(words: tuple[Word, ...]) -> list[Word]:
    """Whisper splits hyphenated words into tokens (" Uh", "-huh."); Deepgram's words are whole."""
    joined: list[Word] = []
    for w in words:
        if joined and w.text.startswith("-"):
            last = joined[-1]
            joined[-1] = Word(last.text + w.text, last.start, w.end, min(last.probability, w.probability))
        else:
            joined.append(w)
    return joined


def _alternative(tr: Transcript, offset: float, end_limit: float | None, opts: ListenOptions) -> dict[str, Any]:
    words: list[dict[str, Any]] = []
    dropped = False
    for w in _joined(tr.words):
        plain = _NON_WORD.sub("", w.text).lower()
        if not plain:
            continue
        if not opts.filler_words and plain in FILLER_WORDS:
            dropped = True
            continue
        start = round(offset + w.start, 3)
        end = round(offset + w.end, 3)
        if end_limit is not None:
            end = min(end, round(end_limit, 3))
        entry: dict[str, Any] = {"word": plain, "start": start, "end": max(start, end), "confidence": w.probability}
        if opts.formatted:
            entry["punctuated_word"] = w.text
        if opts.diarize:
            entry["speaker"] = 0
            entry["speaker_confidence"] = 1.0
        words.append(entry)
    if opts.formatted:
        transcript = " ".join(w["punctuated_word"].strip() for w in words) if dropped else tr.text
    else:
        transcript = " ".join(w["word"] for w in words)
    return {"transcript": transcript, "confidence": tr.confidence if words else 0.0, "words": words}


def _model_info(opts: ListenOptions) -> dict[str, str]:
    return {"name": f"general-{opts.model}", "version": "offline-whisper-tiny.en", "arch": opts.model}


def results_message(seg: Segment, tr: Transcript, opts: ListenOptions, request_id: str) -> dict[str, Any]:
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": round(seg.end - seg.start, 3),
        "start": round(seg.start, 3),
        "is_final": seg.is_final,
        "speech_final": seg.speech_final,
        "from_finalize": seg.from_finalize,
        "channel": {"alternatives": [_alternative(tr, seg.audio_start, seg.end, opts)]},
        "metadata": {"request_id": request_id, "model_info": _model_info(opts), "model_uuid": MODEL_UUID},
    }


class DeepgramServer(OfflineServer):
    """Deepgram ``/v1/listen`` backed by Whisper tiny.en and an energy endpointer.

    ``min_endpointing_ms`` floors the client's ``endpointing`` (the plugin asks for 25 ms, which an energy VAD
    would hit between words); ``interim_interval_ms`` is how much new speech triggers an interim (0: none).
    """

    service = "deepgram"

    def __init__(
        self,
        *,
        min_endpointing_ms: int = 300,
        interim_interval_ms: int = 1000,
        idle_timeout_s: float = 10.0,
        engine: WhisperEngine | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.min_endpointing_ms = min_endpointing_ms
        self.interim_interval_ms = interim_interval_ms
        self.idle_timeout_s = idle_timeout_s
        self.engine = engine or get_engine()

    @property
    def provider_url(self) -> str:
        return f"{self.base_url}/v1/listen"

    def routes(self) -> Iterable[web.RouteDef]:
        return [web.get("/v1/listen", self._listen_ws), web.post("/v1/listen", self._listen_prerecorded)]

    def authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith(("Token ", "token ", "Bearer ")) and len(auth.split(" ", 1)[1].strip()) > 0

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        code = {401: "INVALID_AUTH", 400: "Bad Request", 429: "TOO_MANY_REQUESTS"}.get(status, "INTERNAL_SERVER_ERROR")
        return {"err_code": code, "err_msg": message, "request_id": str(uuid.uuid4())}

    def _options(self, request: web.Request) -> ListenOptions:
        return ListenOptions.from_query(
            request.query, request.query.getall("keyterm", []), request.query.getall("keywords", [])
        )

    async def _listen_ws(self, request: web.Request) -> web.StreamResponse:
        try:
            opts = self._options(request)
        except ValueError as e:
            return self.error_response(400, str(e))
        request_id = str(uuid.uuid4())
        ws = web.WebSocketResponse(autoping=True, max_msg_size=16 * 1024 * 1024)
        ws.headers["dg-request-id"] = request_id
        if not ws.can_prepare(request).ok:
            return self.error_response(400, "expected a WebSocket upgrade")
        await ws.prepare(request)
        self.track(ws)
        try:
            await _ListenSession(self, ws, self.guard(request), opts, request_id).run()
        finally:
            self.untrack(ws)
        return ws

    async def _listen_prerecorded(self, request: web.Request) -> web.Response:
        try:
            opts = self._options(request)
        except ValueError as e:
            return self.error_response(400, str(e))
        body = await request.read()
        if request.content_type == "application/json":
            return self.error_response(400, "remote audio URLs are not supported offline; send the audio bytes")
        try:
            audio = decode_audio_bytes(body, request.query)
        except Exception as e:
            return self.error_response(400, f"could not decode audio: {e}")
        tr = await self.engine.transcribe(audio, hotwords=opts.hotwords)
        request_id = str(uuid.uuid4())
        channel: dict[str, Any] = {"alternatives": [_alternative(tr, 0.0, None, opts)]}
        if _bool(request.query.get("detect_language"), False):
            channel["detected_language"] = "en"
            channel["language_confidence"] = 1.0
        return web.json_response(
            {
                "metadata": {
                    "transaction_key": "deprecated",
                    "request_id": request_id,
                    "sha256": hashlib.sha256(body).hexdigest(),
                    "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                    "duration": round(tr.duration, 3),
                    "channels": 1,
                    "models": [MODEL_UUID],
                    "model_info": {MODEL_UUID: _model_info(opts)},
                },
                "results": {"channels": [channel]},
            },
            headers={"dg-request-id": request_id},
        )


_Outgoing = dict[str, Any] | Awaitable[dict[str, Any] | None] | None


class _ListenSession:
    """One streaming connection: audio in, Deepgram events out, in order."""

    def __init__(
        self,
        server: DeepgramServer,
        ws: web.WebSocketResponse,
        guard: StreamGuard,
        opts: ListenOptions,
        request_id: str,
    ) -> None:
        self.server = server
        self.ws = ws
        self.guard = guard
        self.opts = opts
        self.request_id = request_id
        silence = max(opts.endpointing_ms or 0, server.min_endpointing_ms)
        self.endpointer = Endpointer(
            EndpointerConfig(
                sample_rate=opts.sample_rate,
                endpointing=opts.endpointing_ms is not None,
                silence_ms=silence,
                utterance_end_ms=opts.utterance_end_ms,
                interim_interval_ms=server.interim_interval_ms if opts.interim_results else 0,
            )
        )
        self.out: asyncio.Queue[_Outgoing] = asyncio.Queue()
        self.jobs: set[asyncio.Task[Any]] = set()
        self.interim_skip: threading.Event | None = None
        self.eager: tuple[Segment, threading.Event, asyncio.Task[Transcript]] | None = None
        self.sha = hashlib.sha256()

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        closing = False
        try:
            while not sender.done():
                try:
                    msg = await self.ws.receive(timeout=self.server.idle_timeout_s or None)
                except TimeoutError:
                    await self.ws.close(code=1011, message=NET0001.encode())
                    break
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                    break
                self.server.fault.ws_messages_in += 1
                self.guard.poll()
                if msg.type == WSMsgType.BINARY:
                    self.sha.update(msg.data)
                    self._handle(self.endpointer.feed(pcm16_from_bytes(msg.data, self.opts.channels)))
                elif msg.type == WSMsgType.TEXT:
                    kind = _message_type(msg.data)
                    if kind == "Finalize":
                        self._handle(self.endpointer.finalize())
                    elif kind == "CloseStream":
                        self._handle(self.endpointer.finalize())
                        self.out.put_nowait(self._metadata())
                        self.out.put_nowait(None)
                        closing = True
                        break
            if closing:
                with contextlib.suppress(StreamDropped, StreamFault):
                    await sender
                await self.ws.close()
        except StreamDropped:
            pass
        except StreamFault as e:
            await self._fail(e.status)
        finally:
            sender.cancel()
            for job in list(self.jobs):
                job.cancel()
            with contextlib.suppress(BaseException):
                await sender

    async def _fail(self, status: int) -> None:
        if not self.ws.closed:
            await self.ws.close(code=1011, message=f"offline provider: injected error {status}".encode())

    async def _send_loop(self) -> None:
        try:
            while True:
                item = await self.out.get()
                if item is None:
                    return
                payload = item if isinstance(item, dict) else await item
                if payload is None:
                    continue
                await self.guard.send_json(self.ws, payload)
        except StreamFault as e:
            await self._fail(e.status)
            raise StreamDropped() from None

    def _handle(self, events: list[Event]) -> None:
        for ev in events:
            if isinstance(ev, SpeechStarted):
                if self.opts.vad_events:
                    self.out.put_nowait({"type": "SpeechStarted", "channel": [0], "timestamp": round(ev.at, 3)})
            elif isinstance(ev, UtteranceEnded):
                self.out.put_nowait(
                    {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": round(ev.last_word_end, 3)}
                )
            elif isinstance(ev, Segment) and ev.eager:
                self._drop_interim()
                self._drop_eager()
                skip = threading.Event()
                self.eager = (ev, skip, self._start(self._decode(ev, skip)))
            elif isinstance(ev, Segment):
                if not ev.is_final and not self.opts.interim_results:
                    continue
                if ev.is_final:
                    self._drop_interim()  # a queued interim is stale once a final covers its audio
                    decode = self._reuse_eager(ev)
                    self._drop_eager()
                    job = self._start(self._result(ev, decode or self._start(self._decode(ev, None)), None))
                else:
                    skip = threading.Event()
                    self.interim_skip = skip
                    job = self._start(self._result(ev, self._start(self._decode(ev, skip)), skip))
                self.out.put_nowait(job)

    def _start(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.create_task(coro)
        self.jobs.add(task)
        task.add_done_callback(self.jobs.discard)
        return task

    def _drop_interim(self) -> None:
        if self.interim_skip is not None:
            self.interim_skip.set()
            self.interim_skip = None

    def _drop_eager(self) -> None:
        if self.eager is not None:
            self.eager[1].set()
            self.eager = None

    def _reuse_eager(self, final: Segment) -> asyncio.Task[Transcript] | None:
        """The speculative decode serves the final if nothing but silence followed it."""
        if self.eager is None:
            return None
        seg, _, task = self.eager
        if seg.audio_start == final.audio_start and final.voiced_until <= seg.end and not task.cancelled():
            self.eager = None
            return task
        return None

    async def _decode(self, seg: Segment, skip: threading.Event | None) -> Transcript:
        if not seg.audio.size:
            return Transcript("", (), 0.0, 0.0, "en", 0.0, 1.0)
        audio = for_whisper(seg.audio, self.opts.sample_rate)
        return await self.server.engine.transcribe(audio, hotwords=self.opts.hotwords, skip=skip)

    async def _result(
        self, seg: Segment, decode: asyncio.Task[Transcript], skip: threading.Event | None
    ) -> dict[str, Any] | None:
        tr = await decode
        if skip is not None and skip.is_set():
            return None
        if seg.is_final:
            await self.guard.turn_delay()
        return results_message(seg, tr, self.opts, self.request_id)

    def _metadata(self) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self.sha.hexdigest(),
            "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "duration": round(self.endpointer.seconds, 3),
            "channels": self.opts.channels,
            "models": [MODEL_UUID],
            "model_info": {MODEL_UUID: _model_info(self.opts)},
        }


def _message_type(data: str) -> str:
    try:
        parsed = json.loads(data)
    except ValueError:
        return ""
    return str(parsed.get("type", "")) if isinstance(parsed, dict) else ""
