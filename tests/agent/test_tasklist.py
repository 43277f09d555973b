"""The task list sent to the page: once per batch of task tools, coalesced while a send runs, never for other tools."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from voicefleet_agent.contract import TASKS_TOPIC
from voicefleet_agent.tasklist import TaskListPublisher
from voicefleet_tasks.store import Task


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.release = asyncio.Event()

    async def send_text(self, text: str, *, topic: str = "", compress: bool = True) -> None:
        await self.release.wait()
        self.sent.append((topic, text))


class Tasks:
    def __init__(self) -> None:
        self.titles: list[str] = []

    async def list_tasks(self, include_done: bool = True) -> list[Task]:
        return [Task(id=i, title=t, created_at="2026-11-30") for i, t in enumerate(self.titles, 1)]


def tools(*names: str) -> Any:
    return SimpleNamespace(function_calls=[SimpleNamespace(name=n) for n in names])


async def test_task_tools_send_the_latest_list_and_bursts_coalesce() -> None:
    sender, tasks = Recorder(), Tasks()
    publisher = TaskListPublisher(sender, tasks)  # type: ignore[arg-type]
    publisher.on_tools_executed(tools("lookup_weather"))
    await asyncio.sleep(0)
    assert publisher._running is None  # not a task tool: nothing sent

    publisher.publish()
    await asyncio.sleep(0)
    tasks.titles = ["buy milk"]
    publisher.on_tools_executed(tools("add_task"))
    publisher.on_tools_executed(tools("add_task", "list_tasks"))
    sender.release.set()
    assert publisher._running is not None
    await publisher._running
    assert [topic for topic, _ in sender.sent] == [TASKS_TOPIC, TASKS_TOPIC]  # the first, then one for the burst
    assert [t["title"] for t in json.loads(sender.sent[-1][1])] == ["buy milk"]
    await publisher.aclose()


def state(new: str) -> Any:
    return SimpleNamespace(new_state=new)


async def test_the_list_waits_while_the_agent_thinks_of_its_answer() -> None:
    sender, tasks = Recorder(), Tasks()
    sender.release.set()
    publisher = TaskListPublisher(sender, tasks)  # type: ignore[arg-type]
    publisher.on_agent_state(state("thinking"))
    tasks.titles = ["buy milk"]
    publisher.on_tools_executed(tools("add_task"))
    await asyncio.sleep(0.05)
    assert publisher._running is None and sender.sent == []  # not while the answer is on its way

    publisher.on_agent_state(state("speaking"))  # the answer plays: now the page gets the list
    assert publisher._running is not None
    await publisher._running
    assert [t["title"] for t in json.loads(sender.sent[-1][1])] == ["buy milk"]
    publisher.on_agent_state(state("listening"))
    await asyncio.sleep(0)
    assert len(sender.sent) == 1  # sent once, not again on every state change
    await publisher.aclose()
