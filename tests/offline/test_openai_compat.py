"""The real OpenAI plugin (STT and LLM) and the openai SDK against the offline OpenAI-compatible server."""

from __future__ import annotations

import json

import openai as openai_sdk
import pytest
from livekit.agents import llm
from livekit.agents.llm import ChatContext, function_tool
from livekit.plugins import openai

from voicefleet_offline import OfflineStack

from .conftest import frames, requires_espeak


@function_tool
async def add_task(title: str, due: str | None = None) -> str:
    """Add a task to the user's task list.

    Args:
        title: What needs doing.
        due: When it is due, as the user said it.
    """
    return "ok"


@function_tool
async def list_tasks() -> str:
    """List the user's tasks."""
    return "[]"


@function_tool
async def complete_task(task_id: int) -> str:
    """Mark a task as done."""
    return "ok"


async def _run(
    model: llm.LLM, ctx: ChatContext, tools: list[llm.Tool]
) -> tuple[str, list[llm.FunctionToolCall], llm.CompletionUsage | None]:
    text = ""
    calls: list[llm.FunctionToolCall] = []
    usage: llm.CompletionUsage | None = None
    async with model.chat(chat_ctx=ctx, tools=tools) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                text += chunk.delta.content
            if chunk.delta and chunk.delta.tool_calls:
                calls.extend(chunk.delta.tool_calls)
            if chunk.usage:
                usage = chunk.usage
    return text, calls, usage


def _llm(stack: OfflineStack) -> openai.LLM:
    return openai.LLM(model="gpt-4o-mini", base_url=stack.openai.provider_url, api_key="offline")


def _user(text: str) -> ChatContext:
    ctx = ChatContext.empty()
    ctx.add_message(role="system", content="You manage the user's tasks.")
    ctx.add_message(role="user", content=text)
    return ctx


async def test_llm_calls_the_add_tool_with_title_and_due(stack: OfflineStack) -> None:
    ctx = _user("Add buy milk to my tasks for tomorrow morning.")
    text, calls, usage = await _run(_llm(stack), ctx, [add_task, list_tasks, complete_task])

    assert text == ""
    assert [c.name for c in calls] == ["add_task"]
    assert json.loads(calls[0].arguments) == {"title": "buy milk", "due": "tomorrow morning"}
    assert usage is not None and usage.prompt_tokens > 20 and usage.completion_tokens > 0


async def test_llm_tolerates_whisper_mishearing(stack: OfflineStack) -> None:
    _, calls, _ = await _run(_llm(stack), _user(" and my milk to my tasks."), [add_task, list_tasks])
    assert [c.name for c in calls] == ["add_task"]
    assert json.loads(calls[0].arguments)["title"] == "milk"


async def test_llm_answers_in_text_after_the_tool_result(stack: OfflineStack) -> None:
    ctx = _user("Add buy milk to my tasks")
    model = _llm(stack)
    _, calls, _ = await _run(model, ctx, [add_task])
    call = calls[0]
    ctx.insert(llm.FunctionCall(call_id=call.call_id, name=call.name, arguments=call.arguments))
    ctx.insert(llm.FunctionCallOutput(call_id=call.call_id, name=call.name, output='{"id": 7}', is_error=False))

    text, more_calls, _ = await _run(model, ctx, [add_task])
    assert more_calls == []
    assert "buy milk" in text and text.endswith(".")


async def test_llm_resolves_an_id_by_listing_first(stack: OfflineStack) -> None:
    model = _llm(stack)
    ctx = _user("Mark buy milk as done")
    _, calls, _ = await _run(model, ctx, [add_task, list_tasks, complete_task])
    assert [c.name for c in calls] == ["list_tasks"]
    ctx.insert(llm.FunctionCall(call_id=calls[0].call_id, name="list_tasks", arguments="{}"))
    listing = json.dumps([{"id": 4, "title": "call mom"}, {"id": 9, "title": "buy milk"}])
    ctx.insert(llm.FunctionCallOutput(call_id=calls[0].call_id, name="list_tasks", output=listing, is_error=False))

    _, calls, _ = await _run(model, ctx, [add_task, list_tasks, complete_task])
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("complete_task", {"task_id": 9})]


async def test_llm_chit_chat_is_text_only(stack: OfflineStack) -> None:
    text, calls, _ = await _run(_llm(stack), _user("Hello there!"), [add_task])
    assert calls == []
    assert text.startswith("Hi")


async def test_non_streaming_completion_through_the_sdk(stack: OfflineStack) -> None:
    client = openai_sdk.AsyncOpenAI(base_url=stack.openai.provider_url, api_key="offline", max_retries=0)
    tools = [{"type": "function", "function": {"name": "delete_task", "parameters": {
        "type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}}]  # fmt: skip
    resp = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Delete the dentist task"}], tools=tools
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"title": "dentist"}
    assert resp.usage is not None and resp.usage.total_tokens > 0
    models = await client.models.list()
    assert "gpt-4o-mini" in [m.id for m in models.data]
    await client.close()


@requires_espeak
@pytest.mark.usefixtures("http")
async def test_stt_transcribes_with_whisper(stack: OfflineStack, milk_pcm: bytes) -> None:
    for model in ("whisper-1", "gpt-4o-mini-transcribe"):
        stt = openai.STT(model=model, base_url=stack.openai.provider_url, api_key="offline")
        event = await stt.recognize(list(frames(milk_pcm)))
        assert "milk" in event.alternatives[0].text.lower(), model
        assert event.alternatives[0].language.startswith("en")
    assert stack.openai.state()["counters"]["by_path"] == {"/v1/audio/transcriptions": 2}
