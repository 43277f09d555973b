"""The tasks MCP server over streamable HTTP, with the real ``mcp`` client."""

from __future__ import annotations

import asyncio

import pytest
from agent_testkit import TasksServer
from mcp import Client

from voicefleet_agent.tasks_client import TasksClient, TasksError, TasksUnavailable
from voicefleet_tasks.store import TaskStore

TOOLS = {"list_tasks", "add_task", "update_task", "complete_task", "delete_task", "clear_tasks"}


async def test_tools_and_their_hints(tasks_server: TasksServer) -> None:
    async with Client(tasks_server.url) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}

    assert set(listed) == TOOLS
    destructive = {n for n, t in listed.items() if t.annotations and t.annotations.destructive_hint}
    assert destructive == {"delete_task", "clear_tasks"}
    assert listed["list_tasks"].annotations is not None and listed["list_tasks"].annotations.read_only_hint
    assert listed["add_task"].input_schema["required"] == ["title"]


async def test_calls_change_the_database(tasks_server: TasksServer, store: TaskStore) -> None:
    async with Client(tasks_server.url) as client:
        added = await client.call_tool("add_task", {"title": "buy milk", "due": "today"})
        task_id = added.structured_content["id"]
        await client.call_tool("complete_task", {"id": task_id})
        missing = await client.call_tool("delete_task", {"id": task_id + 1000})

    assert not added.is_error
    assert store.get(task_id).done
    assert missing.is_error
    assert "no task with id" in missing.content[0].text  # type: ignore[union-attr]


async def test_concurrent_clients(tasks_server: TasksServer, store: TaskStore) -> None:
    clients, per_client = 8, 10

    async def session(n: int) -> list[int]:
        async with Client(tasks_server.url) as client:
            ids = []
            for i in range(per_client):
                result = await client.call_tool("add_task", {"title": f"client {n} task {i}"})
                ids.append(result.structured_content["id"])
            await asyncio.gather(*(client.call_tool("complete_task", {"id": t}) for t in ids[::2]))
            listed = await client.call_tool("list_tasks", {})
            # every task this client added is visible to it, whatever the others did meanwhile
            assert set(ids) <= {t["id"] for t in listed.structured_content["tasks"]}
            return ids

    results = await asyncio.gather(*(session(n) for n in range(clients)))

    all_ids = [i for ids in results for i in ids]
    assert len(set(all_ids)) == clients * per_client
    stored = store.list_tasks()
    assert len(stored) == clients * per_client
    assert sum(t.done for t in stored) == clients * per_client // 2


async def test_client_typed_calls_and_errors(tasks_server: TasksServer, store: TaskStore) -> None:
    client = TasksClient(tasks_server.url)
    try:
        task = await client.add_task("water plants", "tonight")
        assert (await client.get_task(task.id)).due == "tonight"
        assert (await client.update_task(task.id, title="water the plants")).title == "water the plants"
        with pytest.raises(TasksError, match="needs a title"):
            await client.add_task("   ")
        assert await client.clear_tasks() == 1
        assert await client.list_tasks() == []
    finally:
        await client.aclose()


async def test_client_reports_an_unreachable_server() -> None:
    client = TasksClient("http://127.0.0.1:9/mcp", timeout=2)
    try:
        with pytest.raises(TasksUnavailable, match="unavailable"):
            await client.list_tasks()
    finally:
        await client.aclose()
