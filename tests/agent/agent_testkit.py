"""Helpers for the agent's tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from livekit.agents import llm
from livekit.agents.llm import ChatChunk, ChatContext, ChoiceDelta, FunctionToolCall
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from voicefleet_agent.contract import TASKS_TOKEN_TTL_SECONDS, AgentConfig, McpServerConfig, ProviderConfig
from voicefleet_agent.session import caller_token
from voicefleet_tasks.store import TaskStore

SERVER_START_TIMEOUT = 30.0
TOKEN_KEY = "agent-tests-shared-key-0123456789"
CALLER = "participant:caller"  # whose tasks the tests' clients and ``store`` fixture use


def token_for(owner: str, *, key: str = TOKEN_KEY, ttl: int = 3600) -> str:
    """A caller token as the agent signs it for a session of ``owner``."""
    return caller_token(owner, key.encode(), session_id="test-room", now=time.time() + ttl - TASKS_TOKEN_TTL_SECONDS)


def auth_headers(owner: str = CALLER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(owner)}"}


@asynccontextmanager
async def mcp_client(url: str, owner: str = CALLER) -> AsyncIterator[Client]:
    """The plain ``mcp`` client, authenticated as ``owner``."""
    async with (
        httpx2.AsyncClient(headers=auth_headers(owner)) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


@dataclass
class TasksServer:
    url: str
    db: Path
    store: TaskStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, *, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200 (or the process dies)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} came up")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not come up within {timeout}s")
        time.sleep(0.05)


def poll(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> None:
    """Wait until ``predicate()`` holds (a condition to poll, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


@dataclass
class Reply:
    """One LLM response: text and/or tool calls (name, arguments)."""

    text: str | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    delay: float = 0.0  # seconds the request takes before it answers


def call(name: str, **arguments: Any) -> Reply:
    return Reply(calls=[(name, arguments)])


def say(text: str) -> Reply:
    return Reply(text=text)


class _ScriptedStream(llm.LLMStream):
    def __init__(self, owner: ScriptedLLM, reply: Reply | None, **kwargs: Any) -> None:
        super().__init__(owner, **kwargs)
        self._reply = reply

    async def _run(self) -> None:
        if self._reply is None:
            raise AssertionError("the scripted LLM was called more often than scripted")
        if self._reply.delay:
            await asyncio.sleep(self._reply.delay)
        if self._reply.calls:
            tool_calls = [
                FunctionToolCall(name=name, arguments=json.dumps(args), call_id=f"call_{time.monotonic_ns()}_{i}")
                for i, (name, args) in enumerate(self._reply.calls)
            ]
            self._event_ch.send_nowait(
                ChatChunk(id="scripted", delta=ChoiceDelta(role="assistant", tool_calls=tool_calls))
            )
        if self._reply.text:
            self._event_ch.send_nowait(
                ChatChunk(id="scripted", delta=ChoiceDelta(role="assistant", content=self._reply.text))
            )


class ScriptedLLM(llm.LLM[Any]):
    """An LLM that answers each chat() with the next scripted Reply and records what it was asked."""

    def __init__(self, *replies: Reply) -> None:
        super().__init__()
        self._replies = list(replies)
        self.requests: list[ChatContext] = []

    @property
    def remaining(self) -> int:
        return len(self._replies)

    def script(self, *replies: Reply) -> None:
        self._replies.extend(replies)

    def chat(
        self,
        *,
        chat_ctx: ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        self.requests.append(chat_ctx.copy())
        reply = self._replies.pop(0) if self._replies else None
        return _ScriptedStream(self, reply, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


def provider(name: str, kind: str, model: str, **extra: Any) -> ProviderConfig:
    return ProviderConfig.model_validate({"name": name, "provider": kind, "model": model, **extra})


def make_config(**overrides: Any) -> AgentConfig:
    fields: dict[str, Any] = {
        "agent_name": "task-manager",
        "instructions": "You manage tasks.",
        "stt": (provider("deepgram", "deepgram", "nova-3", base_url="http://127.0.0.1:1"),),
        "llm": (provider("openai", "openai", "gpt-4o-mini", base_url="http://127.0.0.1:1/v1"),),
        "tts": (provider("cartesia", "cartesia", "sonic-3", base_url="http://127.0.0.1:1"),),
        "mcp_servers": (McpServerConfig(name="tasks", url="http://127.0.0.1:1/mcp"),),
    }
    fields.update(overrides)
    return AgentConfig(**fields)
