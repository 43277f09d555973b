"""Spoken confirmation before destructive actions, enforced in code rather than left to the LLM.

A destructive tool call first *requests* confirmation (nothing happens) and tells the LLM the exact question to ask,
a question that names what would be destroyed. The action may run on a later call with the same arguments only if,
since the request, the agent asked a question naming that subject and the user's one and only reply to it is an
explicit yes ("yes", "yes, delete it", "go ahead"). Anything else ("okay, actually the eggs one", "right, what was
on it again?") leaves the action unconfirmed, so the tool asks again. The evidence is the session's transcript: the
user's words come from STT, which the LLM cannot write, so calling the tool twice, inventing a token, or claiming
the user agreed all fail closed.

Which tools need this is declared, not inferred from a server's name: the agent's own tools with ``@destructive``,
MCP tools by their ``destructiveHint`` annotation (``voicefleet_agent.guarded_mcp``).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Protocol

# the whole answer must be made of these: a leading yes, then only more yes, "please", or the action itself
_YES_LEAD = (
    r"yes|yeah|yea|yep|yup|sure|ok|okay|correct|confirm|confirmed|affirmative|absolutely|definitely|of course"
    r"|go ahead|do it|please do|that's right|that is right|delete it|remove it"
)
_YES_MORE = (
    _YES_LEAD
    + r"|please|go for it|delete|remove|clear|it|them|that|all|everything|it all|them all|for good|now|i'm sure"
    r"|i am sure|thanks|thank you|sir|ma'am"
)
_AFFIRMATIVE = re.compile(rf"^(?:please )?(?:{_YES_LEAD})(?: (?:{_YES_MORE}))*$")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def _normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w' ]+", " ", text.lower().replace("\u2019", "'")).split())


def is_affirmative(text: str) -> bool:
    """An explicit, unhedged yes and nothing else ("Yes, delete it." → True; "Okay, actually the eggs one",
    "Right, what was on it again?", "yes but not that one", "no", "maybe" → False)."""
    if "?" in text:
        return False
    return bool(_AFFIRMATIVE.match(_normalized(text)))


def names(question: str, subject: str) -> bool:
    """Whether ``question`` names ``subject``: every word of the subject occurs in it."""
    wanted = set(_WORD.findall(subject.lower()))
    return bool(wanted) and wanted <= set(_WORD.findall(question.lower().replace("\u2019", "'")))


@dataclass(frozen=True)
class Message:
    """One message of the session's transcript."""

    id: str
    role: Literal["user", "assistant"]
    text: str


@dataclass(frozen=True)
class Action:
    """A destructive call: the tool and its exact arguments (``("delete_task", '{"task_id": 3}')``)."""

    tool: str
    arguments: str = "{}"

    @classmethod
    def of(cls, tool: str, arguments: dict[str, Any]) -> Action:
        return cls(tool, json.dumps(arguments, sort_keys=True, default=str))


@dataclass(frozen=True)
class Confirmation:
    """What the user is asked: the question, and the subject it must name (a task's title, "all tasks")."""

    question: str
    subject: str


class Verdict(Enum):
    PROCEED = "proceed"  # the user said yes to exactly this action, asked by name: run it
    ASK = "ask"  # no usable confirmation: ask the user, nothing runs


@dataclass(frozen=True)
class _Pending:
    action: Action
    confirmation: Confirmation
    seen: frozenset[str]  # ids of the messages that existed when confirmation was requested


class ConfirmationGate:
    """Per-session record of the one destructive action awaiting the user's answer."""

    def __init__(self) -> None:
        self._pending: _Pending | None = None

    @property
    def pending(self) -> Action | None:
        return self._pending.action if self._pending else None

    def decide(self, action: Action, transcript: Sequence[Message]) -> Verdict:
        """PROCEED only if ``action`` was requested, the agent then asked a question naming its subject, and the
        user's only reply since is an explicit yes. A pending request is used up either way."""
        pending, self._pending = self._pending, None
        if pending is None or pending.action != action:
            return Verdict.ASK
        new = [m for m in transcript if m.id not in pending.seen]
        replies = [i for i, m in enumerate(new) if m.role == "user"]
        # exactly one reply: the answer to our question, and nothing said since that could change it
        if len(replies) != 1 or not is_affirmative(new[replies[0]].text):
            return Verdict.ASK
        asked = [m for m in new[: replies[0]] if m.role == "assistant" and m.text.strip()]
        if not asked or not names(asked[-1].text, pending.confirmation.subject):
            return Verdict.ASK  # the last thing the user heard before saying yes was not our question
        return Verdict.PROCEED

    def request(self, action: Action, confirmation: Confirmation, transcript: Sequence[Message]) -> str:
        """Arm ``action`` against the transcript so far; returns the instruction for the LLM."""
        self._pending = _Pending(action, confirmation, frozenset(m.id for m in transcript))
        return (
            f'NOT DONE YET: this needs the user\'s confirmation. Ask the user: "{confirmation.question}" and wait for '
            f"their answer. Only if they say yes, call {action.tool} again with the same arguments."
        )


class NothingToConfirm(Exception):
    """Raised by a confirmation's description when there is nothing to destroy; the message is the tool's answer."""


class _HasGate(Protocol):
    confirmations: ConfirmationGate


Transcript = Callable[[Any], list[Message]]
Describe = Callable[..., Awaitable[Confirmation]]


def destructive(
    describe: Describe, *, transcript: Transcript
) -> Callable[[Callable[..., Awaitable[str]]], Callable[..., Awaitable[str]]]:
    """Declare an agent tool method destructive: it runs only after a confirmed yes (see the module docstring).

    ``describe(self, **arguments)`` says what would be destroyed (raise ``NothingToConfirm`` when nothing would);
    ``transcript(ctx)`` reads the session's messages from the tool's ``RunContext`` (passed as ``ctx``). Apply it
    under ``@function_tool``: the tool keeps its signature and docstring.
    """

    def wrap(fn: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[str]]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        async def guarded(self: _HasGate, *args: Any, **kwargs: Any) -> str:
            bound = signature.bind(self, *args, **kwargs)  # the framework passes arguments positionally
            bound.apply_defaults()
            arguments = {k: v for k, v in bound.arguments.items() if k not in ("self", "ctx")}
            action = Action.of(fn.__name__, arguments)
            messages = transcript(bound.arguments["ctx"])
            if self.confirmations.decide(action, messages) is Verdict.PROCEED:
                return await fn(*bound.args, **bound.kwargs)
            try:
                confirmation = await describe(self, **arguments)
            except NothingToConfirm as nothing:
                return str(nothing)
            return self.confirmations.request(action, confirmation, messages)

        guarded.__voicefleet_destructive__ = True  # type: ignore[attr-defined]
        return guarded

    return wrap


def is_destructive(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (or the tool it became) was declared with ``@destructive``."""
    return bool(getattr(fn, "__voicefleet_destructive__", False))
