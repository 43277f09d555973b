"""The operator's own health: liveness (/healthz), readiness (/readyz) and giving up.

kopf's health endpoint answers 200 as long as the event loop runs, even while every request to the API server
fails. Here readiness means "can do its job": kopf's first discovery of the API succeeded (it is logged in and its
watches are started) and the last check of the API, made with the operator's own client, passed. Liveness means
the process is not stuck: the check loop ticked recently. When the API server stays unusable for ``give_up_after``
seconds, the operator exits non-zero, saying why, so Kubernetes shows a crash instead of a quiet Ready pod.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger(__name__)

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"


@dataclass
class SelfCheck:
    """State of the periodic API check; the decisions are pure functions of it and `now`."""

    check: Callable[[], Awaitable[None]]  # raises when the API server cannot be used
    watching: Callable[[], bool]  # kopf has discovered the API resources and started its watches
    interval: float = 5.0
    give_up_after: float = 300.0
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    last_tick: float = field(default=0.0)
    last_ok: float | None = None
    last_error: str = "no check yet"

    def __post_init__(self) -> None:
        self.started = self.last_tick = self.clock()

    def ready(self, now: float) -> tuple[bool, str]:
        if not self.watching():
            return False, f"not watching yet: {self.last_error}"
        if self.last_ok is None or now - self.last_ok > 3 * self.interval:
            return False, f"API server unusable: {self.last_error}"
        return True, "ok"

    def alive(self, now: float) -> tuple[bool, str]:
        stalled = now - self.last_tick
        if stalled > 4 * self.interval + 10:
            return False, f"the self-check has not run for {stalled:.0f} s"
        return True, "ok"

    def give_up_reason(self, now: float) -> str | None:
        since = self.last_ok if self.last_ok is not None else self.started
        if now - since < self.give_up_after:
            return None
        what = "since it started" if self.last_ok is None else "for"
        return (
            f"giving up: the API server has been unusable {what} {now - since:.0f} s "
            f"(limit {self.give_up_after:.0f} s): {self.last_error}"
        )

    async def tick(self) -> None:
        try:
            await asyncio.wait_for(self.check(), timeout=max(self.interval, 5.0))
        except Exception as error:  # any failure of the API check is what the probe reports
            self.last_error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            log.warning("API check failed: %s", self.last_error)
        else:
            if self.last_ok is None:
                log.info("API check passed: logged in to the API server")
            self.last_ok = self.clock()
            self.last_error = "none"
        self.last_tick = self.clock()

    async def run(self, give_up: Callable[[str], None]) -> None:
        """Check every `interval` seconds until cancelled, or until it is time to give up."""
        while True:
            await self.tick()
            if reason := self.give_up_reason(self.clock()):
                give_up(reason)
                return
            await asyncio.sleep(self.interval)


async def serve(state: SelfCheck, host: str, port: int) -> web.AppRunner:
    """/healthz (liveness) and /readyz (readiness) on host:port: 200 "ok" or 503 with the reason."""

    def answer(verdict: tuple[bool, str]) -> web.Response:
        ok, reason = verdict
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    async def liveness(_: web.Request) -> web.Response:
        return answer(state.alive(state.clock()))

    async def readiness(_: web.Request) -> web.Response:
        return answer(state.ready(state.clock()))

    app = web.Application()
    app.add_routes([web.get(LIVENESS_PATH, liveness), web.get(READINESS_PATH, readiness)])
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
