"""Child processes of the test ground: spawn into their own process group, wait for readiness, stop."""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

_PR_SET_PDEATHSIG = 1
T = TypeVar("T")


class ComponentError(RuntimeError):
    """A component of the test ground failed to build, start or become ready."""

    def __init__(self, component: str, problem: str, log: Path | None = None) -> None:
        self.component = component
        self.log = log
        message = f"{component}: {problem}"
        if log is not None:
            message += f"\n  log: {log}\n" + indent(tail(log), "  | ")
        super().__init__(message)


def tail(path: Path, lines: int = 25) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"(cannot read log: {e})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def indent(text: str, prefix: str) -> str:
    return "".join(prefix + line + "\n" for line in text.splitlines())


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """An ephemeral port on 127.0.0.1 that is free now (another process may still take it before we bind)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """True when GET `url` answers 2xx within 2 s."""
    try:
        with urllib.request.urlopen(url, context=context, timeout=2) as resp:
            status: int = resp.status
            return 200 <= status < 300
    except (urllib.error.URLError, OSError):
        return False


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGKILL it when the thread that spawned it dies,
    # so that a pytest run killed with SIGKILL leaves no control plane behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def process_start_time(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass(frozen=True)
class ProcessRecord:
    """What it takes to find a process again from another Python process: its pid and start time."""

    name: str
    pid: int
    start_time: int
    log: str

    def alive(self) -> bool:
        return process_start_time(self.pid) == self.start_time

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "start_time": self.start_time, "log": self.log}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcessRecord:
        return cls(name=data["name"], pid=int(data["pid"]), start_time=int(data["start_time"]), log=data["log"])


class Process:
    """One component running as the leader of its own process group, its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        detached: bool = False,
    ) -> None:
        self.name = name
        self.log = log
        binary = Path(argv[0])
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise ComponentError(name, f"binary {binary} is missing; run `python -m testground build`")
        log.parent.mkdir(parents=True, exist_ok=True)
        die_with_parent = not detached and threading.current_thread() is threading.main_thread()
        with log.open("ab") as out:
            out.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(map(str, argv))}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                [str(a) for a in argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
            )
        start_time = process_start_time(self.popen.pid)
        self.record = ProcessRecord(name, self.popen.pid, start_time or -1, str(log))

    def exited(self) -> int | None:
        return self.popen.poll()

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        """Poll `check` until it returns True; fail fast if the process exits, with the log's tail."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        last_error: BaseException | None = None
        while True:
            code = self.exited()
            if code is not None:
                raise ComponentError(self.name, f"exited with code {code} before it was {what}", self.log)
            try:
                if check():
                    return
                last_error = None
            except Exception as e:
                last_error = e
            if time.monotonic() > deadline:
                detail = f" (last check: {last_error!r})" if last_error else ""
                raise ComponentError(self.name, f"not {what} after {timeout:.0f}s{detail}", self.log)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def stop(self, grace: float = 10.0) -> None:
        stop_group(self.record, grace, popen=self.popen)


@dataclass
class Supervisor:
    """The processes one stack started, in start order; `stop` ends them in reverse order."""

    logs_dir: Path
    detached: bool = False
    on_spawn: Callable[[ProcessRecord], None] | None = None
    processes: list[Process] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str | os.PathLike[str]], env: Mapping[str, str] | None = None) -> Process:
        process = Process(name, argv, self.logs_dir / f"{name}.log", env=env, detached=self.detached)
        self.processes.append(process)
        if self.on_spawn:
            self.on_spawn(process.record)
        return process

    def stop(self) -> None:
        while self.processes:
            self.processes.pop().stop()


def stop_group(record: ProcessRecord, grace: float = 10.0, popen: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group we started, SIGKILL what is left after `grace` seconds; a no-op when gone."""

    def leader_alive() -> bool:
        return popen.poll() is None if popen is not None else record.alive()

    deadline = time.monotonic() + grace
    next_term = 0.0
    while (leader_alive() or _session_members(record)) and time.monotonic() < deadline:
        if leader_alive() and time.monotonic() >= next_term:
            # Repeated each second: livekit-server ignores a SIGTERM in the 100 ms after it starts serving
            # (its Stop() runs before `running` is set), and to servers that drain a second one means "now".
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGTERM)
            next_term = time.monotonic() + 1
        time.sleep(0.05)
    for pid in _session_members(record):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if popen is not None:
        popen.wait(timeout=grace)
    deadline = time.monotonic() + grace
    while _session_members(record) and time.monotonic() < deadline:
        time.sleep(0.05)


def _session_members(record: ProcessRecord) -> list[int]:
    """Live processes of the session the component leads: same session id, started no earlier than it."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            continue
        if int(fields[3]) == record.pid and int(fields[19]) >= record.start_time:
            members.append(int(entry.name))
    return members


@dataclass
class Stack(Generic[T]):
    """Processes started under `root` by one Supervisor; a failed start stops whatever it had started."""

    root: Path
    detached: bool = False
    timeout: float = 60.0
    on_spawn: Callable[[ProcessRecord], None] | None = None

    def __post_init__(self) -> None:
        self.logs_dir = self.root / "logs"
        self.supervisor = Supervisor(self.logs_dir, self.detached, self.on_spawn)

    def start(self) -> T:
        if not self.detached:
            atexit.register(self.stop)
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.supervisor.stop()
        atexit.unregister(self.stop)

    def _start(self) -> T:
        raise NotImplementedError
