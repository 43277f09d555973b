"""The offline chat model: from an OpenAI-style conversation and tool list to the next assistant turn.

Deterministic and schema-driven. The last user message is parsed (`intents.parse`), the intent is mapped to one of
the request's tools by name ("add_task", "createTodo", "mark_done" ...), and the tool's JSON schema decides which
argument gets the title, the due phrase, the id. When a tool wants an id the user didn't say, the model first calls
the list tool and resolves the title against its output, as a real model would. Once the tool result is in the
conversation it answers with one short sentence. Destructive "clear all" asks for a yes first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from .intents import Intent, Kind, clean_title, normalise, parse, strip_fillers, words

_ACTIONS = (Kind.ADD, Kind.LIST, Kind.COMPLETE, Kind.UPDATE, Kind.DELETE, Kind.CLEAR)
_TARGETED = (Kind.COMPLETE, Kind.UPDATE, Kind.DELETE)
CONFIRM_QUESTION = "Are you sure you want to delete all your tasks? Say yes to confirm."


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None

    @classmethod
    def from_openai(cls, tool: Mapping[str, Any]) -> ToolSpec:
        fn = tool.get("function", tool)
        return cls(str(fn.get("name", "")), str(fn.get("description") or ""), fn.get("parameters") or {})

    @property
    def properties(self) -> dict[str, Any]:
        return dict((self.parameters or {}).get("properties") or {})

    @property
    def required(self) -> list[str]:
        return list((self.parameters or {}).get("required") or [])


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Task:
    id: str | None
    title: str
    done: bool = False
    due: str | None = None


# -- conversation helpers --------------------------------------------------------------------------------


def content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [
            p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") in ("text", "input_text")
        ]
        return " ".join(str(p) for p in parts)
    return str(content)


@dataclass(frozen=True)
class _Step:
    name: str
    arguments: dict[str, Any]
    output: str | None


def _steps_after(messages: Sequence[Mapping[str, Any]], start: int) -> list[_Step]:
    outputs = {
        str(m.get("tool_call_id")): content_text(m.get("content")) for m in messages[start:] if m.get("role") == "tool"
    }
    steps: list[_Step] = []
    for m in messages[start:]:
        if m.get("role") != "assistant":
            continue
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except ValueError:
                args = {}
            steps.append(
                _Step(str(fn.get("name", "")), args if isinstance(args, dict) else {}, outputs.get(str(call.get("id"))))
            )
    return steps


def _last_index(messages: Sequence[Mapping[str, Any]], role: str, before: int | None = None) -> int | None:
    end = len(messages) if before is None else before
    for i in range(end - 1, -1, -1):
        if messages[i].get("role") == role:
            return i
    return None


# -- tool selection and arguments --------------------------------------------------------------------------


_KIND_VERBS: dict[Kind, set[str]] = {
    Kind.ADD: {"add", "create", "new", "insert", "make", "save", "append"},
    Kind.LIST: {"list", "get", "show", "read", "fetch", "view", "all", "search", "find", "query"},
    Kind.COMPLETE: {"complete", "done", "finish", "check", "mark", "close", "resolve", "completed"},
    Kind.UPDATE: {"update", "rename", "edit", "change", "modify", "set", "reschedule", "move"},
    Kind.DELETE: {"delete", "remove", "drop", "cancel", "destroy", "trash"},
    Kind.CLEAR: {"clear", "reset", "wipe", "purge", "empty"},
}


def _tokens(name: str) -> set[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return {t for t in re.split(r"[^a-zA-Z0-9]+", spaced.lower()) if t}


def _score(tool: ToolSpec, kind: Kind) -> int:
    name = _tokens(tool.name)
    desc = set(words(tool.description.split(".")[0])) if tool.description else set()
    verbs = _KIND_VERBS[kind]
    score = 3 * len(name & verbs) + len(desc & verbs)
    bulk = bool(name & {"all", "everything"})
    if kind is Kind.CLEAR and bulk and name & (_KIND_VERBS[Kind.DELETE] | _KIND_VERBS[Kind.COMPLETE] | {"clear"}):
        score += 4
    if kind in (Kind.DELETE, Kind.COMPLETE) and bulk:
        return 0
    if kind is Kind.LIST and name <= {"tasks", "todos", "task", "todo", "my"}:
        score += 3
    if kind is Kind.LIST and name & (_KIND_VERBS[Kind.ADD] | _KIND_VERBS[Kind.DELETE] | _KIND_VERBS[Kind.UPDATE]):
        score -= 3
    return max(score, 0)


def pick_tool(kind: Kind, tools: Sequence[ToolSpec]) -> ToolSpec | None:
    """The request's tool that best fits an intent, by the verbs in its name (then its description)."""
    if kind not in _ACTIONS:
        return None
    best = max(tools, key=lambda t: _score(t, kind), default=None)
    if best is not None and _score(best, kind) > 0:
        return best
    if kind is Kind.COMPLETE:
        update = pick_tool(Kind.UPDATE, tools)
        if update is not None and any(_role(p, update.properties[p]) == "status" for p in update.properties):
            return update
    return None


