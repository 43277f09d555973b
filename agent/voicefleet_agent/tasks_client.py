"""A session's connection to the Task Manager MCP server (``mcp`` 2.x client over streamable HTTP).

Each request carries the session's caller token (``Authorization: Bearer``), so the server serves that caller's
tasks only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, ValidationError

from voicefleet_agent.http import http_client
from voicefleet_tasks.store import Task

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
MCP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)  # the MCP SDK's defaults: a response stream may stay open


class TasksError(RuntimeError):
    """The server refused the call (unknown id, invalid title...); the message is meant for the LLM."""


class TasksUnavailable(TasksError):
    """The server could not be reached or answered garbage."""


class _TaskList(BaseModel):
    tasks: list[Task]


class _Cleared(BaseModel):
    deleted: int


class TasksClient:
    """Typed calls to the tasks MCP server; connects on first use and reconnects after a failure.

    The ``mcp`` client holds anyio task groups that must be exited by the task that entered them, so one
    long-lived task owns the connection while tool calls (each in its own task) share it.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout
        self._client: Client | None = None
        self._owner: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._lock = asyncio.Lock()

    async def _own(self, ready: asyncio.Future[Client]) -> None:
        try:
            async with (
                http_client(headers=self._headers, timeout=MCP_TIMEOUT) as http,
                Client(
                    streamable_http_client(self.url, http_client=http), read_timeout_seconds=self._timeout
                ) as client,
            ):
                ready.set_result(client)
                await self._closing.wait()
        except asyncio.CancelledError:
            ready.cancel()
            raise
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("tasks MCP connection to %s ended: %s", self.url, exc)

    async def _connected(self) -> Client:
        async with self._lock:
            if self._client is not None and self._owner is not None and not self._owner.done():
                return self._client
            self._closing.clear()
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            self._owner = asyncio.create_task(self._own(ready), name="voicefleet.tasks_client")
            try:
                self._client = await asyncio.wait_for(asyncio.shield(ready), self._timeout)
            except Exception as exc:
                await self._drop()
                raise TasksUnavailable(f"the task service at {self.url} is unavailable: {exc}") from exc
            return self._client

    async def _drop(self) -> None:
        owner, self._owner, self._client = self._owner, None, None
        if owner is not None:
            self._closing.set()
            try:
                await asyncio.wait_for(owner, self._timeout)
            except (TimeoutError, asyncio.CancelledError):
                owner.cancel()
            except Exception:  # already logged by the owner
                pass

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        """Call ``tool`` and return its structured result; refusals raise ``TasksError``."""
        client = await self._connected()
        try:
            result: CallToolResult = await client.call_tool(tool, arguments)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            async with self._lock:
                await self._drop()
            raise TasksUnavailable(f"the task service failed during {tool}: {exc}") from exc
        if result.is_error:
            text = " ".join(c.text for c in result.content if isinstance(c, TextContent))
            raise TasksError(text.removeprefix(f"Error executing tool {tool}: ") or f"{tool} failed")
        return result.structured_content

    async def _parse(self, model: type[BaseModel], tool: str, arguments: dict[str, Any]) -> Any:
        data = await self.call(tool, arguments)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise TasksUnavailable(f"the task service returned an unexpected {tool} result") from exc

    async def list_tasks(self, *, include_done: bool = True) -> list[Task]:
        parsed: _TaskList = await self._parse(_TaskList, "list_tasks", {"include_done": include_done})
        return parsed.tasks

    async def get_task(self, task_id: int) -> Task:
        for task in await self.list_tasks():
            if task.id == task_id:
                return task
        raise TasksError(f"no task with id {task_id}")

    async def add_task(self, title: str, due: str | None = None) -> Task:
        args: dict[str, Any] = {"title": title}
        if due:
            args["due"] = due
        task: Task = await self._parse(Task, "add_task", args)
        return task

    async def update_task(self, task_id: int, *, title: str | None = None, due: str | None = None) -> Task:
        args: dict[str, Any] = {"id": task_id}
        if title is not None:
            args["title"] = title
        if due is not None:
            args["due"] = due
        task: Task = await self._parse(Task, "update_task", args)
        return task

    async def complete_task(self, task_id: int) -> Task:
        task: Task = await self._parse(Task, "complete_task", {"id": task_id})
        return task

    async def delete_task(self, task_id: int) -> Task:
        task: Task = await self._parse(Task, "delete_task", {"id": task_id})
        return task

    async def clear_tasks(self) -> int:
        cleared: _Cleared = await self._parse(_Cleared, "clear_tasks", {})
        return cleared.deleted


async def close_quietly(client: TasksClient) -> None:
    with contextlib.suppress(Exception):
        await client.aclose()
