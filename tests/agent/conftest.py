"""Fixtures for the agent's tests: the real tasks MCP server, a scripted text-only session, provider keys."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

# The tests import their helpers (agent_testkit) as a top-level module; pytest runs in importlib mode.
sys.path.insert(0, str(Path(__file__).parent))

import pytest
from agent_testkit import CALLER, SERVER_START_TIMEOUT, TOKEN_KEY, ScriptedLLM, TasksServer, free_port, wait_for_http
from livekit.agents import AgentSession
from livekit.agents.vad import VAD

from voicefleet_agent.contract import ENV_TASKS_TOKEN_KEY
from voicefleet_tasks.store import OwnerTasks, TaskStore


@pytest.fixture(scope="session")
def tasks_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TasksServer]:
    """``python -m voicefleet_tasks`` in a subprocess, as it runs in production."""
    db = tmp_path_factory.mktemp("tasks") / "tasks.db"
    port = free_port()
    with (db.parent / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicefleet_tasks", "--db", str(db), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, ENV_TASKS_TOKEN_KEY: TOKEN_KEY},
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=SERVER_START_TIMEOUT, proc=proc)
            yield TasksServer(url=f"http://127.0.0.1:{port}/mcp", db=db, store=TaskStore(db))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def store(tasks_server: TasksServer) -> OwnerTasks:
    """Direct SQLite access to the test caller's tasks in the server's database, emptied before each test."""
    tasks_server.store.clear_all()
    return tasks_server.store.of(CALLER)


@pytest.fixture
async def scripted_session() -> AsyncIterator[tuple[AgentSession[Any], ScriptedLLM]]:
    """A text-only AgentSession (no STT/TTS/VAD) driven by a ScriptedLLM; start it with your agent."""
    scripted = ScriptedLLM()
    async with AgentSession[Any](llm=scripted, vad=None) as session:
        yield session, scripted
    assert scripted.remaining == 0, "the scripted LLM has unused replies"


@pytest.fixture
def provider_keys(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Keys in the plugins' default env vars, so a config without api_key_env builds."""
    keys = {"DEEPGRAM_API_KEY": "dg-default", "OPENAI_API_KEY": "oa-default", "CARTESIA_API_KEY": "ca-default"}
    for name, value in keys.items():
        monkeypatch.setenv(name, value)
    return keys


@pytest.fixture(scope="session")
def vad() -> VAD:
    from livekit.agents import inference

    return inference.VAD(model="silero")