def _role(name: str, schema: Mapping[str, Any]) -> str:
    n = name.lower()
    if re.fullmatch(r"new_?(?:title|name|text|description|task)", n):
        return "new_title"
    if re.fullmatch(r"(?:task_?|todo_?|item_?)?(?:id|uuid|number|index|position|num)|.*_id", n):
        return "id"
    if re.search(r"confirm|force|sure", n):
        return "confirm"
    if re.search(
        r"status|state|filter|include|show_?(?:done|completed)|^(?:done|completed|is_done|is_completed|finished)$", n
    ):
        return "status"
    if re.search(r"due|date|deadline|when|time|day|schedule", n):
        return "due"
    if re.search(r"title|name|task|text|description|content|summary|item|label|query|todo", n):
        return "title"
    types = _types(schema)
    if "integer" in types:
        return "id"
    return "other"


def _types(schema: Mapping[str, Any]) -> list[str]:
    raw = schema.get("type")
    found: list[str] = [raw] if isinstance(raw, str) else [str(t) for t in raw] if isinstance(raw, list) else []
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or []:
            if isinstance(sub, Mapping):
                found.extend(_types(sub))
    return found


def _coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    types = _types(schema)
    enum = schema.get("enum")
    if enum and value not in enum:
        text = str(value).lower()
        for option in enum:
            if str(option).lower() == text or (
                text in ("done", "completed") and str(option).lower() in ("done", "completed", "complete")
            ):
                return option
        return None
    if "integer" in types and not isinstance(value, bool):
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    if "boolean" in types:
        return bool(value)
    if "string" in types or not types:
        return str(value)
    return value


def _empty(schema: Mapping[str, Any]) -> Any:
    types = _types(schema)
    if "null" in types or not types:
        return None
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    first = types[0]
    return {"string": "", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}.get(first)


def build_arguments(tool: ToolSpec, kind: Kind, values: Mapping[str, Any]) -> dict[str, Any]:
    """Fill `tool`'s schema from semantic values: title, new_title, due, id, status, confirm."""
    props = tool.properties
    roles = {name: _role(name, schema) for name, schema in props.items()}
    has_id = "id" in roles.values() and values.get("id") is not None
    args: dict[str, Any] = {}
    used: set[str] = set()
    title_target = "new_title" if kind is Kind.UPDATE and has_id and "new_title" not in roles.values() else "title"
    for name, schema in props.items():
        role = roles[name]
        value: Any = None
        if role == "title" and title_target not in used:
            value = values.get(title_target)
            used.add(title_target)
        elif role in ("new_title", "due", "id") and role not in used:
            value = values.get(role)
            used.add(role)
        elif role == "status":
            status = values.get("status")
            if kind is Kind.COMPLETE or (kind is Kind.UPDATE and values.get("done")):
                value = True if "boolean" in _types(schema) else "done"
            elif status is not None:
                value = (status == "done") if "boolean" in _types(schema) else status
        elif role == "confirm" and kind is Kind.CLEAR:
            value = True
        if value is not None:
            value = _coerce(value, schema)
        if value is not None:
            args[name] = value
        elif name in tool.required:
            args[name] = _empty(schema)
    if kind is Kind.ADD and values.get("due") and "due" not in roles.values():
        for name, role in roles.items():
            if role == "title" and isinstance(args.get(name), str):
                args[name] = f"{args[name]} {values['due']}"
                break
    return args


