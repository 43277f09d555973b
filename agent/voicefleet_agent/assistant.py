"""The voice assistant: instructions plus thin task tools that delegate to the tasks MCP server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from livekit.agents import Agent, ChatMessage, RunContext, ToolError, function_tool, llm

from voicefleet_agent.confirm import Action, ConfirmationGate, UserMessage, Verdict
from voicefleet_agent.tasks_client import TasksClient, TasksError
from voicefleet_tasks.store import Task

log = logging.getLogger(__name__)

FILLER_TEXT = "Let me check that."

TOOL_GUIDE = """
You manage the user's to-do list with the task tools. Task ids come from list_tasks; never guess one.
Deleting a task or clearing the list needs the user's spoken yes: call delete_task or clear_tasks, ask the question
it gives you, then stop and wait. Only when the user has answered yes, call the same tool again with the same
arguments. A yes the user gave before you asked does not count. Never tell the user something was deleted unless
the tool said it was.
""".strip()

CONFIRM_DELETE = (
    "NOT DELETED YET: this needs the user's confirmation. Ask the user: \"Delete '{title}'?\" and wait for their "
    "answer. If they say yes, call delete_task again with task_id={task_id}."
)
CONFIRM_CLEAR = (
    'NOTHING DELETED YET: this needs the user\'s confirmation. Ask the user: "Delete all {count} tasks?" and wait '
    "for their answer. If they say yes, call clear_tasks again."
)


def describe(task: Task) -> str:
    parts = [f"#{task.id} {task.title}"]
    if task.due:
        parts.append(f"due {task.due}")
    if task.done:
        parts.append("done")
    return ", ".join(parts)


def user_messages(ctx: RunContext[Any]) -> list[UserMessage]:
    """Everything the user said in this session, oldest first."""
    return [
        UserMessage(id=item.id, text=item.text_content or "")
        for item in ctx.session.history.items
        if isinstance(item, ChatMessage) and item.role == "user"
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
    ) -> None:
        full_instructions = f"{instructions.strip()}\n\n{TOOL_GUIDE}" if tasks is not None else instructions
        super().__init__(instructions=full_instructions, tools=list(toolsets or []))
        self._tasks = tasks
        self._filler_delay = filler_after_ms / 1000 if filler_after_ms > 0 else None
        self._filler_text = filler_text
        self.confirmations = ConfirmationGate()
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

    @function_tool
    async def delete_task(self, ctx: RunContext[Any], task_id: int) -> str:
        """Delete a task for good. Needs the user's spoken confirmation: the first call only asks for it.

        Args:
            task_id: The task's id from list_tasks.
        """
        verdict = self.confirmations.decide(Action("delete_task", task_id), user_messages(ctx))
        async with self._calling(ctx):
            if verdict is Verdict.PROCEED:
                task = await self.tasks.delete_task(task_id)
                log.info("deleted task %d after the user confirmed", task_id)
                return f"Deleted {describe(task)}."
            task = await self.tasks.get_task(task_id)
        return CONFIRM_DELETE.format(title=task.title, task_id=task_id)

    @function_tool
    async def clear_tasks(self, ctx: RunContext[Any]) -> str:
        """Delete every task for good. Needs the user's spoken confirmation: the first call only asks for it."""
        verdict = self.confirmations.decide(Action("clear_tasks"), user_messages(ctx))
        async with self._calling(ctx):
            if verdict is Verdict.PROCEED:
                count = await self.tasks.clear_tasks()
                log.info("cleared %d tasks after the user confirmed", count)
                return f"Deleted all {count} tasks."
            count = len(await self.tasks.list_tasks())
        if count == 0:
            return "The list is already empty; nothing to delete."
        return CONFIRM_CLEAR.format(count=count)
