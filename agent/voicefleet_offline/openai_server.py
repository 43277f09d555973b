"""OpenAI-compatible ``/v1/chat/completions`` (deterministic task model), ``/v1/audio/transcriptions`` (Whisper)
and ``/v1/models``."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

from .dialogue import Reply, ToolSpec, respond
from .server import OfflineServer, StreamDropped, StreamFault
from .whisper import Transcript, WhisperEngine, decode_audio_bytes, get_engine

MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-mini",
    "whisper-1",
    "gpt-4o-mini-transcribe",
    "gpt-4o-transcribe",
)
FINGERPRINT = "fp_offline"


def estimate_tokens(text: str) -> int:
    """About four characters per token, OpenAI's own rule of thumb."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _prompt_tokens(messages: Sequence[Any], tools: Sequence[Any]) -> int:
    # every message costs ~4 tokens of framing on top of its content
    return estimate_tokens(json.dumps(messages, separators=(",", ":"))) + estimate_tokens(json.dumps(tools)) + 3


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _pieces(text: str) -> list[str]:
    """Split text into token-sized deltas (a word with its trailing space, punctuation on its own)."""
    return re.findall(r"\s*[\w']+|\s*[^\w\s]+|\s+", text) or [text]


def _arg_pieces(arguments: str, size: int = 8) -> list[str]:
    return [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]


