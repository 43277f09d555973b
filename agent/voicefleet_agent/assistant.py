"""The voice assistant: instructions plus thin task tools that delegate to the tasks MCP server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from livekit.agents import Agent, ChatMessage, RunContext, ToolError, function_tool, llm

from voicefleet_agent.confirm import Confirmation, ConfirmationGate, Message, NothingToConfirm, destructive
from voicefleet_agent.tasks_client import TasksClient, TasksError
from voicefleet_tasks.store import Task

log = logging.getLogger(__name__)

FILLER_TEXT = "Let me check that."

TOOL_GUIDE = """
You manage the user's to-do list with the task tools. Task ids come from list_tasks; never guess one.
Deleting a task, clearing the list, or any other destructive tool needs the user's spoken yes: call the tool, ask
the question it gives you word for word, then stop and wait. Only when the user has answered yes, call the same tool
again with the same arguments. A yes the user gave before you asked does not count; if they answer anything else,
do not call the tool again until you have asked again. Never tell the user something was deleted unless the tool
said it was.
""".strip()


def describe(task: Task) -> str:
    parts = [f"#{task.id} {task.title}"]
    if task.due:
        parts.append(f"due {task.due}")
    if task.done:
        parts.append("done")
    return ", ".join(parts)


def transcript(ctx: RunContext[Any]) -> list[Message]:
    """What the user and the agent said in this session, oldest first (the user's words come from STT)."""
    return [
        Message(id=item.id, role="user" if item.role == "user" else "assistant", text=item.text_content or "")
        for item in ctx.session.history.items
        if isinstance(item, ChatMessage) and item.role in ("user", "assistant")
    ]


class TaskAssistant(Agent):
    """A voice assistant for the user's tasks; destructive tools run only after a spoken yes."""

    def __init__(
        self,
        *,
        instructions: str,
        tasks: TasksClient | None,
        filler_after_ms: int,
        filler_text: str = FILLER_TEXT,
        toolsets: list[llm.Toolset] | None = None,
        confirmations: ConfirmationGate | None = None,
    ) -> None:
        full_instructions = f"{instructions.strip()}\n\n{TOOL_GUIDE}" if tasks is not None else instructions
        super().__init__(instructions=full_instructions, tools=list(toolsets or []))
        self._tasks = tasks
        self._filler_delay = filler_after_ms / 1000 if filler_after_ms > 0 else None
        self._filler_text = filler_text
        self.confirmations = confirmations or ConfirmationGate()
        if tasks is None:
            log.warning("no 'tasks' MCP server is configured: every task tool will fail")

    @property
    def tasks(self) -> TasksClient:
        if self._tasks is None:
            raise ToolError("the task service is not configured")
        return self._tasks

    @asynccontextmanager
    async def _calling(self, ctx: RunContext[Any]) -> AsyncIterator[None]:
        """Speak a filler if the call outlasts ``filler_after_ms``; turn service failures into tool errors."""
        try:
            if self._filler_delay is None:
                yield
            else:
                async with ctx.with_filler(self._filler_text, delay=self._filler_delay):
                    yield
        except TasksError as exc:
            raise ToolError(str(exc)) from exc

    @function_tool
    async def list_tasks(self, ctx: RunContext[Any], include_done: bool = True) -> str:
        """List the user's tasks with their ids, open ones first.

        Args:
            include_done: Also list completed tasks.
        """
        async with self._calling(ctx):
            tasks = await self.tasks.list_tasks(include_done=include_done)
        return "\n".join(describe(t) for t in tasks) if tasks else "The list is empty."

    @function_tool
    async def add_task(self, ctx: RunContext[Any], title: str, due: str | None = None) -> str:
        """Add a task to the user's list.

        Args:
            title: What to do, in a few words.
            due: When it is due, as the user said it (e.g. "tomorrow morning"); omit if not said.
        """
        async with self._calling(ctx):
            task = await self.tasks.add_task(title, due)
        return f"Added {describe(task)}."

    @function_tool
    async def update_task(
        self, ctx: RunContext[Any], task_id: int, title: str | None = None, due: str | None = None
    ) -> str:
        """Rename a task or change when it is due.

        Args:
            task_id: The task's id from list_tasks.
            title: The new title; omit to keep it.
            due: The new due date as the user said it; an empty string removes it; omit to keep it.
        """
        async with self._calling(ctx):
            task = await self.tasks.update_task(task_id, title=title, due=due)
        return f"Updated {describe(task)}."

    @function_tool
    async def complete_task(self, ctx: RunContext[Any], task_id: int) -> str:
        """Mark a task as done.

        Args:
            task_id: The task's id from list_tasks.
        """
        async with self._calling(ctx):
            task = await self.tasks.complete_task(task_id)
        return f"Completed {describe(task)}."

    async def _describe_delete(self, task_id: int) -> Confirmation:
        try:
            task = await self.tasks.get_task(task_id)
        except TasksError as exc:
            raise ToolError(str(exc)) from exc
        return Confirmation(question=f"Delete '{task.title}'?", subject=task.title)

    async def _describe_clear(self) -> Confirmation:
        try:
            count = len(await self.tasks.list_tasks())
        except TasksError as exc:
            raise ToolError(str(exc)) from exc
        if count == 0:
            raise NothingToConfirm("The list is already empty; nothing to delete.")
        return Confirmation(question=f"Delete all {count} tasks?", subject="all tasks")

    @function_tool
    @destructive(_describe_delete, transcript=transcript)
    async def delete_task(self, ctx: RunContext[Any], task_id: int) -> str:
        """Delete a task for good. Needs the user's spoken confirmation: the first call only asks for it.

        Args:
            task_id: The task's id from list_tasks.
        """
        async with self._calling(ctx):
            task = await self.tasks.delete_task(task_id)
        log.info("deleted task %d after the user confirmed", task_id)
        return f"Deleted {describe(task)}."

    @function_tool
    @destructive(_describe_clear, transcript=transcript)
    async def clear_tasks(self, ctx: RunContext[Any]) -> str:
        """Delete every task for good. Needs the user's spoken confirmation: the first call only asks for it."""
        async with self._calling(ctx):
            count = await self.tasks.clear_tasks()
        log.info("cleared %d tasks after the user confirmed", count)
        return f"Deleted all {count} tasks."
