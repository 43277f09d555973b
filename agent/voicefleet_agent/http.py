"""HTTP clients that cost the session's event loop nothing to create.

An ``httpx2.AsyncClient`` builds a fresh SSL context (loading the CA bundle) each time it is created: 70 to 600 ms of
synchronous work, and the OpenAI plugins and the MCP clients each create one per session, on the agent's loop; the
framework's aiohttp session builds one on first use too. The context is built once per process instead (``prewarm``)
and every client reuses it; the OpenAI clients are shared by all sessions of the process.

``PRELOAD`` are modules the session would otherwise import lazily on its loop (measured with the framework's loop
monitor: 42 to 108 ms each for the OpenAI resources and stream helpers, httpx2's connection stack on the first
request and jsonschema's ``referencing`` on the first MCP call), and the framework's hyphenation table it builds on
the first agent utterance (53 ms).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import ssl
import threading
from typing import Any

import httpx2
import openai
from livekit.agents import llm, tokenize
from livekit.agents.utils import http_context
from livekit.plugins import openai as lk_openai
from openai.types.chat import ChatCompletionChunk

PRELOAD = (
    # the OpenAI client's first requests
    "openai.lib.streaming.chat",
    "openai.lib._chat_completion_resources",
    "openai.resources.models",
    "openai.resources.chat.completions.completions",
    "openai.resources.audio",
    # httpx2's first connection (OpenAI and MCP clients)
    "httpcore2._async.connection_pool",
    "httpcore2._async.http11",
    "httpcore2._async.http2",
    "httpcore2._backends.anyio",
    "httpcore2._backends.auto",
    "anyio._backends._asyncio",
    "h11",
    "h2.connection",
    "truststore",
    # the MCP client's first tool result (JSON schema validation)
    "jsonschema",
    "referencing._core",
    "referencing.jsonschema",
)

_CHUNK = {
    "id": "prewarm",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "prewarm",
    "choices": [
        {
            "index": 0,
            "delta": {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": ""}}],
            },
            "finish_reason": None,
        }
    ],
}

_ssl_context: ssl.SSLContext | None = None
_openai_clients: dict[tuple[str | None, str | None], openai.AsyncClient] = {}

# the OpenAI plugins' own defaults (livekit-plugins-openai 1.8.9)
OPENAI_TIMEOUT = httpx2.Timeout(connect=15.0, read=5.0, write=5.0, pool=5.0)
OPENAI_LIMITS = httpx2.Limits(max_connections=50, max_keepalive_connections=50, keepalive_expiry=120)


def ssl_context() -> ssl.SSLContext:
    """The process's one client SSL context: livekit-agents' own (cached per process by its ``http_context``, which
    the plugins' aiohttp sessions use), so building it here in prewarm also spares their first session."""
    global _ssl_context
    if _ssl_context is None:
        # private in livekit-agents 1.8.9 (pinned): the context its http_session() builds for every new session
        _ssl_context = http_context._create_ssl_context()
    return _ssl_context


def http_client(**kwargs: Any) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` on the shared SSL context."""
    return httpx2.AsyncClient(verify=ssl_context(), **kwargs)


def openai_client(*, base_url: str | None, api_key: str | None) -> openai.AsyncClient:
    """One OpenAI client per endpoint and key for the whole process (the plugins leave a passed client open)."""
    key = (base_url, api_key)
    client = _openai_clients.get(key)
    if client is None:
        client = openai.AsyncClient(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            http_client=http_client(timeout=OPENAI_TIMEOUT, follow_redirects=True, limits=OPENAI_LIMITS),
        )
        _openai_clients[key] = client
    return client


def _answer(request: httpx2.Request) -> httpx2.Response:
    """The one reply of the warm-up round: a tool-call chunk, a usage chunk, the end of the stream."""
    usage = {**_CHUNK, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in (_CHUNK, usage)) + "data: [DONE]\n\n"
    return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())


@llm.function_tool
async def _prewarm_tool(title: str) -> str:
    """Warm-up tool."""
    return title


async def _llm_round() -> None:
    """One chat turn through the OpenAI plugin's own request and stream code, answered in-process: the SDK evaluates
    its request TypedDicts' type hints and builds its response models' schemas on the first request (measured 20 ms
    of CPU on the first request and 18 ms on its stream, in one loop step each)."""
    transport = httpx2.MockTransport(_answer)
    async with openai.AsyncClient(
        api_key="prewarm",
        base_url="http://prewarm.invalid/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=transport),
    ) as client:
        chat = llm.ChatContext.empty()
        chat.add_message(role="system", content="prewarm")
        chat.add_message(role="user", content="prewarm")
        chat.items.append(llm.FunctionCall(call_id="c", name="_prewarm_tool", arguments='{"title": "t"}'))
        chat.items.append(llm.FunctionCallOutput(call_id="c", name="_prewarm_tool", output="t", is_error=False))
        async with lk_openai.LLM(model="prewarm", client=client).chat(chat_ctx=chat, tools=[_prewarm_tool]) as stream:
            async for _ in stream:
                pass


def prewarm() -> None:
    """Everything above, built once per process before its first session."""
    for module in PRELOAD:
        importlib.import_module(module)
    # the OpenAI SDK builds its pydantic models' validators on first use (defer_build): the first streamed chunk
    ChatCompletionChunk.model_validate(_CHUNK)
    tokenize.basic.hyphenate_word("prewarm")
    ssl_context()
    # on a thread of its own, as the caller may be running a loop; its failure is the caller's
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_llm_round())
        except BaseException as exc:  # re-raised below, on the caller's thread
            failed.append(exc)

    warm = threading.Thread(target=run, name="voicefleet-prewarm")
    warm.start()
    warm.join()
    if failed:
        raise failed[0]
