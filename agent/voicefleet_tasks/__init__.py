"""The Task Manager domain: SQLite storage and an MCP server exposing it as tools.

Import-light on purpose: the MCP server (and its web stack) lives in ``voicefleet_tasks.server``.
"""

from voicefleet_tasks.store import OwnerTasks, Task, TaskNotFound, TaskStore

__all__ = ["OwnerTasks", "Task", "TaskNotFound", "TaskStore"]