# -- tasks seen in tool outputs ----------------------------------------------------------------------------


def _task_from(obj: Any) -> Task | None:
    if isinstance(obj, str):
        return Task(None, obj)
    if not isinstance(obj, Mapping):
        return None
    title = next((obj[k] for k in ("title", "name", "text", "task", "description", "content") if obj.get(k)), None)
    if not isinstance(title, str):
        return None
    ident = next((obj[k] for k in ("id", "task_id", "taskId", "_id", "uuid", "number") if obj.get(k) is not None), None)
    status = str(obj.get("status", "")).lower()
    done = bool(obj.get("done") or obj.get("completed") or status in ("done", "completed", "complete"))
    due = next(
        (str(obj[k]) for k in ("due", "due_date", "dueDate", "due_phrase", "when", "deadline") if obj.get(k)), None
    )
    return Task(None if ident is None else str(ident), title, done, due)


def parse_tasks(output: str) -> list[Task] | None:
    """Tasks in a tool output: JSON (a list, {"tasks": [...]}, or one task) or lines like "1. buy milk"."""
    try:
        data = json.loads(output)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        for key in ("tasks", "items", "todos", "data", "results"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            task = _task_from(data.get("task", data))
            return [task] if task else None
    if isinstance(data, list):
        return [t for t in (_task_from(x) for x in data) if t is not None]
    tasks: list[Task] = []
    for line in output.splitlines():
        task = _task_from_line(line.strip())
        if task is not None:
            tasks.append(task)
    return tasks or None


_LINE_FORMS = (
    re.compile(r"#(?P<id>\d+)\s+(?P<rest>.+)"),  # "#3 buy milk, due tomorrow, done", also inside "Added #3 ..."
    re.compile(r"^(?:id[:\s]*)?(?P<id>\d+)[.):\-]\s*(?:\[(?P<box>[ xX])\]\s*)?(?P<rest>.+)"),  # "1. buy milk"
    re.compile(r"^[-*]\s*(?:\[(?P<box>[ xX])\]\s*)?(?P<rest>.+)"),  # "- [x] buy milk"
)


def _task_from_line(line: str) -> Task | None:
    for form in _LINE_FORMS:
        m = form.search(line) if form is _LINE_FORMS[0] else form.match(line)
        if not m:
            continue
        groups = m.groupdict()
        rest = groups["rest"].strip().rstrip(".")
        done = (groups.get("box") or "").lower() == "x"
        if re.search(r"(?:,\s*|\()(?:done|completed)\)?$", rest):
            done = True
            rest = re.sub(r"\s*(?:,\s*|\()(?:done|completed)\)?$", "", rest)
        rest = re.sub(r"\s*\((?:open|pending)\)$", "", rest)
        due = None
        if m_due := re.search(r",\s*due\s+(.+)$", rest):
            due, rest = m_due.group(1).strip(), rest[: m_due.start()]
        return Task(groups.get("id"), rest.strip(), done, due) if rest.strip() else None
    return None


def _known_tasks(messages: Sequence[Mapping[str, Any]]) -> tuple[list[Task], list[Task]]:
    """(every task with an id seen in any tool output, the most recent full listing)."""
    by_id: dict[str, Task] = {}
    latest: list[Task] = []
    for step in _steps_after(messages, 0):
        if step.output is None:
            continue
        tasks = parse_tasks(step.output) or []
        for t in tasks:
            if t.id is not None:
                by_id[t.id] = t
        if len(tasks) != 1 or (step.name and pick_tool(Kind.LIST, [ToolSpec(step.name)])):
            latest = tasks
    return list(by_id.values()), latest


def _similarity(query: str, title: str) -> float:
    q, t = set(words(query)), set(words(title))
    if q and q <= t:
        return 0.9
    if t and t <= q:
        return 0.8
    return SequenceMatcher(None, query.lower(), title.lower()).ratio()


def resolve(intent: Intent, known: list[Task], latest: list[Task]) -> Task | None:
    if intent.number is not None:
        for t in known:
            if t.id == str(intent.number):
                return t
        if latest and intent.number == -1:
            return latest[-1]
        if latest and 1 <= intent.number <= len(latest):
            return latest[intent.number - 1]
    if intent.title:
        pool = known + [t for t in latest if t not in known]
        scored = sorted(
            ((_similarity(intent.title, t.title), i, t) for i, t in enumerate(pool)), key=lambda x: (-x[0], x[1])
        )
        if scored and scored[0][0] >= 0.5:
            return scored[0][2]
    return None


# -- replies -------------------------------------------------------------------------------------------------


_CHAT = {
    Kind.GREETING: "Hi! I can add, list, complete, rename or delete your tasks. What would you like to do?",
    Kind.THANKS: "You're welcome! Anything else?",
    Kind.BYE: "Goodbye, talk to you soon!",
    Kind.HELP: "I can add tasks with a due date, list them, mark them done, rename or delete them, or clear the list.",
    Kind.YES: "Okay.",
    Kind.NO: "Alright, no changes.",
    Kind.UNKNOWN: "Sorry, I can only help with your tasks. For example, say: add buy milk to my tasks.",
}
OPENING = "Hi! I'm your task assistant. What can I do for you?"


def _error_of(output: str) -> str | None:
    try:
        data = json.loads(output)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        if data.get("error"):
            return str(data["error"])
        if data.get("ok") is False or data.get("success") is False:
            return str(data.get("message") or "it failed")
        return None
    text = output.strip()
    if re.match(
        r"(?i)^(?:error|failed|failure|no (?:such )?task|not found|could not|couldn't|unknown|invalid|cannot|can't)",
        text,
    ) or re.search(r"(?i)\bnot found\b", text):
        return text[:160]
    return None


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _describe(task: Task) -> str:
    extra = " (done)" if task.done else f" (due {task.due})" if task.due else ""
    return task.title + extra


def summarise(kind: Kind, intent: Intent, step: _Step, target: Task | None) -> str:
    output = step.output or ""
    error = _error_of(output)
    if error:
        return f"Sorry, I couldn't do that: {error.rstrip('.')}."
    question = confirmation_question(output)
    if question:
        return question
    title = intent.title or (target.title if target else None) or "that task"
    if target is not None and kind in _TARGETED:
        title = target.title
    if kind is Kind.ADD:
        due = f" for {intent.due}" if intent.due else ""
        return f"Okay, I've added {intent.title or 'that'}{due} to your tasks."
    if kind is Kind.COMPLETE:
        return f"Nice work! I've marked {title} as done."
    if kind is Kind.DELETE:
        return f"Okay, I've removed {title}."
    if kind is Kind.UPDATE:
        if intent.new_title:
            return f"Done, I've renamed {title} to {intent.new_title}."
        if intent.due:
            return f"Done, {title} is now due {intent.due}."
        return f"Done, I've updated {title}."
    if kind is Kind.CLEAR:
        if re.search(r"(?i)already empty|nothing to", output):
            return "Your task list is already empty."
        return "All done, your task list is now empty."
    tasks = parse_tasks(output)
    if tasks is None:
        return output.strip()[:300] or "Your task list is empty."
    if intent.status == "open":
        tasks = [t for t in tasks if not t.done]
    elif intent.status == "done":
        tasks = [t for t in tasks if t.done]
    if not tasks:
        return "You have no tasks right now." if intent.status is None else f"You have no {intent.status} tasks."
    noun = "task" if len(tasks) == 1 else "tasks"
    shown = [_describe(t) for t in tasks[:8]]
    more = f", and {len(tasks) - 8} more" if len(tasks) > 8 else ""
    return f"You have {len(tasks)} {noun}: {_join(shown)}{more}."


def _values(intent: Intent, target: Task | None) -> dict[str, Any]:
    return {
        "title": (target.title if target and intent.kind in _TARGETED else intent.title),
        "new_title": intent.new_title,
        "due": intent.due,
        "id": None if target is None else target.id,
        "status": intent.status,
    }


def confirmation_question(output: str) -> str | None:
    """The question a tool asks us to put to the user before it acts (a confirmation protocol), if any."""
    if not re.search(r"(?i)\bconfirm", output):
        return None
    m = re.search(r"(?i)ask the user:?\s*[\"\u201c]([^\"\u201d]+\?)[\"\u201d]", output) or re.search(
        r"[\"\u201c]([^\"\u201d]{3,}\?)[\"\u201d]", output
    )
    return m.group(1) if m else "Are you sure? Please say yes to confirm."


@dataclass(frozen=True)
class _Pending:
    intent: Intent
    call: ToolCall | None  # a tool that asked for the confirmation is called again, with the same arguments


def _pending_confirmation(messages: Sequence[Mapping[str, Any]], user_idx: int) -> _Pending | None:
    """What the assistant asked the user to confirm in the turn just before `user_idx`."""
    asked = _last_index(messages, "assistant", user_idx)
    if asked is None:
        return None
    question = content_text(messages[asked].get("content"))
    before = _last_index(messages, "user", asked)
    intent = parse(content_text(messages[before].get("content"))) if before is not None else Intent(Kind.UNKNOWN)
    if question == CONFIRM_QUESTION:
        return _Pending(intent, None) if intent.kind is Kind.CLEAR else None
    if not question.rstrip().endswith("?"):
        return None
    for step in reversed(_steps_after(messages[:asked], 0 if before is None else before + 1)):
        if step.output is not None and confirmation_question(step.output):
            return _Pending(intent, ToolCall(step.name, step.arguments))
    return None


LEFT_AS_IS = "Alright, I'll leave your tasks as they are."
_NOT_THAT = re.compile(r"^(?:(?:no|nope|not that|not that one|sorry|i mean|i meant|actually|rather|instead)\b\s*)+")


def _retarget(asked: Intent, said: str, messages: Sequence[Mapping[str, Any]]) -> Intent | None:
    """ "Delete 'buy milk'?" — "Okay, actually the eggs one": the same action on the task the answer names."""
    if asked.kind not in _TARGETED:
        return None
    body = _NOT_THAT.sub("", strip_fillers(normalise(said)))
    body = re.sub(r"\s+one$", "", body).strip()
    if not body:
        return None
    other = Intent(asked.kind, title=clean_title(body) or None, new_title=asked.new_title, due=asked.due)
    known, latest = _known_tasks(messages)
    return other if resolve(other, known, latest) is not None else None


def _forced_tool(tool_choice: Any, tools: Sequence[ToolSpec]) -> ToolSpec | None:
    if isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
        return next((t for t in tools if t.name == name), None)
    return None


def respond(messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec], tool_choice: Any = "auto") -> Reply:
    """The next assistant turn for a conversation."""
    user_idx = _last_index(messages, "user")
    if user_idx is None:
        return Reply(text=OPENING)
    said = content_text(messages[user_idx].get("content"))
    intent = parse(said)
    confirmed = False
    steps = _steps_after(messages, user_idx + 1)
    pending = _pending_confirmation(messages, user_idx)
    if pending is not None and intent.kind not in (Kind.YES, Kind.NO, *_ACTIONS):
        # not an answer to the question: another task of the same kind ("actually the eggs one"), else no change
        other = _retarget(pending.intent, said, messages)
        if other is None:
            return Reply(text=LEFT_AS_IS)
        intent = other
    if intent.kind in (Kind.YES, Kind.NO):
        if pending is not None and intent.kind is Kind.NO:
            return Reply(text=LEFT_AS_IS)
        if pending is not None and pending.call is not None:
            again = next((s for s in reversed(steps) if s.name == pending.call.name), None)
            if again is None:
                return Reply(tool_calls=(pending.call,))
            if again.output is None:
                return Reply(text="One moment.")
            kind = pending.intent.kind if pending.intent.kind in _ACTIONS else Kind.UNKNOWN
            if kind is Kind.UNKNOWN:
                return Reply(text=_generic_summary(again))
            known, latest = _known_tasks(messages)
            return Reply(text=summarise(kind, pending.intent, again, resolve(pending.intent, known, latest)))
        if pending is not None:
            intent, confirmed = pending.intent, True
    allow_tools = tool_choice != "none" and bool(tools)
    forced = _forced_tool(tool_choice, tools)

    if intent.kind not in _ACTIONS:
        if steps and steps[-1].output is not None:
            return Reply(text=_generic_summary(steps[-1]))
        if forced is not None or (tool_choice == "required" and tools):
            chosen = forced or tools[0]
            return Reply(tool_calls=(ToolCall(chosen.name, build_arguments(chosen, intent.kind, {})),))
        return Reply(text=_CHAT[intent.kind])

    tool = forced or pick_tool(intent.kind, tools)
    if not allow_tools or tool is None:
        verb = {Kind.ADD: "add", Kind.LIST: "list", Kind.COMPLETE: "complete", Kind.UPDATE: "change",
                Kind.DELETE: "delete", Kind.CLEAR: "clear"}[intent.kind]  # fmt: skip
        return Reply(text=f"Sorry, I can't {verb} tasks right now.")

    known, latest = _known_tasks(messages)
    target = resolve(intent, known, latest) if intent.kind in _TARGETED else None
    done = next((s for s in reversed(steps) if s.name == tool.name), None)
    if done is not None:
        if done.output is None:
            return Reply(text="One moment.")
        return Reply(text=summarise(intent.kind, intent, done, target))
    if intent.kind is Kind.CLEAR and not confirmed and not re.search(r"(?i)confirm", tool.description):
        return Reply(text=CONFIRM_QUESTION)

    if intent.kind in _TARGETED:
        needs_id = any(
            _role(name, schema) == "id" and name in tool.required and "null" not in _types(schema)
            for name, schema in tool.properties.items()
        )
        if needs_id and (target is None or target.id is None):
            lister = pick_tool(Kind.LIST, tools)
            if lister is not None and not any(s.name == lister.name for s in steps) and lister is not tool:
                return Reply(tool_calls=(ToolCall(lister.name, build_arguments(lister, Kind.LIST, {})),))
            what = intent.title or (f"number {intent.number}" if intent.number is not None else "that")
            return Reply(text=f"I couldn't find a task matching {what}.")
        if target is None and intent.title is None:
            return Reply(text="Which task do you mean?")
    if intent.kind is Kind.ADD and not intent.title:
        return Reply(text="What should the task be called?")
    return Reply(tool_calls=(ToolCall(tool.name, build_arguments(tool, intent.kind, _values(intent, target))),))


def _generic_summary(step: _Step) -> str:
    output = step.output or ""
    error = _error_of(output)
    if error:
        return f"Sorry, that didn't work: {error.rstrip('.')}."
    question = confirmation_question(output)
    if question:
        return question
    tasks = parse_tasks(output)
    if tasks and len(tasks) > 1:
        return summarise(Kind.LIST, Intent(Kind.LIST), step, None)
    text = output.strip()
    return text[:300] if text and not text.startswith(("{", "[")) else "Done."
