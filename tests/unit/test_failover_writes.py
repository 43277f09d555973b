"""The policy daemon writes status when what readers act on changed, not every probe round."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.failover import Failover
from voicefleet_operator.fleet import Fleet


def _status(failures: int, latency: float, healthy: bool = True, probe: str = "t1") -> dict[str, Any]:
    provider = {"name": "deepgram", "healthy": healthy, "consecutiveFailures": failures,
                "lastProbeLatencyMs": latency, "lastProbe": probe}  # fmt: skip
    return {"active": {"stt": "deepgram"}, "providers": [provider]}


def test_latencies_and_a_growing_failure_count_alone_are_not_written_twice() -> None:
    failover = Failover(store=None, fleet=Fleet(), emit=lambda *_: None, probe=None, clock=None)  # type: ignore[arg-type]
    same = _status(0, 10.0)
    assert not failover._worth_writing("ns", "p", same, dict(same))
    assert failover._worth_writing("ns", "p", _status(0, 10.0), _status(0, 12.0, probe="t2"))  # first: written
    failover._written[("ns", "p")] = 10**9  # as if written just now
    assert not failover._worth_writing("ns", "p", _status(0, 10.0), _status(0, 12.0, probe="t2"))
    assert not failover._worth_writing("ns", "p", _status(4, 10.0, False), _status(5, 11.0, False, "t3"))
    assert failover._worth_writing("ns", "p", _status(0, 10.0), _status(1, 10.0))  # a first failure
    assert failover._worth_writing("ns", "p", _status(2, 10.0), _status(3, 10.0, healthy=False))
