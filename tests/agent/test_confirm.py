"""The confirmation gate, pure: what counts as a yes and when a destructive action may run."""

from __future__ import annotations

import pytest

from voicefleet_agent.confirm import Action, ConfirmationGate, UserMessage, Verdict, is_affirmative

DELETE_3 = Action("delete_task", 3)


@pytest.mark.parametrize(
    "text",
    [
        "yes",
        "Yes.",
        "Yeah, go ahead!",
        "yep",
        "sure",
        "OK do it",
        "Confirm",
        "Yes please delete it",
        "That\u2019s right",
    ],
)
def test_explicit_yes(text: str) -> None:
    assert is_affirmative(text)


@pytest.mark.parametrize(
    "text",
    ["no", "No, keep it", "yes but not that one", "maybe", "wait", "I guess", "yes, no, hold on", "", "not yet"],
)
def test_not_a_yes(text: str) -> None:
    assert not is_affirmative(text)


def msgs(*texts: str) -> list[UserMessage]:
    return [UserMessage(id=f"m{i}", text=t) for i, t in enumerate(texts)]


def test_first_request_asks_and_the_answer_decides() -> None:
    gate = ConfirmationGate()
    assert gate.decide(DELETE_3, msgs("delete task 3")) is Verdict.ASK
    assert gate.pending == DELETE_3
    assert gate.decide(DELETE_3, msgs("delete task 3", "yes")) is Verdict.PROCEED
    assert gate.pending is None


def test_no_reply_yet_keeps_asking() -> None:
    gate = ConfirmationGate()
    history = msgs("delete task 3, yes")
    assert gate.decide(DELETE_3, history) is Verdict.ASK
    assert gate.decide(DELETE_3, history) is Verdict.ASK


def test_a_stale_yes_does_not_count() -> None:
    gate = ConfirmationGate()
    gate.decide(DELETE_3, msgs("delete 3"))
    # the user said yes, then something else: the yes no longer answers the question
    assert gate.decide(DELETE_3, msgs("delete 3", "yes", "add bread")) is Verdict.ASK


def test_a_yes_is_for_one_action_only() -> None:
    gate = ConfirmationGate()
    gate.decide(DELETE_3, msgs("delete 3"))
    assert gate.decide(Action("clear_tasks"), msgs("delete 3", "yes")) is Verdict.ASK
    assert gate.pending == Action("clear_tasks")


def test_a_confirmation_is_used_once() -> None:
    gate = ConfirmationGate()
    gate.decide(DELETE_3, msgs("delete 3"))
    history = msgs("delete 3", "yes")
    assert gate.decide(DELETE_3, history) is Verdict.PROCEED
    assert gate.decide(DELETE_3, history) is Verdict.ASK
