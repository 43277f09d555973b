"""The caller's task list, sent to the room after every task tool so a page can show it (contract.TASKS_TOPIC)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from voicefleet_agent.contract import TASKS_TOPIC
from voicefleet_agent.tasks_client import TasksClient, TasksError
from voicefleet_tasks.store import Task

log = logging.getLogger(__name__)

# the tools of TaskAssistant whose result changes or shows the list
TASK_TOOLS = frozenset({"list_tasks", "add_task", "update_task", "complete_task", "delete_task", "clear_tasks"})


class TextSender(Protocol):
    async def send_text(self, text: str, *, topic: str = ..., compress: bool = ...) -> Any: ...


def encode(tasks: list[Task]) -> str:
    return json.dumps([t.model_dump(mode="json") for t in tasks])


class TaskListPublisher:
    """Sends the list once at start and after each batch of tools that touched it; one send at a time, the
    latest wins (a batch that lands while a send is running triggers one more)."""

    def __init__(self, sender: TextSender, tasks: TasksClient) -> None:
        self._sender = sender
        self._tasks = tasks
        self._pending = False
        self._running: asyncio.Task[None] | None = None

    def on_tools_executed(self, event: Any) -> None:
        if any(call.name in TASK_TOOLS for call in event.function_calls):
            self.publish()

    def publish(self) -> None:
        self._pending = True
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._drain(), name="voicefleet-task-list")

    async def _drain(self) -> None:
        while self._pending:
            self._pending = False
            try:
                tasks = await self._tasks.list_tasks(include_done=True)
                await self._sender.send_text(encode(tasks), topic=TASKS_TOPIC, compress=False)
            except (TasksError, RuntimeError, ConnectionError) as exc:
                log.warning("task list not sent: %s", exc)

    async def aclose(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)
