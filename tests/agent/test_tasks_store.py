"""The SQLite task store: semantics and safety under concurrent writers."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from voicefleet_tasks.store import OwnerTasks, TaskNotFound, TaskStore

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


@pytest.fixture
def tasks(tmp_path: Path) -> OwnerTasks:
    return TaskStore(tmp_path / "tasks.db", clock=lambda: NOW).of("participant:alice")


def test_add_and_list_in_order_open_first(tasks: OwnerTasks) -> None:
    a = tasks.add("  buy   milk ", due="tomorrow")
    b = tasks.add("call mom")
    tasks.complete(a.id)

    listed = tasks.list_tasks()

    assert [t.id for t in listed] == [b.id, a.id]
    assert (listed[1].title, listed[1].due, listed[1].done) == ("buy milk", "tomorrow", True)
    assert listed[1].created_at == listed[1].completed_at == "2026-11-24T09:30:00+00:00"
    assert [t.id for t in tasks.list_tasks(include_done=False)] == [b.id]


def test_update_keeps_omitted_fields_and_clears_an_empty_due(tasks: OwnerTasks) -> None:
    task = tasks.add("buy milk", due="friday")

    assert tasks.update(task.id, title="buy oat milk").due == "friday"
    cleared = tasks.update(task.id, due="")
    assert (cleared.title, cleared.due) == ("buy oat milk", None)


def test_delete_returns_the_task_and_clear_counts(tasks: OwnerTasks) -> None:
    a, _ = tasks.add("a"), tasks.add("b")

    assert tasks.delete(a.id).title == "a"
    assert [t.title for t in tasks.list_tasks()] == ["b"]
    assert tasks.clear() == 1
    assert tasks.list_tasks() == []


@pytest.mark.parametrize("op", ["get", "complete", "delete", "update"])
def test_unknown_ids_raise(tasks: OwnerTasks, op: str) -> None:
    with pytest.raises(TaskNotFound, match="no task with id 42"):
        getattr(tasks, op)(42)


@pytest.mark.parametrize("title", ["", "   ", "x" * 201])
def test_invalid_titles_are_rejected_and_nothing_is_stored(tasks: OwnerTasks, title: str) -> None:
    with pytest.raises(ValueError):
        tasks.add(title)
    assert tasks.list_tasks() == []


def test_memory_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="needs a file"):
        TaskStore(":memory:")


def test_concurrent_writers_from_many_threads_and_stores(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    stores = [TaskStore(db).of("phone:+15550100") for _ in range(4)]  # like several server processes on one file

    def work(n: int) -> int:
        store = stores[n % len(stores)]
        task = store.add(f"task {n}")
        store.update(task.id, due=f"day {n}")
        store.complete(task.id)
        return task.id

    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(work, range(200)))

    assert len(set(ids)) == 200
    listed = stores[0].list_tasks()
    assert len(listed) == 200
    assert all(t.done and t.due == f"day {t.title.split()[1]}" for t in listed)


def test_owners_never_see_or_touch_each_others_tasks(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks.db")
    alice, bob = store.of("participant:alice"), store.of("phone:+15550100")
    milk = alice.add("buy milk")
    bob.add("call mom")

    assert [t.title for t in alice.list_tasks()] == ["buy milk"]
    assert [t.title for t in bob.list_tasks()] == ["call mom"]
    for op in ("get", "complete", "delete", "update"):
        with pytest.raises(TaskNotFound):
            getattr(bob, op)(milk.id)
    assert bob.clear() == 1
    assert [t.title for t in alice.list_tasks()] == ["buy milk"]


def test_a_database_from_before_owners_gains_the_column(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, due TEXT, "
            "done INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL, completed_at TEXT)"
        )
        conn.execute("INSERT INTO tasks (title, created_at) VALUES ('old', '2026-01-01')")

    store = TaskStore(db)

    assert store.of("participant:alice").list_tasks() == []  # nobody owns the old row
    assert store.clear_all() == 1
