"""A deterministic task-manager intent parser for the offline chat model.

Rules, not a model: the user's last utterance is normalised, a leading verb picks the intent, and the rest is cut
into a task title and an optional due phrase. It is built to survive Whisper tiny.en on synthetic speech, whose
typical slips are handled explicitly:

* "add" heard as "and", "at", "ad", "had" or "I'll add" — accepted only when the sentence also names the list
  ("... to my tasks/list/to-do list"), so "and then what?" stays chit-chat;
* "buy milk" heard as "my milk": a leading possessive "my" is dropped from titles ("milk");
* "as done" heard as "has done"/"is done".

Anything unrecognised is `Kind.UNKNOWN`, which the dialogue layer answers with a short help text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    ADD = "add"
    LIST = "list"
    COMPLETE = "complete"
    UPDATE = "update"
    DELETE = "delete"
    CLEAR = "clear"
    YES = "yes"
    NO = "no"
    GREETING = "greeting"
    THANKS = "thanks"
    BYE = "bye"
    HELP = "help"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Intent:
    kind: Kind
    title: str | None = None
    new_title: str | None = None
    due: str | None = None
    number: int | None = None  # "task 3", "number two"
    status: str | None = None  # list filter: "open" / "done"


_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "last": -1,
}  # fmt: skip

_FILLERS = (
    r"(?:um+|uh+|er+|hmm+|okay|ok|so|well|oh|hey|hi|please|now|also|then|and then|alright|all right|right)"
    r"|(?:can|could|would|will) you(?: please)?|i(?:'d| would) like(?: you)? to|i want(?: you)? to|i need you to"
    r"|i'll|i will|let's|let me|go ahead and|just|quickly"
)
_LEADING_FILLER = re.compile(rf"^(?:(?:{_FILLERS})\b\s*)+")
_LIST_NOUN = r"(?:tasks?|list|to ?do(?:s| list)?|todo(?:s| list)?|task list|reminders?|agenda)"
_DESTINATION = re.compile(rf"\s*\b(?:to|on|onto|in|into|for) (?:my|the|our) {_LIST_NOUN}\b")
_WEEKDAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_PART = r"(?: (?:morning|afternoon|evening|night|noon|lunch(?:time)?))?"
_CLOCK = r"(?:\d{1,2}(?::\d{2})?\s*(?:am|pm|a m|p m|o'?clock)?|noon|midnight)"
_DUE_CORE = (
    rf"(?:today{_PART}|tonight|tomorrow{_PART}|the day after tomorrow|this (?:morning|afternoon|evening|week|weekend)"
    rf"|next (?:week|month|weekend|{_WEEKDAY})|(?:this |on )?{_WEEKDAY}{_PART}|end of (?:the )?(?:day|week|month)"
    rf"|in (?:a|an|one|two|three|four|five|ten|\d+) (?:minutes?|hours?|days?|weeks?)|at {_CLOCK})"
)
_DUE_TAIL = re.compile(rf"\s*\b(?:(?:due|for|by|on|before|until|at)\s+)?({_DUE_CORE})\s*$")
_WORD_RE = re.compile(r"[a-z0-9']+")


def normalise(text: str) -> str:
    t = text.lower().replace("\u2019", "'").replace("-", " ")
    t = re.sub(r"[^a-z0-9':\s]", " ", t)
    return re.sub(r"\s+", " ", t).strip()


def strip_fillers(text: str) -> str:
    return _LEADING_FILLER.sub("", text).strip()


def split_due(text: str) -> tuple[str, str | None]:
    """Peel trailing due phrases off a title: "buy milk for tomorrow morning" -> ("buy milk", "tomorrow morning")."""
    parts: list[str] = []
    while True:
        m = _DUE_TAIL.search(text)
        if not m:
            break
        parts.insert(0, m.group(1))
        text = text[: m.start()].strip()
        if not text:
            break
    return text, (" ".join(parts) or None)


def clean_title(text: str) -> str:
    t = _DESTINATION.sub("", text).strip()
    t = re.sub(rf"\s*\b(?:from|off|on|in) (?:my|the) {_LIST_NOUN}\b", "", t).strip()
    t = re.sub(r"\s*\b(?:please|for me|thanks|thank you)$", "", t).strip()
    t = re.sub(
        r"^(?:a |an |the )?(?:new )?(?:task|item|reminder|to ?do)(?: (?:called|named|to|for|that says|saying))?\s+",
        "",
        t,
    )
    t = re.sub(r"^(?:called|named|to|that)\s+", "", t)
    t = re.sub(r"^(?:a|an|the|my)\s+", "", t)
    t = re.sub(r"\s+(?:task|item)$", "", t)
    return t.strip()


def _number(text: str) -> int | None:
    m = re.search(r"\b(?:task|item|number|no)\s*(?:number\s*)?(\d+|[a-z]+)\b", text)
    if m:
        raw = m.group(1)
        if raw.isdigit():
            return int(raw)
        return _NUMBER_WORDS.get(raw)
    m = re.fullmatch(r"(?:the )?(first|second|third|fourth|fifth|last)(?: one| task)?", text)
    return _NUMBER_WORDS[m.group(1)] if m else None


_YES = re.compile(
    r"^(?:yes|yeah|yep|yup|sure|correct|right|confirm(?:ed)?|do it|go ahead|please do|ok(?:ay)?|absolutely"
    r"|of course|affirmative|yes please|that's right)"
    r"(?: (?:yes|please|do it|go ahead|i'm sure|i am sure|confirm|delete it|remove it|delete them|remove them"
    r"|clear it|clear them|clear it all|delete it all|delete everything|delete all|clear all|for good|that's right"
    r"|thanks|thank you))*$"
)
_NO = re.compile(
    r"^(?:no|nope|nah|don't|do not|never ?mind|stop|cancel|no thanks|no thank you|not now|wait)"
    r"(?: (?:thanks|thank you|don't|please))*$"
)
_CLEAR = re.compile(
    r"^(?:(?:clear|wipe|reset|erase|empty|clean)(?: out)? "
    rf"(?:all|everything|(?:all |out )?(?:of )?(?:my|the) {_LIST_NOUN}|my|the)"
    r"|(?:delete|remove|drop|cancel) (?:all|every|everything)\b|start over|start from scratch)"
)
_LIST = re.compile(
    r"^(?:list|show|read|tell me|give me|what(?:'s| is| are)?|which|do i have|how many|anything|check)\b"
    rf".*\b(?:{_LIST_NOUN}|on my plate|left to do|do i have)\b"
    rf"|^(?:list|show|read)(?: (?:me|out|back))?(?: (?:my|the|all))?(?: {_LIST_NOUN})?$|^what(?:'s| is) left$"
)
_ADD_VERB = re.compile(
    r"^(?:add|create|make|insert|put|put down|note|note down|jot down|write down|save|remember|set up|schedule"
    r"|new)\b\s*"
)
_ADD_MISHEARD = re.compile(r"^(?:and|at|ad|had|ed|odd|i'd|i had|i add)\b\s*")
_REMIND = re.compile(r"^(?:remind me to|i need to|i have to|i must|don't forget to|dont forget to)\s+")
_COMPLETE_VERB = re.compile(
    r"^(?:mark|check off|tick off|cross off|check|tick|complete|finish|finished|close|"
    r"i(?:'ve| have)? (?:finished|completed|done)|i did|i'm done with|i am done with|done with)\b\s*"
)
_COMPLETE_TAIL = re.compile(
    r"\s*\b(?:as |has |is |was |are )?(?:done|complete|completed|finished|checked|checked off|off)$"
)
_DELETE_VERB = re.compile(r"^(?:delete|remove|drop|cancel|erase|get rid of|forget|forget about|scratch|take|kill)\b\s*")
_UPDATE_VERB = re.compile(r"^(?:rename|change|update|edit|modify|move|reschedule|push|postpone|set|switch)\b\s*")


def parse(text: str) -> Intent:
    """Classify one user utterance."""
    t = strip_fillers(normalise(text))
    if not t:
        return Intent(Kind.UNKNOWN)
    if _YES.match(t):
        return Intent(Kind.YES)
    if _NO.match(t):
        return Intent(Kind.NO)
    if _CLEAR.match(t):
        return Intent(Kind.CLEAR)
    if _LIST.match(t) and not _ADD_VERB.match(t):
        status = "done" if re.search(r"\b(?:done|completed|finished)\b", t) else None
        if re.search(r"\b(?:open|pending|left|remaining|outstanding|to do|todo)\b", t):
            status = "open"
        return Intent(Kind.LIST, status=status)
    if m := _UPDATE_VERB.match(t):
        intent = _parse_update(t[m.end() :])
        if intent is not None:
            return intent
    if m := _COMPLETE_VERB.match(t):
        body = _COMPLETE_TAIL.sub("", t[m.end() :]).strip()
        return _with_target(Kind.COMPLETE, body)
    if m := re.match(r"^(.+?)\s+(?:is|are|was) (?:done|finished|complete|completed)$", t):
        return _with_target(Kind.COMPLETE, m.group(1))
    if m := _DELETE_VERB.match(t):
        body = re.sub(r"\s*\b(?:off|from) (?:my|the) " + _LIST_NOUN + r"\b", "", t[m.end() :]).strip()
        return _with_target(Kind.DELETE, body)
    if m := _REMIND.match(t):
        return _add(t[m.end() :])
    if m := _ADD_VERB.match(t):
        return _add(t[m.end() :])
    if (m := _ADD_MISHEARD.match(t)) and _DESTINATION.search(t):
        return _add(t[m.end() :])
    if re.search(r"\b(?:add|create)\b.*\b(?:task|to ?do)\b", t) or _DESTINATION.search(t):
        # "could you maybe add X to my list" — a verb later in the sentence
        m2 = re.search(r"\b(?:add|create|put)\b\s*", t)
        return _add(t[m2.end() :] if m2 else t)
    if re.match(r"^(?:hello|hi|hey|good (?:morning|afternoon|evening)|howdy|hiya|greetings)\b", t):
        return Intent(Kind.GREETING)
    if re.search(r"\b(?:thanks|thank you|cheers|appreciate)\b", t):
        return Intent(Kind.THANKS)
    if re.search(r"\b(?:bye|goodbye|see you|that's all|that is all|i'm done|that's it)\b", t):
        return Intent(Kind.BYE)
    if re.search(r"\b(?:help|what can you do|how does this work|what do you do)\b", t):
        return Intent(Kind.HELP)
    return Intent(Kind.UNKNOWN)


def _add(body: str) -> Intent:
    title, due = split_due(clean_title(body))
    title = clean_title(title)
    return Intent(Kind.ADD, title=title or None, due=due)


def _with_target(kind: Kind, body: str) -> Intent:
    number = _number(body)
    title = clean_title(body)
    if number is not None and re.fullmatch(r"(?:(?:task|item) )?(?:number |no )?\w+(?: one| task)?", title):
        title = ""
    return Intent(kind, title=title or None, number=number)


def _parse_update(body: str) -> Intent | None:
    """ "rename X to Y", "change X to Y", "move X to friday", "change the due date of X to Y"."""
    m = re.match(r"^(?:the )?(?:due date|deadline|date|time) (?:of|for|on) (.+?) (?:to|for) (.+)$", body)
    if m:
        return Intent(Kind.UPDATE, title=clean_title(m.group(1)), due=m.group(2).strip(), number=_number(m.group(1)))
    m = re.match(r"^(.+?) (?:to|into|as|for|until|till) (.+)$", body)
    if not m:
        return None
    target, new = clean_title(m.group(1)), m.group(2).strip()
    rest, due = split_due(new)
    if due and not rest:
        return Intent(Kind.UPDATE, title=target, due=due, number=_number(target))
    new_title = clean_title(rest) if rest else clean_title(new)
    return Intent(Kind.UPDATE, title=target, new_title=new_title, due=due, number=_number(target))


def words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())
