"""Pure: the AgentServer's options and process environment for an AgentConfig."""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol

from voicefleet_agent import contract
from voicefleet_agent.contract import AgentConfig


class _HasActiveJobs(Protocol):
    @property
    def active_jobs(self) -> list[Any]: ...


def preload_local_inference(config: AgentConfig, environ: MutableMapping[str, str]) -> None:
    """Only preload the ~250 MB end-of-turn model when semantic turn detection will use it.

    Preloaded, it lives once in the forkserver and every job process shares it copy-on-write; unused, it is pure
    idle memory. Measured idle worker (2 warm job processes), total PSS: 610 MiB with it, 367 MiB without.
    An explicit LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE in the environment wins.
    """
    if config.turn_detection != "semantic":
        environ.setdefault(contract.ENV_PRELOAD_LOCAL_INFERENCE, "0")


def session_load(max_sessions: int) -> Callable[[_HasActiveJobs], float]:
    """Load as the share of ``max_sessions`` in use: the worker reports full (1.0) exactly at the limit.

    LiveKit's default load is machine CPU, which flaps on a busy shared node and says nothing about how many calls
    a pod can take; the HPA already scales on sessions, so capacity is counted the same way.
    """
    return lambda server: min(len(server.active_jobs) / max_sessions, 1.0)


def server_options(config: AgentConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments for ``AgentServer`` (besides the entrypoint and prewarm)."""
    options: dict[str, Any] = {
        "drain_timeout": config.drain_timeout_seconds,
        "port": int(environ.get(contract.ENV_WORKER_PORT, contract.WORKER_PORT)),
        "prometheus_port": int(environ.get(contract.ENV_METRICS_PORT, contract.METRICS_PORT)),
        "prometheus_multiproc_dir": environ.get(contract.ENV_PROMETHEUS_MULTIPROC_DIR),
    }
    if max_retry := environ.get(contract.ENV_LIVEKIT_MAX_RETRY):
        options["max_retry"] = int(max_retry)
    if config.idle_processes is not None:
        options["num_idle_processes"] = config.idle_processes
    if config.max_sessions is not None:
        options["load_fnc"] = session_load(config.max_sessions)
        options["load_threshold"] = 1.0
    return options