class OpenAIServer(OfflineServer):
    """OpenAI API subset; ``token_delay_ms`` paces streamed deltas to look like a real model."""

    service = "openai"

    def __init__(self, *, token_delay_ms: int = 0, engine: WhisperEngine | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token_delay_ms = token_delay_ms
        self._engine = engine

    @property
    def engine(self) -> WhisperEngine:
        if self._engine is None:
            self._engine = get_engine()
        return self._engine

    @property
    def provider_url(self) -> str:
        return f"{self.base_url}/v1"

    def routes(self) -> Iterable[web.RouteDef]:
        return [
            web.get("/v1/models", self._models),
            web.post("/v1/chat/completions", self._chat),
            web.post("/v1/audio/transcriptions", self._transcribe),
            web.post("/v1/audio/translations", self._transcribe),
        ]

    def authorized(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and bool(auth[7:].strip())

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        kind, code = {
            400: ("invalid_request_error", None),
            401: ("invalid_request_error", "invalid_api_key"),
            404: ("invalid_request_error", "model_not_found"),
            429: ("requests", "rate_limit_exceeded"),
        }.get(status, ("server_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    async def _models(self, request: web.Request) -> web.Response:
        created = 1700000000
        data = [{"id": m, "object": "model", "created": created, "owned_by": "system"} for m in MODELS]
        return web.json_response({"object": "list", "data": data})

    # -- chat ------------------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            messages = body["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
            raw_tools = [t for t in body.get("tools") or [] if t.get("type", "function") == "function"]
            tools = [ToolSpec.from_openai(t) for t in raw_tools]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return self.error_response(400, f"invalid request: {e}")
        reply = respond(messages, tools, body.get("tool_choice", "auto"))
        model = str(body.get("model") or "gpt-4o-mini")
        prompt_tokens = _prompt_tokens(messages, raw_tools)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        calls: list[dict[str, Any]] = [
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in reply.tool_calls
        ]
        completion_tokens = estimate_tokens(reply.text or "") + sum(
            estimate_tokens(json.dumps(c.arguments)) + 4 for c in reply.tool_calls
        )
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            usage = _usage(prompt_tokens, completion_tokens) if include_usage else None
            return await self._stream(request, completion_id, model, reply, calls, usage)
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        if calls:
            message["tool_calls"] = calls
        return web.json_response(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": FINGERPRINT,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if calls else "stop",
                    }
                ],
                "usage": _usage(prompt_tokens, completion_tokens),
            }
        )

    async def _stream(
        self,
        request: web.Request,
        completion_id: str,
        model: str,
        reply: Reply,
        calls: list[dict[str, Any]],
        usage: dict[str, Any] | None,
    ) -> web.StreamResponse:
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": FINGERPRINT,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if usage is not None:
                out["usage"] = None
            return out

        deltas: list[dict[str, Any]] = []
        if calls:
            for index, call in enumerate(calls):
                pieces = _arg_pieces(call["function"]["arguments"])
                head: dict[str, Any] = {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
                if index == 0:
                    head = {"role": "assistant", "content": None, **head}
                deltas.append(chunk(head))
                deltas.extend(chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]}) for p in pieces)
            deltas.append(chunk({}, "tool_calls"))
        else:
            deltas.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            deltas.extend(chunk({"content": p}) for p in _pieces(reply.text or ""))
            deltas.append(chunk({}, "stop"))
        if usage is not None:
            deltas.append(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": FINGERPRINT,
                    "choices": [],
                    "usage": usage,
                }
            )

        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        resp.headers["x-request-id"] = f"req_{uuid.uuid4().hex[:24]}"
        await resp.prepare(request)
        guard = self.guard(request)
        try:
            for i, payload in enumerate(deltas):
                await guard.before_unit()
                if i and self.token_delay_ms:
                    await asyncio.sleep(self.token_delay_ms / 1000)
                await resp.write(f"data: {json.dumps(payload)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except StreamDropped:
            pass
        except StreamFault as e:
            err = self.error_body(e.status, "offline provider: injected failure mid-stream")
            await resp.write(f"data: {json.dumps(err)}\n\n".encode())
            await resp.write_eof()
        return resp

    # -- audio ---------------------------------------------------------------------------------------------

    async def _transcribe(self, request: web.Request) -> web.StreamResponse:
        try:
            form = await request.post()
        except ValueError as e:
            return self.error_response(400, f"invalid multipart body: {e}")
        upload = form.get("file")
        if upload is None or isinstance(upload, str | bytes | bytearray):
            return self.error_response(400, "missing 'file'")
        data = upload.file.read()
        fmt = str(form.get("response_format") or "json")
        prompt = form.get("prompt")
        temperature = float(str(form.get("temperature") or 0.0))
        granularities = [str(g) for g in form.getall("timestamp_granularities[]", [])]
        try:
            audio = decode_audio_bytes(data)
        except Exception as e:
            return self.error_response(400, f"could not decode audio: {e}")
        tr = await self.engine.transcribe(audio, prompt=str(prompt) if prompt else None, temperature=temperature)
        seconds = max(1, math.ceil(tr.duration))
        if fmt == "text":
            return web.Response(text=tr.text + "\n")
        if fmt in ("srt", "vtt"):
            return web.Response(text=_subtitles(tr, fmt))
        if fmt == "verbose_json":
            out: dict[str, Any] = {
                "task": "transcribe",
                "language": "english",
                "duration": round(tr.duration, 3),
                "text": tr.text,
                "segments": [
                    {
                        "id": 0,
                        "seek": 0,
                        "start": 0.0,
                        "end": round(tr.duration, 3),
                        "text": tr.text,
                        "tokens": [],
                        "temperature": temperature,
                        "avg_logprob": round(tr.avg_logprob, 4),
                        "compression_ratio": 1.0,
                        "no_speech_prob": round(tr.no_speech_prob, 4),
                    }
                ]
                if tr.text
                else [],
                "usage": {"type": "duration", "seconds": seconds},
            }
            if "word" in granularities:
                out["words"] = [{"word": w.text, "start": w.start, "end": w.end} for w in tr.words]
            return web.json_response(out)
        return web.json_response({"text": tr.text, "usage": {"type": "duration", "seconds": seconds}})


def _stamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def _subtitles(tr: Transcript, fmt: str) -> str:
    sep = "," if fmt == "srt" else "."
    cue = f"{_stamp(0.0, sep)} --> {_stamp(tr.duration, sep)}\n{tr.text}\n"
    return f"1\n{cue}" if fmt == "srt" else f"WEBVTT\n\n{cue}"
