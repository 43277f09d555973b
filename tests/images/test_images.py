"""The images as a pod runs them: podman, uid 10001, read-only root filesystem, no capabilities.

`make images` builds them (cached by content); the `images` fixture builds what is missing, so this file also runs
alone. The operator logs in to the test ground's API server and gets ready; the agent registers with the test
ground's livekit-server; the offline image serves the providers (speech synthesis with espeak-ng and sox inside)
and the tasks MCP server.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from testground import images
from testground.kube import Cluster
from testground.livekit import LiveKit
from testground.process import ComponentError, free_port
from voicefleet_agent import contract
from voicefleet_agent.contract import AgentConfig, McpServerConfig, ProviderConfig

pytestmark = pytest.mark.integration
START_TIMEOUT = 120.0  # a loaded 2-core machine: importing livekit-agents alone takes seconds


@pytest.fixture(scope="session")
def built() -> dict[str, images.Built]:
    return {b.name: b for b in images.build()}


def status(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as error:
        return error.code, bytes(error.read())
    except (urllib.error.URLError, OSError) as error:
        return 0, str(error).encode()


def wait_until(container: images.Container, what: str, ok: Callable[[], bool]) -> float:
    """Seconds from `podman run` until `ok()`; fails loudly (with the container's log) if it exits or times out."""
    deadline = container.started + START_TIMEOUT
    while not ok():
        if (code := container.exited()) is not None:
            raise ComponentError(container.ref, f"exited {code} before {what}", container.log)
        if time.monotonic() > deadline:
            raise ComponentError(container.ref, f"not {what} after {START_TIMEOUT:.0f} s", container.log)
        time.sleep(0.2)
    return time.monotonic() - container.started


def test_operator_image_as_uid_10001_read_only_logs_in_and_gets_ready(
    built: dict[str, images.Built], cluster: Cluster, crds: None, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"  # readable by uid 10001 inside (the ground's is 0600, root's)
    kubeconfig.write_text(cluster.kubeconfig.read_text())
    kubeconfig.chmod(0o644)
    health = free_port()
    namespace = "images-operator"  # its own namespace: the session's cluster-wide operator owns the rest
    cluster.kubectl("create", "namespace", namespace, check=False)
    args = [
        "--log-format", "plain", "--namespace", namespace, "--liveness", f"http://127.0.0.1:{health}/healthz",
        "--metrics-port", str(free_port()), "--fleet-listen", f"127.0.0.1:{free_port()}",
    ]  # fmt: skip
    with images.Container(
        built["operator"].ref, args, log=tmp_path / "operator.log", env={"KUBECONFIG": "/etc/voicefleet-kube/config"},
        mounts={kubeconfig: "/etc/voicefleet-kube/config"},
    ) as container:  # fmt: skip
        seconds = wait_until(container, "ready", lambda: status(f"http://127.0.0.1:{health}/readyz")[0] == 200)
        assert status(f"http://127.0.0.1:{health}/healthz") == (200, b"ok\n")
        assert container.stop() == 0  # SIGTERM: a clean stop
    print(f"operator image: podman run -> ready in {seconds:.1f} s")


def test_agent_image_as_uid_10001_read_only_registers_with_livekit_and_gets_ready(
    built: dict[str, images.Built], livekit: LiveKit, tmp_path: Path
) -> None:
    dead = "http://127.0.0.1:1"  # no session runs here: registration needs no provider
    config = AgentConfig(
        agent_name="image-check",
        instructions="You manage tasks.",
        stt=(ProviderConfig(name="deepgram", provider="deepgram", model="nova-3", base_url=dead),),
        llm=(ProviderConfig(name="openai", provider="openai", model="gpt-4o-mini", base_url=dead + "/v1"),),
        tts=(ProviderConfig(name="cartesia", provider="cartesia", model="sonic-3", base_url=dead),),
        mcp_servers=(McpServerConfig(name="tasks", url=dead + "/mcp"),),
        turn_detection="vad",
        idle_processes=1,
    )
    config_file = tmp_path / "agent.json"
    config_file.write_text(config.to_json())
    config_file.chmod(0o644)
    worker, metrics = free_port(), free_port()
    env = {
        **livekit.env(),
        contract.ENV_CONFIG_PATH: f"{contract.CONFIG_DIR}/{contract.CONFIG_FILE}",
        contract.ENV_PROMETHEUS_MULTIPROC_DIR: "/tmp/prometheus",
        contract.ENV_WORKER_PORT: str(worker),
        contract.ENV_METRICS_PORT: str(metrics),
    }
    mounts = {config_file: f"{contract.CONFIG_DIR}/{contract.CONFIG_FILE}"}
    with images.Container(built["agent"].ref, log=tmp_path / "agent.log", env=env, mounts=mounts) as container:
        base = f"http://127.0.0.1:{worker}"
        seconds = wait_until(container, "ready", lambda: status(base + contract.READINESS_PATH)[0] == 200)
        assert json.loads(status(base + contract.LIVENESS_PATH)[1])["agent_name"] == "image-check"
        assert "registered worker" in container.log.read_text()
        # the idle job process a session would run in: its prewarm (VAD, SSL context, preloaded modules) ran
        wait_until(container, "an idle job process initialized",
                   lambda: "process initialized" in container.log.read_text())  # fmt: skip
        assert "error initializing process" not in container.log.read_text()
        assert container.stop(grace=30) == 0
    print(f"agent image: podman run -> registered and ready in {seconds:.1f} s")


def test_offline_image_synthesises_speech_and_serves_the_tasks_mcp_server(
    built: dict[str, images.Built], tmp_path: Path
) -> None:
    stt, openai, tts, tasks = free_port(), free_port(), free_port(), free_port()
    offline_args = [
        "voicefleet_offline", "all", "--host", "127.0.0.1", "--stt-port", str(stt), "--openai-port", str(openai),
        "--tts-port", str(tts),
    ]  # fmt: skip
    tasks_args = ["voicefleet_tasks", "--host", "127.0.0.1", "--port", str(tasks), "--db", "/tmp/tasks.db"]
    ref = built["offline"].ref
    with (
        images.Container(ref, offline_args, log=tmp_path / "offline.log") as offline,
        images.Container(
            ref, tasks_args, log=tmp_path / "tasks.log", env={contract.ENV_TASKS_TOKEN_KEY: secrets.token_hex(16)}
        ) as tasks_server,
    ):
        seconds = max(
            wait_until(offline, f"serving :{port}", lambda p=port: status(f"http://127.0.0.1:{p}/healthz")[0] == 200)
            for port in (stt, openai, tts)
        )
        wait_until(tasks_server, "serving", lambda: status(f"http://127.0.0.1:{tasks}/healthz")[0] == 200)
        request = {
            "model_id": "sonic-3",
            "transcript": "Your task is saved.",
            "voice": {"mode": "id", "id": "offline"},
            "output_format": {"container": "wav", "encoding": "pcm_s16le", "sample_rate": 16000},
            "language": "en",
        }
        code, body = status(
            f"http://127.0.0.1:{tts}/tts/bytes",
            data=json.dumps(request).encode(),
            headers={"X-API-Key": "offline", "Content-Type": "application/json"},
        )
        assert code == 200 and body[:4] == b"RIFF" and len(body) > 16000, (code, body[:200])
    print(f"offline image: podman run -> Whisper loaded and serving in {seconds:.1f} s")


def test_agent_image_runs_the_browser_token_service_as_the_operator_renders_it(
    built: dict[str, images.Built], livekit: LiveKit, tmp_path: Path
) -> None:
    port = free_port()
    env = {**livekit.env(), contract.ENV_AGENT_NAME: "image-check", contract.ENV_BROWSER_PORT: str(port)}
    command = ["python", "-m", contract.BROWSER_MODULE]  # the Deployment's command (desired._browser_objects)
    ref = built["agent"].ref
    with images.Container(ref, log=tmp_path / "browser.log", env=env, entrypoint=command) as container:
        base = f"http://127.0.0.1:{port}"
        seconds = wait_until(container, "serving", lambda: status(base + contract.BROWSER_HEALTH_PATH)[0] == 200)
        code, body = status(
            base + contract.BROWSER_TOKEN_PATH, data=b"{}", headers={"Content-Type": "application/json"}
        )
        assert code == 200 and set(json.loads(body)) == {"server_url", "participant_token"}, body[:200]
        page, bundle = status(base + "/"), status(base + "/talk.js")
        assert page[0] == 200 and b"talk.js" in page[1]
        assert bundle[0] == 200 and b"lk.transcription" in bundle[1], "talk.js missing from the image: make page"
        assert container.stop(grace=10) == 0
    print(f"agent image as token service: podman run -> serving in {seconds:.1f} s")
