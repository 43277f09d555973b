"""The SQLite task store: semantics and safety under concurrent writers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from voicefleet_tasks.store import TaskNotFound, TaskStore

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


@pytest.fixture
def tasks(tmp_path: Path) -> TaskStore:
    return TaskStore(tmp_path / "tasks.db", clock=lambda: NOW)


def test_add_and_list_in_order_open_first(tasks: TaskStore) -> None:
    a = tasks.add("  buy   milk ", due="tomorrow")
    b = tasks.add("call mom")
    tasks.complete(a.id)

    listed = tasks.list_tasks()

    assert [t.id for t in listed] == [b.id, a.id]
    assert (listed[1].title, listed[1].due, listed[1].done) == ("buy milk", "tomorrow", True)
    assert listed[1].created_at == listed[1].completed_at == "2026-11-24T09:30:00+00:00"
    assert [t.id for t in tasks.list_tasks(include_done=False)] == [b.id]


def test_update_keeps_omitted_fields_and_clears_an_empty_due(tasks: TaskStore) -> None:
    task = tasks.add("buy milk", due="friday")

    assert tasks.update(task.id, title="buy oat milk").due == "friday"
    cleared = tasks.update(task.id, due="")
    assert (cleared.title, cleared.due) == ("buy oat milk", None)


def test_delete_returns_the_task_and_clear_counts(tasks: TaskStore) -> None:
    a, _ = tasks.add("a"), tasks.add("b")

    assert tasks.delete(a.id).title == "a"
    assert [t.title for t in tasks.list_tasks()] == ["b"]
    assert tasks.clear() == 1
    assert tasks.list_tasks() == []


@pytest.mark.parametrize("op", ["get", "complete", "delete", "update"])
def test_unknown_ids_raise(tasks: TaskStore, op: str) -> None:
    with pytest.raises(TaskNotFound, match="no task with id 42"):
        getattr(tasks, op)(42)


@pytest.mark.parametrize("title", ["", "   ", "x" * 201])
def test_invalid_titles_are_rejected_and_nothing_is_stored(tasks: TaskStore, title: str) -> None:
    with pytest.raises(ValueError):
        tasks.add(title)
    assert tasks.list_tasks() == []


def test_memory_databases_are_refused() -> None:
    with pytest.raises(ValueError, match="needs a file"):
        TaskStore(":memory:")


def test_concurrent_writers_from_many_threads_and_stores(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    stores = [TaskStore(db) for _ in range(4)]  # like several server processes on one file

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
