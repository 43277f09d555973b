"""The agent side of a real room: offline providers, the tasks MCP server and a real worker, as subprocesses.

Everything runs as the leader of its own process group with its output in ``<root>/logs/<name>.log`` (the test
ground's ``Supervisor``), so ``stop()`` ends exactly what was started and a killed test run leaves nothing behind.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from livekit import rtc
from prometheus_client.parser import text_string_to_metric_families

from testground.process import ComponentError, Process, Supervisor, free_port, http_ok
from voicefleet_agent import contract, loopwatch
from voicefleet_agent.contract import AgentConfig, McpServerConfig, ProviderConfig, VadConfig
from voicefleet_agent.session import caller_identity
from voicefleet_tasks.store import OwnerTasks, TaskStore

AGENT_NAME = "voiceroom-tasks"
# a session's loop callbacks using this much CPU are logged (loopwatch), and livekit-agents' own loop monitor reports
# stalls of the loop this long by the wall clock (its floor)
LOOP_CPU_WARN_MS = 20
LOOP_HOG = loopwatch.MESSAGE
LOOP_BLOCKED = "event loop blocked for"
DEFAULT_CALLER = "caller"  # Caller's default identity
INSTRUCTIONS = "You manage the user's tasks. Be brief."
STARTUP_TIMEOUT = 90.0
OFFLINE_SERVICES = ("deepgram", "openai", "cartesia")


@dataclass(frozen=True)
class LiveKitCredentials:
    """Where the room server listens; ``testground.livekit.LiveKit`` has the same fields."""

    url: str
    http_url: str
    api_key: str
    api_secret: str

    @classmethod
    def of(cls, livekit: Any) -> LiveKitCredentials:
        return cls(livekit.url, livekit.http_url, livekit.api_key, livekit.api_secret)

    def env(self) -> dict[str, str]:
        return {
            contract.ENV_LIVEKIT_URL: self.url,
            contract.ENV_LIVEKIT_API_KEY: self.api_key,
            contract.ENV_LIVEKIT_API_SECRET: self.api_secret,
        }


@dataclass(frozen=True)
class OfflineUrls:
    deepgram: str  # provider URL, e.g. http://127.0.0.1:P/v1/listen
    openai: str  # http://127.0.0.1:P/v1
    cartesia: str  # http://127.0.0.1:P
    controls: Mapping[str, str]  # service -> http://127.0.0.1:P/_control


def agent_config(urls: OfflineUrls, tasks_url: str, *, agent_name: str = AGENT_NAME, **overrides: Any) -> AgentConfig:
    """The config the operator would render, pointed at the offline stack: Deepgram first, Whisper as fallback.

    Defaults fit a 2-core box: VAD turn detection (~0.8 s voice-to-voice on espeak, vs ~2.4 s semantic), one warm
    job process, and session-based capacity (CPU load flips the worker between available and full).
    """
    fields: dict[str, Any] = {
        "agent_name": agent_name,
        "instructions": INSTRUCTIONS,
        "stt": (
            # no filler words, as Deepgram's own default: a backchannel ("uh-huh") is then no words at all
            ProviderConfig(name="deepgram", provider="deepgram", model="nova-3", base_url=urls.deepgram,
                           api_key_env="DEEPGRAM_API_KEY", options={"filler_words": "false"}),
            ProviderConfig(name="whisper", provider="whisper", model="whisper-1", base_url=urls.openai,
                           api_key_env="OPENAI_API_KEY"),
        ),
        "llm": (ProviderConfig(name="openai", provider="openai", model="gpt-4o-mini", base_url=urls.openai,
                               api_key_env="OPENAI_API_KEY"),),
        "tts": (ProviderConfig(name="cartesia", provider="cartesia", model="sonic-3", base_url=urls.cartesia,
                               api_key_env="CARTESIA_API_KEY"),),
        "vad": VadConfig(),
        "turn_detection": "vad",
        "mcp_servers": (McpServerConfig(name=contract.TASKS_MCP_SERVER, url=tasks_url),),
        "max_sessions": 4,
        "idle_processes": 1,
        "drain_timeout_seconds": 5,
    }  # fmt: skip
    fields.update(overrides)
    return AgentConfig(**fields)


def _get_json(url: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def _read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            name, value = line.removeprefix("export ").split("=", 1)
            env[name] = value
    return env


@dataclass
class Memory:
    """A process tree's memory: summed PSS (shared pages split fairly) and summed RSS, in MiB."""

    pss_mb: float
    rss_mb: float
    processes: int


