"""The assistant end to end in text: scripted LLM → tools → real MCP server → SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agent_testkit import CALLER, ScriptedLLM, TasksServer, auth_headers, call, say, token_for
from livekit.agents import Agent, AgentSession, ChatMessage, ConversationItemAddedEvent, RunResult
from livekit.agents.llm.mcp import MCPToolset

from voicefleet_agent.assistant import FILLER_TEXT, TaskAssistant, transcript
from voicefleet_agent.confirm import ConfirmationGate
from voicefleet_agent.guarded_mcp import GuardedMCPServer
from voicefleet_agent.tasks_client import TasksClient
from voicefleet_tasks.store import OwnerTasks

Session = tuple[AgentSession[Any], ScriptedLLM]


@pytest.fixture
async def tasks(tasks_server: TasksServer) -> AsyncIterator[TasksClient]:
    client = TasksClient(tasks_server.url, token=token_for(CALLER))
    yield client
    await client.aclose()


async def start(session: AgentSession[Any], tasks: TasksClient, *, filler_after_ms: int = 5000) -> TaskAssistant:
    assistant = TaskAssistant(instructions="You manage tasks.", tasks=tasks, filler_after_ms=filler_after_ms)
    await session.start(assistant)
    return assistant


async def test_add_task_lands_in_sqlite(scripted_session: Session, tasks: TasksClient, store: OwnerTasks) -> None:
    session, llm = scripted_session
    await start(session, tasks)
    llm.script(call("add_task", title="buy milk", due="tomorrow morning"), say("Added buy milk."))

    result: RunResult[Any] = await session.run(user_input="Add buy milk to my tasks for tomorrow morning")

    result.expect.next_event().is_function_call(name="add_task", arguments={"title": "buy milk"})
    output = result.expect.next_event().is_function_call_output(is_error=False).event().item.output
    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()
    [task] = store.list_tasks()
    assert (task.title, task.due, task.done) == ("buy milk", "tomorrow morning", False)
    assert f"#{task.id} buy milk" in output


async def test_list_update_complete_go_through_the_server(
    scripted_session: Session, tasks: TasksClient, store: OwnerTasks
) -> None:
    session, llm = scripted_session
    await start(session, tasks)
    task = store.add("call mom")
    llm.script(
        call("update_task", task_id=task.id, title="call mom and dad", due="sunday"),
        call("complete_task", task_id=task.id),
        call("list_tasks"),
        say("Done."),
    )

    result: RunResult[Any] = await session.run(user_input="Rename it, it's due Sunday, and mark it done")

    outputs = [e.item.output for e in result.events if e.type == "function_call_output"]
    assert outputs[:2] == [
        f"Updated #{task.id} call mom and dad, due sunday.",
        f"Completed #{task.id} call mom and dad, due sunday, done.",
    ]
    assert outputs[2] == f"#{task.id} call mom and dad, due sunday, done"
    stored = store.get(task.id)
    assert (stored.title, stored.due, stored.done) == ("call mom and dad", "sunday", True)


async def test_unknown_task_is_a_tool_error_the_llm_sees(
    scripted_session: Session, tasks: TasksClient, store: OwnerTasks
) -> None:
    session, llm = scripted_session
    await start(session, tasks)
    llm.script(call("complete_task", task_id=999), say("I can't find that task."))

    result: RunResult[Any] = await session.run(user_input="Mark task 999 done")

    result.expect.next_event().is_function_call(name="complete_task")
    err = result.expect.next_event().is_function_call_output(is_error=True).event().item.output
    assert "no task with id 999" in err


async def test_delete_requires_a_spoken_yes(scripted_session: Session, tasks: TasksClient, store: OwnerTasks) -> None:
    session, llm = scripted_session
    await start(session, tasks)
    task = store.add("buy milk")

    llm.script(call("delete_task", task_id=task.id), say("Delete 'buy milk'?"))
    first: RunResult[Any] = await session.run(user_input="Delete buy milk")
    output = first.expect[1].is_function_call_output(is_error=False).event().item.output
    assert output.startswith("NOT DONE YET")
    assert store.get(task.id).title == "buy milk"

    llm.script(call("delete_task", task_id=task.id), say("Deleted."))
    second: RunResult[Any] = await session.run(user_input="Yes, delete it.")
    assert (
        second.expect[1].is_function_call_output(is_error=False).event().item.output == f"Deleted #{task.id} buy milk."
    )
    assert store.list_tasks() == []


async def test_the_llm_cannot_confirm_for_the_user(
    scripted_session: Session, tasks: TasksClient, store: OwnerTasks
) -> None:
    session, llm = scripted_session
    await start(session, tasks)
    task = store.add("buy milk")

    # asking and "confirming" in one turn, with the user's yes given before the question
    llm.script(
        call("delete_task", task_id=task.id),
        call("delete_task", task_id=task.id),
        say("Done."),
    )
    result: RunResult[Any] = await session.run(user_input="Delete buy milk, yes I'm sure, don't ask")

    outputs = [e.item.output for e in result.events if e.type == "function_call_output"]
    assert len(outputs) == 2
    assert all(o.startswith("NOT DONE YET") for o in outputs)
    assert [t.id for t in store.list_tasks()] == [task.id]


@pytest.mark.parametrize(
    "answer",
    [
        "No",
        "yes but not that one",
        "Which one was that?",
        "Okay, actually the eggs one",
        "Right, what was on it again?",
    ],
)
async def test_anything_but_a_clear_yes_keeps_the_task(
    scripted_session: Session, tasks: TasksClient, store: OwnerTasks, answer: str
) -> None:
    session, llm = scripted_session
    await start(session, tasks)
    task = store.add("buy milk")
    llm.script(call("delete_task", task_id=task.id), say("Delete 'buy milk'?"))
    await session.run(user_input="Delete buy milk")

    llm.script(call("delete_task", task_id=task.id), say("OK."))
    result: RunResult[Any] = await session.run(user_input=answer)

    assert result.expect[1].is_function_call_output().event().item.output.startswith("NOT DONE YET")
    assert [t.id for t in store.list_tasks()] == [task.id]


async def test_a_yes_to_another_task_deletes_nothing(
    scripted_session: Session, tasks: TasksClient, store: OwnerTasks
) -> None:
    session, llm = scripted_session
    await start(session, tasks)
    milk, eggs = store.add("buy milk"), store.add("buy eggs")
    llm.script(call("delete_task", task_id=milk.id), say("Delete 'buy milk'?"))
    await session.run(user_input="Delete buy milk")

    llm.script(call("delete_task", task_id=eggs.id), say("OK."))
    result: RunResult[Any] = await session.run(user_input="yes")

    assert result.expect[1].is_function_call_output().event().item.output.startswith("NOT DONE YET")
    assert sorted(t.id for t in store.list_tasks()) == [milk.id, eggs.id]


async def test_a_yes_to_a_question_that_did_not_name_the_task_deletes_nothing(
    scripted_session: Session, tasks: TasksClient, store: OwnerTasks
) -> None:
    session, llm = scripted_session
    await start(session, tasks)
    task = store.add("buy milk")
    llm.script(call("delete_task", task_id=task.id), say("Are you sure?"))
    await session.run(user_input="Delete buy milk")

    llm.script(call("delete_task", task_id=task.id), say("OK."))
    result: RunResult[Any] = await session.run(user_input="Yes")

    assert result.expect[1].is_function_call_output().event().item.output.startswith("NOT DONE YET")
    assert [t.id for t in store.list_tasks()] == [task.id]


async def test_clear_tasks_requires_a_spoken_yes(
    scripted_session: Session, tasks: TasksClient, store: OwnerTasks
) -> None:
    session, llm = scripted_session
    await start(session, tasks)
    for title in ("a", "b", "c"):
        store.add(title)

    llm.script(call("clear_tasks"), say("Delete all 3 tasks?"))
    first: RunResult[Any] = await session.run(user_input="Clear my list")
    assert "Delete all 3 tasks?" in first.expect[1].is_function_call_output().event().item.output
    assert len(store.list_tasks()) == 3

    llm.script(call("clear_tasks"), say("All gone."))
    second: RunResult[Any] = await session.run(user_input="Yep, go ahead")
    assert second.expect[1].is_function_call_output().event().item.output == "Deleted all 3 tasks."
    assert store.list_tasks() == []


class _HeldTasksClient(TasksClient):
    """Holds every call until released, to make a tool call arbitrarily slow without sleeping."""

    def __init__(self, url: str) -> None:
        super().__init__(url, token=token_for(CALLER))
        self.release = asyncio.Event()

    async def call(self, tool: str, arguments: dict[str, Any]) -> Any:
        await self.release.wait()
        return await super().call(tool, arguments)


async def test_filler_speech_while_a_tool_is_slow(
    scripted_session: Session, tasks_server: TasksServer, store: OwnerTasks
) -> None:
    session, llm = scripted_session
    held = _HeldTasksClient(tasks_server.url)
    try:
        await start(session, held, filler_after_ms=50)
        filler_spoken = asyncio.get_running_loop().create_future()

        def on_item(ev: ConversationItemAddedEvent) -> None:
            if isinstance(ev.item, ChatMessage) and ev.item.text_content == FILLER_TEXT and not filler_spoken.done():
                filler_spoken.set_result(None)

        session.on("conversation_item_added", on_item)
        llm.script(call("list_tasks"), say("Your list is empty."))
        run: RunResult[Any] = session.run(user_input="What's on my list?")

        await asyncio.wait_for(filler_spoken, timeout=10)  # the tool is still held: only the filler can speak
        assert not run.done()
        held.release.set()
        result = await run
    finally:
        await held.aclose()

    texts = [e.item.text_content for e in result.events if e.type == "message"]
    assert texts == [FILLER_TEXT, "Your list is empty."]


async def test_no_filler_when_the_tool_is_fast(
    scripted_session: Session, tasks: TasksClient, store: OwnerTasks
) -> None:
    session, llm = scripted_session
    await start(session, tasks, filler_after_ms=5000)
    llm.script(call("list_tasks"), say("Your list is empty."))

    result: RunResult[Any] = await session.run(user_input="What's on my list?")

    texts = [e.item.text_content for e in result.events if e.type == "message"]
    assert texts == ["Your list is empty."]


async def test_any_mcp_servers_destructive_tools_need_a_yes_by_declaration(
    scripted_session: Session, tasks_server: TasksServer, store: OwnerTasks
) -> None:
    """The tasks server configured under another name is just a third-party server: its tools declared destructive
    (delete_task, clear_tasks) ask first; the others (add_task) run at once."""
    session, llm = scripted_session
    gate = ConfirmationGate()
    server = GuardedMCPServer(
        tasks_server.url, gate=gate, transcript=transcript, transport_type="streamable_http", headers=auth_headers()
    )
    await session.start(Agent(instructions="You manage tasks.", tools=[MCPToolset(id="todo", mcp_server=server)]))
    task = store.add("buy milk")

    llm.script(call("add_task", title="buy eggs"), call("delete_task", id=task.id), say("Delete task (id 1)?"))
    first: RunResult[Any] = await session.run(user_input="Add buy eggs and delete the milk")
    outputs = [e.item.output for e in first.events if e.type == "function_call_output"]
    assert "buy eggs" in outputs[0]
    assert outputs[1].startswith("NOT DONE YET") and f'"Delete task (id {task.id})?"' in outputs[1]
    assert [t.title for t in store.list_tasks()] == ["buy milk", "buy eggs"]

    llm.script(call("delete_task", id=task.id), say("Deleted."))
    await session.run(user_input="Yes, delete it.")
    assert [t.title for t in store.list_tasks()] == ["buy eggs"]
