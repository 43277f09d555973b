"""Dev and test aid: report every event-loop callback that burns more than a threshold of CPU time.

The framework's loop monitor (and asyncio's debug mode) time callbacks by the wall clock, so on a loaded, shared
machine a process that is simply not scheduled looks like a blocked loop. Thread CPU time does not move while the
thread waits to be scheduled or for the GIL: a callback that used 20 ms of it did 20 ms of synchronous work on the
loop, whatever the load. Enabled by ``VOICEFLEET_LOOP_CPU_WARN_MS`` (the real-room tests set it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from voicefleet_agent.contract import ENV_LOOP_CPU_WARN_MS

log = logging.getLogger(__name__)

MESSAGE = "loop callback used"
_installed = False


def describe(handle: asyncio.Handle) -> str:
    """The task (and its coroutine) a callback stepped, else the callback itself."""
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        return f"task {owner.get_name()} ({getattr(coro, '__qualname__', coro)})"
    return repr(handle)


def install(threshold_s: float) -> None:
    """Time every callback of every loop in this process by thread CPU; log the ones at or over ``threshold_s``."""
    global _installed
    if _installed:
        return
    _installed = True
    run = asyncio.events.Handle._run

    def timed(self: asyncio.Handle) -> Any:
        started = time.thread_time()
        try:
            return run(self)
        finally:
            spent = time.thread_time() - started
            if spent >= threshold_s:
                log.warning("%s %.0f ms of CPU: %s", MESSAGE, spent * 1000, describe(self))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]


def install_from_env(environ: Mapping[str, str]) -> None:
    if threshold_ms := environ.get(ENV_LOOP_CPU_WARN_MS):
        install(float(threshold_ms) / 1000)
