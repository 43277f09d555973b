"""The operator's readiness, liveness and give-up decisions over the self-check's state and the time."""

from __future__ import annotations

import asyncio

from voicefleet_operator.selfcheck import SelfCheck


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(watching: bool = True, fails: bool = False) -> tuple[SelfCheck, Clock]:
    clock = Clock()

    async def check() -> None:
        if fails:
            raise ConnectionRefusedError("connection refused")

    return SelfCheck(check=check, watching=lambda: watching, interval=5, give_up_after=60, clock=clock), clock


def test_ready_only_after_a_passing_check_while_kopf_watches() -> None:
    state, clock = make()
    assert state.ready(clock()) == (False, "API server unusable: no check yet")
    asyncio.run(state.tick())
    assert state.ready(clock()) == (True, "ok")
    clock.now += 16  # three missed intervals: the last success is too old
    assert state.ready(clock())[0] is False


def test_not_ready_while_kopf_has_not_discovered_the_api() -> None:
    state, clock = make(watching=False)
    asyncio.run(state.tick())
    assert state.ready(clock()) == (False, "not watching yet: none")


def test_failing_check_says_why_and_gives_up_after_the_limit() -> None:
    state, clock = make(fails=True)
    asyncio.run(state.tick())
    ready, reason = state.ready(clock())
    assert not ready and "ConnectionRefusedError: connection refused" in reason
    assert state.give_up_reason(clock()) is None
    clock.now += 60
    reason = state.give_up_reason(clock())
    assert reason is not None and reason.startswith("giving up: the API server has been unusable since it started 60 s")


def test_alive_until_the_check_loop_stalls() -> None:
    state, clock = make()
    asyncio.run(state.tick())
    clock.now += 29
    assert state.alive(clock()) == (True, "ok")
    clock.now += 2
    assert state.alive(clock())[0] is False
