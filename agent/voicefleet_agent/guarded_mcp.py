"""MCP servers whose destructive tools need the user's spoken yes, by the tools' own declaration.

A tool is destructive unless its annotations say otherwise: MCP's defaults are ``readOnlyHint: false`` and
``destructiveHint: true``, so a server that declares nothing is treated as able to destroy. Such a tool first asks
(``ConfirmationGate``), and runs only on a confirmed yes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeAlias

import httpx2
import mcp.types
from livekit.agents import RunContext, function_tool
from livekit.agents.llm import RawFunctionTool
from livekit.agents.llm.mcp import MCPServerHTTP, MCPToolOptions

from voicefleet_agent.confirm import Action, Confirmation, ConfirmationGate, Message, Verdict
from voicefleet_agent.http import http_client

AnyTool: TypeAlias = "RawFunctionTool[Any, Any]"


def declares_destructive(annotations: mcp.types.ToolAnnotations | None) -> bool:
    """MCP semantics: destructive unless read-only or explicitly not destructive."""
    if annotations is None:
        return True
    if annotations.read_only_hint:
        return False
    return annotations.destructive_hint is not False


def confirmation_for(tool: str, arguments: dict[str, Any]) -> Confirmation:
    """The question for a third-party tool: its name in words, and the arguments it would run with."""
    action = tool.replace("_", " ").replace("-", " ").strip()
    details = ", ".join(f"{k} {v}" for k, v in sorted(arguments.items()))
    question = f"{action[:1].upper()}{action[1:]}{f' ({details})' if details else ''}?"
    return Confirmation(question=question, subject=action)


class GuardedMCPServer(MCPServerHTTP):
    """``MCPServerHTTP`` whose destructive tools go through the session's ``ConfirmationGate``."""

    def __init__(
        self,
        url: str,
        *,
        gate: ConfirmationGate,
        transcript: Callable[[RunContext[Any]], list[Message]],
        **kwargs: Any,
    ) -> None:
        super().__init__(url, **kwargs)
        self._gate = gate
        self._transcript = transcript

    def _create_http_client(
        self,
        headers: dict[str, Any] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        # the base class's client would build an SSL context on the session's loop
        self._http_client = http_client(
            timeout=timeout if timeout is not None else httpx2.Timeout(self._timeout, read=self._sse_read_timeout),
            headers=headers if headers is not None else self._headers,
            **({"auth": auth} if auth is not None else {}),
        )
        return self._http_client

    async def list_tools(self, *, tool_options: dict[str, MCPToolOptions] | None = None) -> list[AnyTool]:
        tools = await super().list_tools(tool_options=tool_options)
        declared = {t.name: declares_destructive(t.annotations) for t in await self._list_raw_tools()}
        return [self._guard(t) if declared.get(t.info.name, True) else t for t in tools]

    def _guard(self, tool: AnyTool) -> AnyTool:
        name = tool.info.name
        takes_ctx = "ctx" in inspect.signature(tool).parameters

        async def guarded(ctx: RunContext[Any], raw_arguments: dict[str, Any]) -> Any:
            action = Action.of(name, raw_arguments)
            messages = self._transcript(ctx)
            if self._gate.decide(action, messages) is Verdict.PROCEED:
                return await (tool(ctx, raw_arguments) if takes_ctx else tool(raw_arguments))
            return self._gate.request(action, confirmation_for(name, raw_arguments), messages)

        info = tool.info
        return function_tool(
            guarded,
            raw_schema=info.raw_schema,
            flags=info.flags,
            on_duplicate=info.on_duplicate,
            duplicate_scope=info.duplicate_scope,
        )
