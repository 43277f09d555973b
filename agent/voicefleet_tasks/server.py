"""The Task Manager as an MCP server over streamable HTTP (``mcp`` 2.x ``MCPServer``).

Tools are plain sync functions: the SDK runs them in a worker thread, and ``TaskStore`` opens a connection per
operation, so concurrent sessions never share a connection.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voicefleet_tasks.store import Task, TaskNotFound, TaskStore

SERVER_NAME = "voicefleet-tasks"
MCP_PATH = "/mcp"
HEALTH_PATH = "/healthz"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8800

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class TaskList(BaseModel):
    tasks: list[Task]


class Cleared(BaseModel):
    deleted: int


@contextmanager
def _as_tool_errors() -> Iterator[None]:
    # Anticipated failures reach the model as a readable is_error result instead of a generic crash.
    try:
        yield
    except TaskNotFound as exc:
        raise ToolError(str(exc)) from exc
    except ValueError as exc:
        raise ToolError(str(exc)) from exc


def _guarded(fn: Callable[[], _T]) -> _T:
    with _as_tool_errors():
        return fn()


def build_server(store: TaskStore) -> MCPServer:
    """An MCP server whose tools read and change ``store``."""
    server = MCPServer(SERVER_NAME, instructions="Manage the user's to-do list.")
    destructive = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def list_tasks(include_done: bool = True) -> TaskList:
        """List the user's tasks: open ones first, then completed ones."""
        return TaskList(tasks=store.list_tasks(include_done=include_done))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
    def add_task(title: str, due: str | None = None) -> Task:
        """Add a task. ``due`` is free text as the user said it, e.g. "tomorrow morning"."""
        return _guarded(lambda: store.add(title, due))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True))
    def update_task(id: int, title: str | None = None, due: str | None = None) -> Task:
        """Change a task's title and/or due date; omitted fields stay, an empty due clears it."""
        return _guarded(lambda: store.update(id, title=title, due=due))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True))
    def complete_task(id: int) -> Task:
        """Mark a task as done."""
        return _guarded(lambda: store.complete(id))

    @server.tool(annotations=destructive)
    def delete_task(id: int) -> Task:
        """Delete one task for good; returns the task as it was."""
        return _guarded(lambda: store.delete(id))

    @server.tool(annotations=destructive)
    def clear_tasks() -> Cleared:
        """Delete every task for good."""
        return Cleared(deleted=store.clear())

    @server.custom_route(HEALTH_PATH, methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return server


def run(db: Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the tasks in ``db`` on ``http://host:port/mcp`` until interrupted."""
    server = build_server(TaskStore(db))
    log.info("serving %s on http://%s:%d%s", db, host, port, MCP_PATH)
    server.run("streamable-http", host=host, port=port, streamable_http_path=MCP_PATH)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m voicefleet_tasks", description=__doc__)
    parser.add_argument("--db", type=Path, required=True, help="SQLite file (created if missing)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run(args.db, host=args.host, port=args.port)
