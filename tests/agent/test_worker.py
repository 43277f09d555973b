"""The worker process as the pod runs it: ``python -m voicefleet_agent start`` with a rendered config.

No LiveKit server here (real-room tests live with the test ground): the worker keeps retrying to register, which
is enough to check dispatch naming, the metrics endpoint and SIGTERM handling.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_testkit import free_port, make_config, poll, wait_for_http

from voicefleet_agent import contract
from voicefleet_operator.fleet import Fleet

STARTUP_TIMEOUT = 60.0


@pytest.fixture
def worker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    config = tmp_path / "agent.json"
    config.write_text(make_config(agent_name="task-manager", turn_detection="vad", idle_processes=1).to_json())
    worker_port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        contract.ENV_CONFIG_PATH: str(config),
        contract.ENV_AGENT_NAME: "not-this-one",  # the rendered config is the source of truth
        contract.ENV_LIVEKIT_URL: f"ws://127.0.0.1:{free_port()}",  # nothing listens there
        contract.ENV_LIVEKIT_API_KEY: "devkey",
        contract.ENV_LIVEKIT_API_SECRET: "secret",
        contract.ENV_PROMETHEUS_MULTIPROC_DIR: str(tmp_path / "prometheus"),
        contract.ENV_WORKER_PORT: str(worker_port),
        contract.ENV_METRICS_PORT: str(metrics_port),
        **getattr(request, "param", {}),
    }
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicefleet_agent", "start"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield proc, worker_port, metrics_port
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body.decode()


def test_worker_dispatch_metrics_and_sigterm(worker: tuple[subprocess.Popen[bytes], int, int]) -> None:
    proc, worker_port, metrics_port = worker
    wait_for_http(f"http://127.0.0.1:{worker_port}/worker", timeout=STARTUP_TIMEOUT, proc=proc)
    wait_for_http(f"http://127.0.0.1:{metrics_port}/metrics", timeout=STARTUP_TIMEOUT, proc=proc)

    assert json.loads(get(f"http://127.0.0.1:{worker_port}/worker"))["agent_name"] == "task-manager"
    gauge = f'{contract.ACTIVE_SESSIONS}{{agent="task-manager"}} 0.0'
    poll(lambda: gauge in get(f"http://127.0.0.1:{metrics_port}/metrics"), timeout=STARTUP_TIMEOUT)
    metrics = get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert f'{contract.COST_USD}{{agent="task-manager",modality="tts",provider="cartesia"}} 0.0' in metrics

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            code: int = resp.status
            return code
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("worker", [{contract.ENV_LIVEKIT_MAX_RETRY: "2"}], indirect=True)
def test_worker_that_cannot_reach_livekit_is_alive_not_ready_and_gives_up_non_zero(
    worker: tuple[subprocess.Popen[bytes], int, int], tmp_path: Path
) -> None:
    proc, worker_port, _ = worker
    base = f"http://127.0.0.1:{worker_port}"
    wait_for_http(base + contract.LIVENESS_PATH, timeout=STARTUP_TIMEOUT, proc=proc)
    assert status(base + contract.READINESS_PATH) == 503  # the readiness probe: not registered
    assert proc.wait(timeout=120) == contract.EXIT_GAVE_UP
    log = (tmp_path / "worker.log").read_text()
    assert "giving up: could not connect and register with LiveKit at ws://127.0.0.1:" in log, log[-3000:]


async def test_an_idle_worker_polls_the_fleet_channel_for_its_pod(tmp_path: Path) -> None:
    """The worker process itself, with no session, tells the operator that its pod reaches the fleet channel."""
    fleet = Fleet()
    fleet.admit("ns", "tasks", "default", "fleet-token")
    channel = fleet.channel("ns", "default")
    channel.publish(1, {"stt": "deepgram"})
    runner = await fleet.serve("127.0.0.1", 0)
    config = tmp_path / "agent.json"
    config.write_text(make_config(turn_detection="vad", idle_processes=0, policy_name="default").to_json())
    token = tmp_path / "token"
    token.write_text("fleet-token")
    env = {
        **os.environ,
        contract.ENV_CONFIG_PATH: str(config),
        contract.ENV_LIVEKIT_URL: f"ws://127.0.0.1:{free_port()}",  # no LiveKit: no session will ever run
        contract.ENV_LIVEKIT_API_KEY: "devkey",
        contract.ENV_LIVEKIT_API_SECRET: "secret",
        contract.ENV_PROMETHEUS_MULTIPROC_DIR: str(tmp_path / "prometheus"),
        contract.ENV_WORKER_PORT: str(free_port()),
        contract.ENV_METRICS_PORT: str(free_port()),
        contract.ENV_FLEET_URL: f"http://127.0.0.1:{runner.addresses[0][1]}",
        contract.ENV_POD_NAME: "tasks-6d5f-x2",
        contract.ENV_POD_NAMESPACE: "ns",
        contract.ENV_VOICEAGENT: "tasks",
        contract.ENV_FLEET_TOKEN_FILE: str(token),
    }
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "voicefleet_agent", "start"], env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while "tasks-6d5f-x2" not in fleet.polled("ns", "tasks", time.monotonic()):
                assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                await asyncio.sleep(0.2)
        assert channel.rollout(time.monotonic()) == (0, 0)  # a presence poll: no session process counted
    finally:
        proc.kill()
        proc.wait()
        await runner.cleanup()
