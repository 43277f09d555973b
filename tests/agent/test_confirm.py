"""The confirmation gate, pure: what counts as a yes, and when a destructive action may run."""

from __future__ import annotations

from typing import Literal

import pytest
from mcp.types import ToolAnnotations

from voicefleet_agent.confirm import Action, Confirmation, ConfirmationGate, Message, Verdict, is_affirmative, names
from voicefleet_agent.guarded_mcp import confirmation_for, declares_destructive

DELETE_MILK = Action.of("delete_task", {"task_id": 3})
ASK_MILK = Confirmation(question="Delete 'buy milk'?", subject="buy milk")


@pytest.mark.parametrize(
    "text",
    [
        "yes",
        "Yes.",
        "Yes, delete it.",
        "Yeah, go ahead!",
        "go ahead",
        "yep",
        "sure",
        "OK do it",
        "Confirm",
        "Yes please delete it",
        "That\u2019s right",
        "Yes, I'm sure.",
    ],
)
def test_explicit_yes(text: str) -> None:
    assert is_affirmative(text)


@pytest.mark.parametrize(
    "text",
    [
        "no",
        "No, keep it",
        "yes but not that one",
        "maybe",
        "wait",
        "I guess",
        "yes, no, hold on",
        "",
        "not yet",
        "Okay, actually the eggs one",
        "Right, what was on it again?",
        "Yes?",
        "sure, after I add bread",
        "uh-huh",
    ],
)
def test_not_a_yes(text: str) -> None:
    assert not is_affirmative(text)


def test_a_question_names_its_subject_word_by_word() -> None:
    assert names("Delete 'buy milk'?", "buy milk")
    assert names("Should I delete Buy Milk for you?", "buy milk")
    assert not names("Delete 'buy eggs'?", "buy milk")
    assert not names("Are you sure?", "buy milk")


def conversation(*turns: tuple[Literal["user", "assistant"], str]) -> list[Message]:
    return [Message(id=f"m{i}", role=role, text=text) for i, (role, text) in enumerate(turns)]


REQUEST = conversation(("user", "delete buy milk"))
ASKED = [*REQUEST, Message("m1", "assistant", "Delete 'buy milk'?")]


def armed() -> ConfirmationGate:
    gate = ConfirmationGate()
    assert gate.decide(DELETE_MILK, REQUEST) is Verdict.ASK
    gate.request(DELETE_MILK, ASK_MILK, REQUEST)
    assert gate.pending == DELETE_MILK
    return gate


@pytest.mark.parametrize("answer", ["yes", "Yes, delete it.", "go ahead"])
def test_a_yes_to_the_question_that_named_the_task_proceeds(answer: str) -> None:
    gate = armed()
    assert gate.decide(DELETE_MILK, [*ASKED, Message("m2", "user", answer)]) is Verdict.PROCEED
    assert gate.pending is None


@pytest.mark.parametrize("answer", ["Okay, actually the eggs one", "Right, what was on it again?", "no", "hmm"])
def test_anything_else_is_not_a_confirmation(answer: str) -> None:
    gate = armed()
    assert gate.decide(DELETE_MILK, [*ASKED, Message("m2", "user", answer)]) is Verdict.ASK


def test_no_reply_yet_keeps_asking() -> None:
    gate = armed()
    assert gate.decide(DELETE_MILK, ASKED) is Verdict.ASK


def test_a_yes_given_before_the_question_does_not_count() -> None:
    gate = ConfirmationGate()
    history = conversation(("user", "delete buy milk, yes"))
    gate.request(DELETE_MILK, ASK_MILK, history)
    assert gate.decide(DELETE_MILK, history) is Verdict.ASK


def test_a_yes_to_a_question_that_did_not_name_the_task_does_not_count() -> None:
    gate = armed()
    vague = [*REQUEST, Message("m1", "assistant", "Are you sure?"), Message("m2", "user", "yes")]
    assert gate.decide(DELETE_MILK, vague) is Verdict.ASK


def test_a_yes_to_another_question_asked_after_ours_does_not_count() -> None:
    gate = armed()
    later = [*ASKED, Message("m2", "assistant", "Or shall I add bread?"), Message("m3", "user", "yes")]
    assert gate.decide(DELETE_MILK, later) is Verdict.ASK


def test_a_stale_yes_does_not_count() -> None:
    gate = armed()
    # the user said yes, then something else: the yes no longer answers the question
    history = [*ASKED, Message("m2", "user", "yes"), Message("m3", "user", "add bread")]
    assert gate.decide(DELETE_MILK, history) is Verdict.ASK


def test_a_yes_is_for_one_action_only() -> None:
    gate = armed()
    answered = [*ASKED, Message("m2", "user", "yes")]
    assert gate.decide(Action.of("delete_task", {"task_id": 4}), answered) is Verdict.ASK
    assert gate.decide(Action("clear_tasks"), answered) is Verdict.ASK


def test_a_confirmation_is_used_once() -> None:
    gate = armed()
    answered = [*ASKED, Message("m2", "user", "yes")]
    assert gate.decide(DELETE_MILK, answered) is Verdict.PROCEED
    assert gate.decide(DELETE_MILK, answered) is Verdict.ASK


def test_the_instruction_quotes_the_question() -> None:
    instruction = ConfirmationGate().request(DELETE_MILK, ASK_MILK, REQUEST)
    assert instruction.startswith("NOT DONE YET")
    assert "\"Delete 'buy milk'?\"" in instruction


@pytest.mark.parametrize(
    ("annotations", "destructive"),
    [
        (None, True),  # MCP defaults: not read-only, destructive
        (ToolAnnotations(), True),
        (ToolAnnotations(read_only_hint=True), False),
        (ToolAnnotations(read_only_hint=False, destructive_hint=False), False),
        (ToolAnnotations(read_only_hint=False, destructive_hint=True), True),
    ],
)
def test_mcp_tools_are_destructive_by_their_declaration(annotations: ToolAnnotations | None, destructive: bool) -> None:
    assert declares_destructive(annotations) is destructive


def test_a_third_party_tool_is_asked_by_name_and_arguments() -> None:
    confirmation = confirmation_for("cancel_meeting", {"meeting_id": 7})
    assert confirmation.question == "Cancel meeting (meeting_id 7)?"
    assert names(confirmation.question, confirmation.subject)
