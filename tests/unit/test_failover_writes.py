"""The policy daemon writes status when what readers act on changed, never for a probe round alone."""

from __future__ import annotations

import asyncio
from typing import Any

from voicefleet_operator.failover import Failover, worth_writing
from voicefleet_operator.fleet import Fleet


def _status(failures: int, latency: float, healthy: bool = True, probe: str | None = "t1") -> dict[str, Any]:
    provider = {"name": "deepgram", "healthy": healthy, "consecutiveFailures": failures,
                "lastProbeLatencyMs": latency, "lastProbe": probe}  # fmt: skip
    return {"active": {"stt": "deepgram"}, "providers": [provider]}


def test_probe_rounds_alone_are_never_written_however_long_the_policy_rests() -> None:
    same = _status(0, 10.0)
    assert not worth_writing(same, dict(same))
    # every later round: a new latency and time, nothing else — at rest, no write at all
    assert not worth_writing(_status(0, 10.0, probe="t1"), _status(0, 12.0, probe="t2"))
    assert not worth_writing(_status(0, 10.0, probe="t1"), _status(0, 9.0, probe="t999"))
    # a provider that stays down: its failure count grows every probe, the verdict does not change
    assert not worth_writing(_status(4, 10.0, False), _status(5, 11.0, False, "t3"))


def test_a_first_probe_a_first_failure_and_a_verdict_change_are_written() -> None:
    assert worth_writing(_status(0, 10.0, probe=None), _status(0, 12.0, probe="t1"))  # probing runs
    assert worth_writing(_status(0, 10.0), _status(1, 10.0))  # a first failure
    assert worth_writing(_status(2, 10.0), _status(3, 10.0, healthy=False))  # unhealthy
    assert worth_writing(_status(0, 10.0), {**_status(0, 10.0), "active": {"stt": "whisper"}})  # a flip


class _Secrets:
    """The storage layer's two Secret reads, counting the full reads."""

    def __init__(self) -> None:
        self.version: str | None = "1"
        self.value = "key-1"
        self.reads = 0

    async def secret_version(self, namespace: str, name: str) -> str | None:
        return self.version

    async def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        self.reads += 1
        return None if self.version is None else {"deepgram": self.value}


def test_a_probe_key_is_read_once_per_secret_version_not_once_per_probe() -> None:
    store = _Secrets()
    failover = Failover(store=store, fleet=Fleet(), emit=lambda *_: None, probe=None, clock=None)  # type: ignore[arg-type]

    async def probes(n: int) -> list[dict[str, str] | None]:
        return [await failover._secret("ns", "provider-keys") for _ in range(n)]

    assert asyncio.run(probes(60)) == [{"deepgram": "key-1"}] * 60
    assert store.reads == 1
    store.version, store.value = "2", "key-2"  # rotated: the watch shows a new resourceVersion
    assert asyncio.run(probes(5))[-1] == {"deepgram": "key-2"}
    assert store.reads == 2
    store.version = None  # deleted
    assert asyncio.run(probes(1)) == [None]


def test_a_forgotten_policy_keeps_no_key_of_its_namespace_in_memory() -> None:
    store = _Secrets()
    failover = Failover(store=store, fleet=Fleet(), emit=lambda *_: None, probe=None, clock=None)  # type: ignore[arg-type]
    asyncio.run(failover._secret("ns", "provider-keys"))
    asyncio.run(failover._secret("other", "provider-keys"))
    failover.forget("ns", "default")
    assert set(failover._keys) == {("other", "provider-keys")}
