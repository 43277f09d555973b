"""The caller's task list, sent to the room after every task tool so a page can show it (contract.TASKS_TOPIC).

The send waits for the agent to leave "thinking" (its answer to the tools starts playing, or it goes back to
listening): reading the list again and sending it is not on the way to the caller hearing that answer, so it does not
compete with the answer's LLM request and speech.
"""

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
    """Sends the list once at start and after each batch of tools that touched it, once the agent stops thinking
    (``on_agent_state``); one send at a time, the latest wins (a batch that lands while a send is running triggers
    one more)."""

    def __init__(self, sender: TextSender, tasks: TasksClient) -> None:
        self._sender = sender
        self._tasks = tasks
        self._pending = False
        self._changed = False  # task tools ran; sent when the agent stops thinking
        self._thinking = False
        self._running: asyncio.Task[None] | None = None

    def on_tools_executed(self, event: Any) -> None:
        if any(call.name in TASK_TOOLS for call in event.function_calls):
            self._changed = True
            if not self._thinking:
                self._publish_changes()

    def on_agent_state(self, event: Any) -> None:
        """``agent_state_changed``: the agent stays "thinking" from the tools' output to its answer's first audio."""
        self._thinking = event.new_state == "thinking"
        if not self._thinking:
            self._publish_changes()

    def _publish_changes(self) -> None:
        if self._changed:
            self._changed = False
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
