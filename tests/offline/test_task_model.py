"""The deterministic task model behind the offline chat completions: pure functions, no server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from voicefleet_offline.dialogue import CONFIRM_QUESTION, Reply, ToolSpec, parse_tasks, pick_tool, respond
from voicefleet_offline.intents import Intent, Kind, parse


@pytest.mark.parametrize(
    ("utterance", "expected"),
    [
        ("Add buy milk to my tasks for tomorrow morning.", Intent(Kind.ADD, title="buy milk", due="tomorrow morning")),
        # Whisper tiny.en on espeak audio, verbatim
        (" and my milk to my tasks for tomorrow morning.", Intent(Kind.ADD, title="milk", due="tomorrow morning")),
        ("I'll add my milk to my tasks.", Intent(Kind.ADD, title="milk")),
        ("Mark my milk has done.", Intent(Kind.COMPLETE, title="milk")),
        ("Remind me to call mom tomorrow at 5 pm", Intent(Kind.ADD, title="call mom", due="tomorrow at 5 pm")),
        (
            "Create a task called write report due next Monday",
            Intent(Kind.ADD, title="write report", due="next monday"),
        ),
        ("What's on my list?", Intent(Kind.LIST)),
        ("Show me my completed tasks", Intent(Kind.LIST, status="done")),
        ("I finished the laundry", Intent(Kind.COMPLETE, title="laundry")),
        ("Complete task 3", Intent(Kind.COMPLETE, number=3)),
        ("Rename call mom to call dad.", Intent(Kind.UPDATE, title="call mom", new_title="call dad")),
        ("Move the dentist to Friday", Intent(Kind.UPDATE, title="dentist", due="friday")),
        ("Delete the dentist task.", Intent(Kind.DELETE, title="dentist")),
        ("Remove the second one", Intent(Kind.DELETE, number=2)),
        ("Clear all my tasks", Intent(Kind.CLEAR)),
        ("Yes please", Intent(Kind.YES)),
        ("Yes, delete it.", Intent(Kind.YES)),
        ("No thanks", Intent(Kind.NO)),
        ("and then what", Intent(Kind.UNKNOWN)),
        ("What's the weather like?", Intent(Kind.UNKNOWN)),
    ],
)
def test_parse(utterance: str, expected: Intent) -> None:
    assert parse(utterance) == expected


def _tool(name: str, props: dict[str, Any], description: str = "") -> ToolSpec:
    return ToolSpec(name, description, {"type": "object", "properties": props, "required": list(props)})


NULLABLE_STR = {"type": ["string", "null"]}
TOOLS = [
    _tool("add_task", {"title": {"type": "string"}, "due": NULLABLE_STR}),
    _tool("list_tasks", {}),
    _tool("update_task", {"task_id": {"type": "string"}, "title": NULLABLE_STR, "status": {"enum": ["open", "done"]}}),
    _tool("remove_task", {"task_id": {"type": "string"}}),
    _tool("delete_all_tasks", {}),
]


def _call(reply: Reply) -> tuple[str, dict[str, Any]]:
    assert reply.text is None and len(reply.tool_calls) == 1
    return reply.tool_calls[0].name, reply.tool_calls[0].arguments


def _with_result(messages: list[dict[str, Any]], reply: Reply, output: str) -> list[dict[str, Any]]:
    call = reply.tool_calls[0]
    return [
        *messages,
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": output},
    ]


def test_tools_are_chosen_by_name() -> None:
    assert [pick_tool(k, TOOLS).name for k in (Kind.ADD, Kind.LIST, Kind.DELETE, Kind.CLEAR)] == [  # type: ignore[union-attr]
        "add_task",
        "list_tasks",
        "remove_task",
        "delete_all_tasks",
    ]
    # no complete tool: an update tool with a status field does the job
    assert pick_tool(Kind.COMPLETE, TOOLS) is TOOLS[2]
    assert pick_tool(Kind.ADD, [_tool("get_weather", {})]) is None


def test_complete_through_update_tool_after_listing() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "mark buy milk as done"}]
    first = respond(messages, TOOLS)
    assert _call(first) == ("list_tasks", {})
    messages = _with_result(messages, first, "1. call mom\n2. buy milk")
    second = respond(messages, TOOLS)
    assert _call(second) == ("update_task", {"task_id": "2", "title": "buy milk", "status": "done"})
    final = respond(_with_result(messages, second, "ok"), TOOLS)
    assert final.text == "Nice work! I've marked buy milk as done."


def test_clear_needs_a_yes() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "clear my list"}]
    assert respond(messages, TOOLS).text == CONFIRM_QUESTION
    messages += [{"role": "assistant", "content": CONFIRM_QUESTION}, {"role": "user", "content": "yes"}]
    assert _call(respond(messages, TOOLS)) == ("delete_all_tasks", {})
    declined = [*messages[:-1], {"role": "user", "content": "no"}]
    assert "leave" in (respond(declined, TOOLS).text or "")


def test_tool_errors_are_reported() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "delete task 12"}]
    first = respond(messages, TOOLS)
    assert _call(first) == ("list_tasks", {})
    reply = respond(_with_result(messages, first, json.dumps({"tasks": [{"id": "12", "title": "x"}]})), TOOLS)
    assert _call(reply) == ("remove_task", {"task_id": "12"})
    messages = _with_result(_with_result(messages, first, json.dumps([{"id": "12", "title": "x"}])), reply, "")
    messages[-1]["content"] = '{"error": "task 12 is locked"}'
    assert respond(messages, TOOLS).text == "Sorry, I couldn't do that: task 12 is locked."


def test_list_summary() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "what are my tasks"}]
    first = respond(messages, TOOLS)
    listing = json.dumps(
        [{"id": 1, "title": "buy milk", "due": "tomorrow"}, {"id": 2, "title": "call mom", "done": True}]
    )
    text = respond(_with_result(messages, first, listing), TOOLS).text
    assert text == "You have 2 tasks: buy milk (due tomorrow) and call mom (done)."


def test_tool_choice_none_and_forced() -> None:
    messages = [{"role": "user", "content": "add eggs to my list"}]
    assert respond(messages, TOOLS, "none").text == "Sorry, I can't add tasks right now."
    forced = respond(messages, TOOLS, {"type": "function", "function": {"name": "list_tasks"}})
    assert _call(forced) == ("list_tasks", {})


def test_opening_turn_without_user_message() -> None:
    assert respond([{"role": "system", "content": "Greet the user."}], TOOLS).text.startswith("Hi")  # type: ignore[union-attr]


def test_parse_tasks_formats() -> None:
    assert [t.title for t in parse_tasks("- [x] buy milk\n- [ ] call mom") or []] == ["buy milk", "call mom"]
    assert [(t.id, t.done) for t in parse_tasks('{"tasks": [{"id": 3, "name": "a", "status": "done"}]}') or []] == [
        ("3", True)
    ]
    assert parse_tasks("All good") is None


def _conversation(tools: list[ToolSpec], turns: list[str], tool_output: dict[str, list[str]]) -> list[str]:
    """Drive respond() like an agent would: run tool calls (outputs scripted per tool), speak text replies."""
    messages: list[dict[str, Any]] = []
    spoken: list[str] = []
    outputs = {name: iter(values) for name, values in tool_output.items()}
    for i, turn in enumerate(turns):
        messages.append({"role": "user", "content": turn})
        for step in range(5):
            reply = respond(messages, tools)
            if reply.text is not None:
                spoken.append(reply.text)
                messages.append({"role": "assistant", "content": reply.text})
                break
            call = reply.tool_calls[0]
            call_id = f"c{i}_{step}"
            messages.append({"role": "assistant", "tool_calls": [{"id": call_id, "type": "function", "function": {
                "name": call.name, "arguments": json.dumps(call.arguments)}}]})  # fmt: skip
            messages.append({"role": "tool", "tool_call_id": call_id, "content": next(outputs[call.name])})
            spoken.append(f"<{call.name} {json.dumps(call.arguments, sort_keys=True)}>")
    return spoken


# the task agent's tool shapes: ids from list_tasks, deletions confirmed by a second identical call
AGENT_TOOLS = [
    _tool("list_tasks", {"include_done": {"type": ["boolean", "null"]}}, "List the user's tasks with their ids."),
    _tool("add_task", {"title": {"type": "string"}, "due": NULLABLE_STR}, "Add a task to the user's list."),
    _tool("complete_task", {"task_id": {"type": "integer"}}, "Mark a task as done."),
    _tool("delete_task", {"task_id": {"type": "integer"}}, "Delete a task. Needs the user's spoken confirmation."),
    _tool("clear_tasks", {}, "Delete every task. Needs the user's spoken confirmation: the first call only asks."),
]
LISTING = "#1 buy milk, due tomorrow morning\n#2 call the dentist"
ASK_DELETE = (
    "NOT DONE YET: this needs the user's confirmation. Ask the user: \"Delete 'call the dentist'?\" and wait for "
    "their answer. Only if they say yes, call delete_task again with the same arguments."
)
ASK_DELETE_MILK = ASK_DELETE.replace("call the dentist", "buy milk")


def test_tool_driven_confirmation_protocol() -> None:
    spoken = _conversation(
        AGENT_TOOLS,
        ["delete the dentist task", "yes"],
        {"list_tasks": [LISTING], "delete_task": [ASK_DELETE, "Deleted #2 call the dentist."]},
    )
    assert spoken == [
        '<list_tasks {"include_done": null}>',
        '<delete_task {"task_id": 2}>',
        "Delete 'call the dentist'?",
        '<delete_task {"task_id": 2}>',
        "Okay, I've removed call the dentist.",
    ]


@pytest.mark.parametrize("answer", ["Yes, delete it.", "Yeah, go ahead.", "Yes please, remove it"])
def test_a_spoken_yes_with_words_after_it_confirms(answer: str) -> None:
    spoken = _conversation(
        AGENT_TOOLS,
        ["delete the dentist task", answer],
        {"list_tasks": [LISTING], "delete_task": [ASK_DELETE, "Deleted #2 call the dentist."]},
    )
    assert spoken[-2:] == ['<delete_task {"task_id": 2}>', "Okay, I've removed call the dentist."]


def test_naming_another_task_instead_of_answering_asks_about_that_one() -> None:
    spoken = _conversation(
        AGENT_TOOLS,
        ["delete the dentist task", "Okay, actually the milk one"],
        {"list_tasks": [LISTING], "delete_task": [ASK_DELETE, ASK_DELETE_MILK]},
    )
    assert spoken[-2:] == ['<delete_task {"task_id": 1}>', "Delete 'buy milk'?"]


@pytest.mark.parametrize("answer", ["Right, what was on it again?", "Okay", "hmm, the other thing"])
def test_an_answer_that_is_not_a_yes_changes_nothing(answer: str) -> None:
    spoken = _conversation(
        AGENT_TOOLS,
        ["delete the dentist task", answer],
        {"list_tasks": [LISTING], "delete_task": [ASK_DELETE]},
    )
    assert spoken[-1] == "Alright, I'll leave your tasks as they are."


def test_tool_driven_confirmation_declined_and_clear() -> None:
    spoken = _conversation(
        AGENT_TOOLS,
        ["clear my list", "no", "wipe all my tasks", "yes"],
        {"clear_tasks": ['Ask the user: "Delete all 2 tasks?" to confirm.'] * 2 + ["Deleted all 2 tasks."]},
    )
    assert spoken == [
        "<clear_tasks {}>",
        "Delete all 2 tasks?",
        "Alright, I'll leave your tasks as they are.",
        "<clear_tasks {}>",
        "Delete all 2 tasks?",
        "<clear_tasks {}>",
        "All done, your task list is now empty.",
    ]


def test_agent_listing_and_completion() -> None:
    spoken = _conversation(
        AGENT_TOOLS,
        ["What's on my list?", "Mark my milk has done."],
        {"list_tasks": [LISTING], "complete_task": ["Completed #1 buy milk, due tomorrow morning, done."]},
    )
    assert spoken == [
        '<list_tasks {"include_done": null}>',
        "You have 2 tasks: buy milk (due tomorrow morning) and call the dentist.",
        '<complete_task {"task_id": 1}>',
        "Nice work! I've marked buy milk as done.",
    ]
