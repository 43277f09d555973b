"""The policy daemon writes status when what readers act on changed, never for a probe round alone."""

from __future__ import annotations

from typing import Any

from voicefleet_operator.failover import worth_writing


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
