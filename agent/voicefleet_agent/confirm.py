"""Spoken confirmation before destructive actions, enforced in code rather than left to the LLM.

A destructive tool call first *requests* confirmation (nothing happens). It may only run on a later call once
the user has answered: the first user message after the request must be an explicit yes, and it must still be
the latest thing the user said. The evidence is the user's own transcript in the session history, which the LLM
cannot write, so calling the tool twice, inventing a token, or claiming the user agreed all fail closed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

_AFFIRMATIVE = re.compile(
    r"^(yes|yeah|yea|yep|yup|sure|ok|okay|correct|confirm|confirmed|affirmative|absolutely|definitely|"
    r"do it|go ahead|please do|delete it|that's right|that is right|right)\b"
)
_NEGATION = re.compile(
    r"\b(no|nope|not|don't|dont|do not|never|wait|stop|cancel|hold on|hang on|keep|nevermind|never mind|but)\b"
)


def is_affirmative(text: str) -> bool:
    """An explicit, unhedged yes ("Yes, delete it." → True; "yes but not that one", "no", "maybe" → False)."""
    normalized = " ".join(re.sub(r"[^\w' ]+", " ", text.lower().replace("\u2019", "'")).split())
    return bool(_AFFIRMATIVE.match(normalized)) and not _NEGATION.search(normalized)


@dataclass(frozen=True)
class UserMessage:
    id: str
    text: str


@dataclass(frozen=True)
class Action:
    """What would be destroyed: ``("delete_task", 3)`` or ``("clear_tasks", None)``."""

    name: str
    target: int | None = None


class Verdict(Enum):
    PROCEED = "proceed"  # the user said yes to exactly this action: run it
    ASK = "ask"  # no usable confirmation: ask the user, nothing runs


@dataclass(frozen=True)
class _Pending:
    action: Action
    seen: frozenset[str]  # ids of the user messages that existed when confirmation was requested


class ConfirmationGate:
    """Per-session record of the one destructive action awaiting the user's answer."""

    def __init__(self) -> None:
        self._pending: _Pending | None = None

    @property
    def pending(self) -> Action | None:
        return self._pending.action if self._pending else None

    def decide(self, action: Action, user_messages: Sequence[UserMessage]) -> Verdict:
        """PROCEED only if ``action`` was requested before and the user's only reply since is an explicit yes.

        Otherwise the request is (re)armed against the current history, so the caller must ask and wait.
        """
        pending, self._pending = self._pending, None
        if pending is not None and pending.action == action:
            replies = [m for m in user_messages if m.id not in pending.seen]
            # exactly one reply: the answer to our question, and nothing said since that could change it
            if len(replies) == 1 and is_affirmative(replies[0].text):
                return Verdict.PROCEED
        self._pending = _Pending(action=action, seen=frozenset(m.id for m in user_messages))
        return Verdict.ASK