def tree_memory(pid: int) -> Memory:
    pids = [pid, *_descendants(pid)]
    pss = rss = 0
    counted = 0
    for p in pids:
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        counted += 1
        for line in text.splitlines():
            if line.startswith("Pss:"):
                pss += int(line.split()[1])
            elif line.startswith("Rss:"):
                rss += int(line.split()[1])
    return Memory(pss_mb=round(pss / 1024, 1), rss_mb=round(rss / 1024, 1), processes=counted)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class VoiceStack:
    """Offline providers + tasks MCP server + a real ``python -m voicefleet_agent start`` worker.

    ``VoiceStack(root, livekit).start()`` (or ``with VoiceStack(...) as stack``); ``configure`` adjusts the
    rendered AgentConfig before the worker starts. Fault injection: ``set_fault("deepgram", "down")``.
    """

    root: Path
    livekit: LiveKitCredentials
    agent_name: str = AGENT_NAME
    configure: Callable[[AgentConfig], AgentConfig] | None = None
    # no interim decodes: with VAD turn detection nobody reads them, and on 2 cores a running interim decode
    # delays the final by ~1 s (v2v 2.3-2.9 s with, 1.2-1.4 s without, measured in a real room)
    offline_args: tuple[str, ...] = ("--interim-interval-ms", "0")
    supervisor: Supervisor = field(init=False)
    urls: OfflineUrls = field(init=False)
    config: AgentConfig = field(init=False)
    db: Path = field(init=False)
    task_db: TaskStore = field(init=False)
    store: OwnerTasks = field(init=False)
    tasks_url: str = field(init=False)
    worker_port: int = field(init=False)
    metrics_port: int = field(init=False)
    worker: Process = field(init=False)

    def __post_init__(self) -> None:
        self.token_key = secrets.token_urlsafe(32)  # shared by the worker and the tasks server, like a Secret
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs_dir = self.root / "logs"
        self.supervisor = Supervisor(self.logs_dir)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self, timeout: float = STARTUP_TIMEOUT) -> Self:
        try:
            self._start_offline(timeout)
            self._start_tasks(timeout)
            self._start_worker(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Worker (SIGTERM drains, a second signal exits), then tasks, then providers."""
        self.supervisor.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _start_offline(self, timeout: float) -> None:
        env_file = self.root / "offline.env"
        env_file.unlink(missing_ok=True)
        proc = self.supervisor.spawn(
            "offline", [sys.executable, "-m", "voicefleet_offline", "--env-file", str(env_file), *self.offline_args]
        )
        proc.wait_ready(env_file.exists, timeout, "listening (env file written)")
        env = _read_env_file(env_file)
        self.offline_env = env
        self.urls = OfflineUrls(
            deepgram=env["DEEPGRAM_BASE_URL"],
            openai=env["OPENAI_BASE_URL"],
            cartesia=env["CARTESIA_BASE_URL"],
            controls={s: env[f"VOICEFLEET_OFFLINE_{s.upper()}_CONTROL"] for s in OFFLINE_SERVICES},
        )

    def _start_tasks(self, timeout: float) -> None:
        self.db = self.root / "tasks.db"
        port = free_port()
        proc = self.supervisor.spawn(
            "tasks",
            [sys.executable, "-m", "voicefleet_tasks", "--db", str(self.db), "--port", str(port)],
            env={contract.ENV_TASKS_TOKEN_KEY: self.token_key},
        )
        proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout, "serving")
        self.tasks_url = f"http://127.0.0.1:{port}/mcp"
        self.task_db = TaskStore(self.db)
        self.store = self.tasks_of(DEFAULT_CALLER)

    def tasks_of(self, identity: str) -> OwnerTasks:
        """The task list the agent keeps for the caller who joins as ``identity`` (``store``: the default caller)."""
        return self.task_db.of(caller_identity(rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, identity, {}))

    def tasks_of_phone(self, number: str) -> OwnerTasks:
        """The task list the agent keeps for a phone caller (SIP participant) calling from ``number``."""
        sip = rtc.ParticipantKind.PARTICIPANT_KIND_SIP
        return self.task_db.of(caller_identity(sip, "", {contract.SIP_PHONE_NUMBER_ATTRIBUTE: number}))

    def _start_worker(self, timeout: float) -> None:
        config = agent_config(self.urls, self.tasks_url, agent_name=self.agent_name)
        if self.configure is not None:
            config = self.configure(config)
        self.config = config
        (self.root / "agent.json").write_text(config.to_json())
        self.worker_port, self.metrics_port = free_port(), free_port()
        self.worker = self._spawn_worker("worker", self.worker_port, self.metrics_port, timeout)

    def _spawn_worker(self, name: str, worker_port: int, metrics_port: int, timeout: float) -> Process:
        prometheus_dir = self.root / f"{name}-prometheus"
        prometheus_dir.mkdir(exist_ok=True)
        env = {
            **self.offline_env,
            **self.livekit.env(),
            contract.ENV_CONFIG_PATH: str(self.root / "agent.json"),
            contract.ENV_PROMETHEUS_MULTIPROC_DIR: str(prometheus_dir),
            contract.ENV_WORKER_PORT: str(worker_port),
            contract.ENV_METRICS_PORT: str(metrics_port),
            contract.ENV_TASKS_TOKEN_KEY: self.token_key,
            contract.ENV_LOOP_CPU_WARN_MS: str(LOOP_CPU_WARN_MS),
            "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS": str(LOOP_CPU_WARN_MS),
        }
        worker = self.supervisor.spawn(name, [sys.executable, "-m", "voicefleet_agent", "start"], env=env)
        worker.wait_ready(
            lambda: "registered worker" in worker.log.read_text(errors="replace"),
            timeout,
            "registered with livekit-server",
        )
        return worker

    def add_worker(self, name: str, timeout: float = STARTUP_TIMEOUT) -> int:
        """Another worker of the same agent and config, as a second pod would be; returns its worker port."""
        worker_port = free_port()
        self._spawn_worker(name, worker_port, free_port(), timeout)
        return worker_port

    # -- the worker ---------------------------------------------------------------------------------------

    @property
    def worker_log(self) -> Path:
        return self.worker.log

    def registered(self) -> bool:
        """The worker has registered with livekit-server (so a dispatch reaches it)."""
        return "registered worker" in self.worker.log.read_text(errors="replace")

    def log_offset(self) -> int:
        """Where the worker log ends now (pass it to ``loop_blocks``)."""
        return self.worker.log.stat().st_size

    def session_log(self, since: int = 0) -> list[dict[str, Any]]:
        """The job processes' log records (JSON lines) written after ``since``; the worker's own are left out."""
        with self.worker.log.open("rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").splitlines()
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("pid") != self.worker.popen.pid:
                records.append(record)
        return records

    def loop_hogs(self, since: int = 0) -> list[str]:
        """Loop callbacks of a session that used at least LOOP_CPU_WARN_MS of CPU (``voicefleet_agent.loopwatch``)."""
        return [str(r["message"]) for r in self.session_log(since) if str(r.get("message", "")).startswith(LOOP_HOG)]

    def loop_stalls(self, since: int = 0) -> list[str]:
        """The framework's wall-clock "event loop blocked" reports (which include the machine not scheduling us)."""
        return [
            f"{r['message']} (loop CPU {float(r.get('cpu_time') or 0) * 1000:.0f} ms)"
            for r in self.session_log(since)
            if LOOP_BLOCKED in str(r.get("message", ""))
        ]

    def worker_status(self, port: int | None = None) -> dict[str, Any]:
        """The worker's ``GET /worker`` (another worker's, given its port): agent_name, worker_load, active_jobs…"""
        return _get_json(f"http://127.0.0.1:{port or self.worker_port}/worker")

    def worker_memory(self) -> Memory:
        """PSS/RSS of the worker's whole process tree (main process, forkserver, job processes)."""
        return tree_memory(self.worker.popen.pid)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            body: bytes = resp.read()
            return body.decode()

    def metric_samples(self) -> dict[str, float]:
        """Every sample on ``/metrics``, keyed ``name{label="v",...}`` (labels sorted)."""
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(self.metrics_text()):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}"] = s.value
        return samples

    # -- the offline providers ----------------------------------------------------------------------------

    def _control(self, service: str, body: Mapping[str, Any] | None = None, query: str = "") -> dict[str, Any]:
        # any live server of the stack answers for its siblings: one in ``down`` has closed its own listener
        error: Exception | None = None
        for via in sorted(OFFLINE_SERVICES, key=lambda s: s == service):
            try:
                return _get_json(self.urls.controls[via] + query, {"target": service, **body} if body else None)
            except (urllib.error.URLError, ConnectionError) as exc:
                error = exc
        raise ComponentError("offline", f"no control endpoint answers: {error}", self.logs_dir / "offline.log")

    def set_fault(self, service: str, mode: str, **options: Any) -> dict[str, Any]:
        """Switch one offline provider's fault mode (``ok``, ``down``, ``error5xx``, ``slow``, ``hang``,
        ``disconnect``; options ``latency_ms``, ``status``, ``disconnect_after``, ``count``, ``for_ms``)."""
        return self._control(service, {"mode": mode, **options})

    def provider_state(self, service: str) -> dict[str, Any]:
        """The server's state: mode and counters (requests, by_path, ws_connections, ...)."""
        state: dict[str, Any] = self._control(service, query="?target=all")["services"][service]
        return state

    def reset_faults(self) -> None:
        for service in OFFLINE_SERVICES:
            self.set_fault(service, "ok")


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` (never a fixed sleep); ComponentError-free TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


__all__ = [
    "AGENT_NAME",
    "ComponentError",
    "LiveKitCredentials",
    "Memory",
    "OfflineUrls",
    "VoiceStack",
    "agent_config",
    "tree_memory",
    "wait_until",
]
