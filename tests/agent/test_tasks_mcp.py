"""The tasks MCP server over streamable HTTP, with the real ``mcp`` client."""

from __future__ import annotations

import asyncio

import httpx2
import pytest
from agent_testkit import CALLER, TOKEN_KEY, TasksServer, mcp_client, token_for

from voicefleet_agent.tasks_client import TasksClient, TasksError, TasksUnavailable
from voicefleet_tasks.store import OwnerTasks

TOOLS = {"list_tasks", "add_task", "update_task", "complete_task", "delete_task", "clear_tasks"}


async def test_tools_and_their_hints(tasks_server: TasksServer) -> None:
    async with mcp_client(tasks_server.url) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}

    assert set(listed) == TOOLS
    destructive = {n for n, t in listed.items() if t.annotations and t.annotations.destructive_hint}
    assert destructive == {"delete_task", "clear_tasks"}
    assert listed["list_tasks"].annotations is not None and listed["list_tasks"].annotations.read_only_hint
    assert listed["add_task"].input_schema["required"] == ["title"]


async def test_calls_change_the_database(tasks_server: TasksServer, store: OwnerTasks) -> None:
    async with mcp_client(tasks_server.url) as client:
        added = await client.call_tool("add_task", {"title": "buy milk", "due": "today"})
        task_id = added.structured_content["id"]
        await client.call_tool("complete_task", {"id": task_id})
        missing = await client.call_tool("delete_task", {"id": task_id + 1000})

    assert not added.is_error
    assert store.get(task_id).done
    assert missing.is_error
    assert "no task with id" in missing.content[0].text  # type: ignore[union-attr]


async def test_concurrent_clients(tasks_server: TasksServer, store: OwnerTasks) -> None:
    clients, per_client = 8, 10

    async def session(n: int) -> list[int]:
        async with mcp_client(tasks_server.url) as client:
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


async def test_client_typed_calls_and_errors(tasks_server: TasksServer, store: OwnerTasks) -> None:
    client = TasksClient(tasks_server.url, token=token_for(CALLER))
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


async def test_two_callers_never_see_each_others_tasks(tasks_server: TasksServer, store: OwnerTasks) -> None:
    alice = TasksClient(tasks_server.url, token=token_for("participant:alice"))
    phone = TasksClient(tasks_server.url, token=token_for("phone:+15550100"))
    try:
        milk = await alice.add_task("buy milk")
        await phone.add_task("call mom")

        assert [t.title for t in await alice.list_tasks()] == ["buy milk"]
        assert [t.title for t in await phone.list_tasks()] == ["call mom"]
        with pytest.raises(TasksError, match="no task with id"):
            await phone.delete_task(milk.id)
        with pytest.raises(TasksError, match="no task with id"):
            await phone.update_task(milk.id, title="mine now")
        assert await phone.clear_tasks() == 1
        assert [t.title for t in await alice.list_tasks()] == ["buy milk"]
        assert store.list_tasks() == []  # and the test's own caller saw nothing of either
    finally:
        await alice.aclose()
        await phone.aclose()


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Caller": "participant:alice"},
        {"Authorization": "Bearer participant:alice"},
        {"Authorization": f"Bearer {token_for('participant:alice', key='another-key-0123456789abcdef')}"},
        {"Authorization": f"Bearer {token_for('participant:alice', ttl=-10)}"},
    ],
    ids=["none", "bare-header", "bare-identity", "forged", "expired"],
)
async def test_a_request_without_a_valid_caller_token_is_refused(
    tasks_server: TasksServer, headers: dict[str, str]
) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(
            tasks_server.url,
            json=INITIALIZE,
            headers={**headers, "Accept": "application/json, text/event-stream"},
        )
    assert response.status_code == 401
    assert TOKEN_KEY not in response.text
