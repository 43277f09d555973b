"""The Task Manager as an MCP server over streamable HTTP (``mcp`` 2.x ``MCPServer``).

Every request carries a bearer token the agent signed for its session (``contract.sign_caller_token``, key from
``VOICEFLEET_TASKS_TOKEN_KEY``); the server verifies it with the same key and serves the task list of the token's
subject, the caller. A request without a valid token is refused (401) before any tool runs: a caller's identity is
never taken from a header anyone could set.

Tools are plain sync functions: the SDK runs them in a worker thread, and ``TaskStore`` opens a connection per
operation, so concurrent sessions never share a connection.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voicefleet_agent.contract import ENV_TASKS_TOKEN_KEY, TokenError, tasks_token_key, verify_caller_token
from voicefleet_tasks.store import OwnerTasks, Task, TaskNotFound, TaskStore

SERVER_NAME = "voicefleet-tasks"
MCP_PATH = "/mcp"
HEALTH_PATH = "/healthz"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8800
# advertised in the auth metadata only: tokens are minted by the agent, not by an OAuth server
TOKEN_ISSUER = "https://voicefleet.io/agent"
AGENT_CLIENT_ID = "voicefleet-agent"

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


class CallerTokenVerifier:
    """Accepts the agent's HMAC-signed caller tokens (``contract.verify_caller_token``) and nothing else."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = verify_caller_token(token, self._key, now=time.time())
        except TokenError as exc:
            log.warning("refused a tasks token: %s", exc)
            return None
        return AccessToken(
            token=token,
            client_id=AGENT_CLIENT_ID,
            scopes=[],
            expires_at=claims.exp,
            subject=claims.sub,
            claims={"sid": claims.sid},
        )


def build_server(store: TaskStore, key: bytes) -> MCPServer:
    """An MCP server whose tools read and change the caller's tasks in ``store``; tokens are verified with ``key``."""
    server = MCPServer(
        SERVER_NAME,
        instructions="Manage the user's to-do list.",
        token_verifier=CallerTokenVerifier(key),
        auth=AuthSettings(issuer_url=TOKEN_ISSUER, resource_server_url=None),
    )
    destructive = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False)

    def caller() -> OwnerTasks:
        token = get_access_token()
        if token is None or not token.subject:  # the middleware refuses such requests first; never serve them
            raise ToolError("not authenticated")
        return store.of(token.subject)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def list_tasks(include_done: bool = True) -> TaskList:
        """List the user's tasks: open ones first, then completed ones."""
        return TaskList(tasks=caller().list_tasks(include_done=include_done))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
    def add_task(title: str, due: str | None = None) -> Task:
        """Add a task. ``due`` is free text as the user said it, e.g. "tomorrow morning"."""
        tasks = caller()
        return _guarded(lambda: tasks.add(title, due))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True))
    def update_task(id: int, title: str | None = None, due: str | None = None) -> Task:
        """Change a task's title and/or due date; omitted fields stay, an empty due clears it."""
        tasks = caller()
        return _guarded(lambda: tasks.update(id, title=title, due=due))

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True))
    def complete_task(id: int) -> Task:
        """Mark a task as done."""
        tasks = caller()
        return _guarded(lambda: tasks.complete(id))

    @server.tool(annotations=destructive)
    def delete_task(id: int) -> Task:
        """Delete one task for good; returns the task as it was."""
        tasks = caller()
        return _guarded(lambda: tasks.delete(id))

    @server.tool(annotations=destructive)
    def clear_tasks() -> Cleared:
        """Delete every task for good."""
        return Cleared(deleted=caller().clear())

    @server.custom_route(HEALTH_PATH, methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return server


def run(db: Path, key: bytes, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the tasks in ``db`` on ``http://host:port/mcp`` until interrupted."""
    server = build_server(TaskStore(db), key)
    log.info("serving %s on http://%s:%d%s", db, host, port, MCP_PATH)
    server.run("streamable-http", host=host, port=port, streamable_http_path=MCP_PATH)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m voicefleet_tasks", description=__doc__)
    parser.add_argument("--db", type=Path, required=True, help="SQLite file (created if missing)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        key = tasks_token_key(os.environ)
    except ValueError as exc:
        sys.exit(f"voicefleet_tasks: {exc}")
    if key is None:
        sys.exit(f"voicefleet_tasks: set {ENV_TASKS_TOKEN_KEY} to the key the agent signs caller tokens with")
    run(args.db, key, host=args.host, port=args.port)
