"""maxSessionsPerPod in a real room: a worker at its session capacity reports itself full to livekit-server, which
sends the next session to another worker of the same agent (two workers standing in for two pods)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from testground.livekit import LiveKit
from voicefleet_offline import espeak
from voiceroom import Caller, LiveKitCredentials, VoiceStack

pytestmark = pytest.mark.integration

GREETING_TIMEOUT = 60.0  # a shared, loaded 2-core box


@pytest.fixture(scope="module")
def one_session_workers(livekit: LiveKit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoiceStack]:
    if not espeak.available():
        pytest.fail("espeak-ng or sox not installed: run `make system-deps` (apt-get install espeak-ng sox)")
    stack = VoiceStack(
        tmp_path_factory.mktemp("capacity"),
        LiveKitCredentials.of(livekit),
        agent_name=f"capacity-{secrets.token_hex(3)}",
        configure=lambda config: config.model_copy(update={"max_sessions": 1}),
    )
    with stack:
        yield stack


def active_jobs(status: dict[str, Any]) -> int:
    return int(status.get("active_jobs", 0))  # protobuf JSON leaves out a zero


def wait(predicate: Callable[[], bool], what: str, timeout: float = GREETING_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(0.1)


async def test_a_worker_full_at_max_sessions_gets_no_second_session_the_other_worker_does(
    one_session_workers: VoiceStack,
) -> None:
    stack = one_session_workers
    second = stack.add_worker("worker-2")
    ports = {"worker": stack.worker_port, "worker-2": second}
    assert all(active_jobs(stack.worker_status(p)) == 0 for p in ports.values())
    async with Caller(stack.livekit, f"room-{secrets.token_hex(4)}", identity="first") as first:
        await first.dispatch(stack.agent_name)
        await first.greeting(timeout=GREETING_TIMEOUT)
        busy = {name for name, port in ports.items() if active_jobs(stack.worker_status(port)) == 1}
        assert len(busy) == 1, busy
        (full,) = busy
        wait(lambda: stack.worker_status(ports[full]).get("worker_load") == 1.0, "the busy worker reports full")
        async with Caller(stack.livekit, f"room-{secrets.token_hex(4)}", identity="second") as other:
            await other.dispatch(stack.agent_name)
            await other.greeting(timeout=GREETING_TIMEOUT)
            jobs = {name: active_jobs(stack.worker_status(port)) for name, port in ports.items()}
    assert jobs == {"worker": 1, "worker-2": 1}, jobs  # the second session went to the worker with room
