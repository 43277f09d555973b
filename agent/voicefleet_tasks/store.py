"""SQLite storage for tasks, one list per owner (the caller), safe under concurrent sessions.

Every query is scoped by the owner: ``TaskStore(path).of(owner)`` is one caller's list, and no method of it can
read or change another owner's task (an id from someone else's list is "not found").

Every operation opens its own connection (sqlite3 connections are not shared across threads, and the MCP
server runs sync tools in a thread pool); the database runs in WAL mode so readers never block the writer, and
writes take the write lock up front (``BEGIN IMMEDIATE``) so two read-modify-write operations cannot interleave.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

MAX_TITLE_LENGTH = 200
MAX_DUE_LENGTH = 100
BUSY_TIMEOUT_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL,
    due TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    completed_at TEXT
)
"""
_OWNER_COLUMN = "ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT ''"  # databases from before owners
_OWNER_INDEX = "CREATE INDEX IF NOT EXISTS tasks_by_owner ON tasks (owner, done, id)"
_COLUMNS = "id, title, due, done, created_at, completed_at"


class Task(BaseModel):
    """One task as the tools return it."""

    id: int
    title: str
    due: str | None = Field(default=None, description="When it is due, as the user said it.")
    done: bool = False
    created_at: str
    completed_at: str | None = None


class TaskNotFound(LookupError):
    """No task has this id."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"no task with id {task_id}")
        self.task_id = task_id


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _clean_title(title: str) -> str:
    cleaned = " ".join(title.split())
    if not cleaned:
        raise ValueError("a task needs a title")
    if len(cleaned) > MAX_TITLE_LENGTH:
        raise ValueError(f"a title has at most {MAX_TITLE_LENGTH} characters")
    return cleaned


def _clean_due(due: str | None) -> str | None:
    if due is None:
        return None
    cleaned = " ".join(due.split())
    if len(cleaned) > MAX_DUE_LENGTH:
        raise ValueError(f"a due date has at most {MAX_DUE_LENGTH} characters")
    return cleaned or None


def _row_to_task(row: sqlite3.Row) -> Task:
    return Task(
        id=row["id"],
        title=row["title"],
        due=row["due"],
        done=bool(row["done"]),
        created_at=row["created_at"],
        completed_at=row["completed_at"],
    )


class TaskStore:
    """Tasks in one SQLite file; ``of(owner)`` is one owner's list. Safe to use from any thread or process."""

    def __init__(self, path: str | Path, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.path = Path(path)
        if str(path) == ":memory:":
            raise ValueError("TaskStore needs a file: every operation opens its own connection")
        self._clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            if "owner" not in {row["name"] for row in conn.execute("PRAGMA table_info(tasks)")}:
                conn.execute(_OWNER_COLUMN)
            conn.execute(_OWNER_INDEX)

    def of(self, owner: str) -> OwnerTasks:
        """The task list of ``owner`` (a caller identity)."""
        if not owner:
            raise ValueError("a task list needs an owner")
        return OwnerTasks(self, owner)

    def titles_by_owner(self) -> dict[str, list[str]]:
        """Every owner's task titles (tests, operators)."""
        found: dict[str, list[str]] = {}
        with self._connect() as conn:
            for row in conn.execute("SELECT owner, title FROM tasks ORDER BY id"):
                found.setdefault(row["owner"], []).append(row["title"])
        return found

    def clear_all(self) -> int:
        """Delete every owner's tasks (tests, operators); returns how many there were."""
        with self._write() as conn:
            return conn.execute("DELETE FROM tasks").rowcount

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous=NORMAL")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _now(self) -> str:
        return self._clock().isoformat(timespec="seconds")


class OwnerTasks:
    """One owner's tasks: every query is scoped to ``owner``."""

    def __init__(self, store: TaskStore, owner: str) -> None:
        self._store = store
        self.owner = owner

    def _get(self, conn: sqlite3.Connection, task_id: int) -> Task:
        row = conn.execute(f"SELECT {_COLUMNS} FROM tasks WHERE id = ? AND owner = ?", (task_id, self.owner)).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        return _row_to_task(row)

    def get(self, task_id: int) -> Task:
        with self._store._connect() as conn:
            return self._get(conn, task_id)

    def list_tasks(self, *, include_done: bool = True) -> list[Task]:
        """Open tasks first, then done ones; each in the order they were added."""
        query = f"SELECT {_COLUMNS} FROM tasks WHERE owner = ?"
        if not include_done:
            query += " AND done = 0"
        with self._store._connect() as conn:
            rows = conn.execute(query + " ORDER BY done, id", (self.owner,)).fetchall()
        return [_row_to_task(r) for r in rows]

    def add(self, title: str, due: str | None = None) -> Task:
        title, due = _clean_title(title), _clean_due(due)
        with self._store._write() as conn:
            cur = conn.execute(
                "INSERT INTO tasks (owner, title, due, created_at) VALUES (?, ?, ?, ?)",
                (self.owner, title, due, self._store._now()),
            )
            assert cur.lastrowid is not None
            return self._get(conn, cur.lastrowid)

    def update(self, task_id: int, *, title: str | None = None, due: str | None = None) -> Task:
        """Change the title and/or the due date; ``None`` keeps a field, an empty due clears it."""
        with self._store._write() as conn:
            task = self._get(conn, task_id)
            new_title = _clean_title(title) if title is not None else task.title
            new_due = _clean_due(due) if due is not None else task.due
            conn.execute(
                "UPDATE tasks SET title = ?, due = ? WHERE id = ? AND owner = ?",
                (new_title, new_due, task_id, self.owner),
            )
            return self._get(conn, task_id)

    def complete(self, task_id: int) -> Task:
        with self._store._write() as conn:
            task = self._get(conn, task_id)
            if not task.done:
                conn.execute(
                    "UPDATE tasks SET done = 1, completed_at = ? WHERE id = ? AND owner = ?",
                    (self._store._now(), task_id, self.owner),
                )
            return self._get(conn, task_id)

    def delete(self, task_id: int) -> Task:
        """Delete one task and return it as it was."""
        with self._store._write() as conn:
            task = self._get(conn, task_id)
            conn.execute("DELETE FROM tasks WHERE id = ? AND owner = ?", (task_id, self.owner))
            return task

    def clear(self) -> int:
        """Delete every task of this owner; returns how many there were."""
        with self._store._write() as conn:
            return conn.execute("DELETE FROM tasks WHERE owner = ?", (self.owner,)).rowcount
