"""Issue 5 end to end: real control plane, the real operator process, the offline providers with fault
injection, and follower processes running the agent's real fleet client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from failover.harness import POLICY, FollowerFleet, OfflineProcess, join_fleet, keys_doc, policy_doc, wait_until
from testground.operator import Namespace, OperatorProcess
from voicefleet_agent.fleet_client import FleetFollower, FleetTarget

pytestmark = pytest.mark.integration

FOLLOWERS = 5
HOLD_S = 2


def _status(ns: Namespace) -> dict[str, Any]:
    return dict((ns.get("providerpolicy", POLICY) or {}).get("status") or {})


def _condition(ns: Namespace, type_: str) -> dict[str, Any]:
    return next((c for c in _status(ns).get("conditions") or [] if c["type"] == type_), {})


def _events(ns: Namespace) -> list[tuple[str, str]]:
    items = json.loads(ns.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [(e["reason"], e.get("message", "")) for e in items]


def _wait_event(ns: Namespace, reason: str, text: str) -> None:
    """Events are posted after the status write: poll for them."""
    try:
        wait_until(f"event {reason}", lambda: any(r == reason and text in m for r, m in _events(ns)), 20, every=0.2)
    except TimeoutError as error:
        raise AssertionError(f"no {reason} event with {text!r} in {_events(ns)}") from error


def _acknowledged(ns: Namespace, size: int, stt: str) -> dict[str, Any] | None:
    status = _status(ns)
    rollout = status.get("rollout") or {}
    on = (status.get("active") or {}).get("stt") == stt
    if on and rollout.get("acknowledged") == size and rollout.get("generation") == status.get("providerGeneration"):
        return dict(rollout)
    return None


def _start(ns: Namespace, offline: OfflineProcess, followers: Callable[[int], FollowerFleet]) -> FollowerFleet:
    assert ns.apply(keys_doc(), policy_doc(offline.deepgram_url, offline.openai_url, hold_s=HOLD_S)).returncode == 0
    fleet = followers(FOLLOWERS)
    fleet.wait_all_on("deepgram", timeout=60)
    wait_until("rollout on deepgram", lambda: _acknowledged(ns, FOLLOWERS, "deepgram"), timeout=30, every=0.2)
    return fleet


@pytest.mark.parametrize(
    ("mode", "options"),
    [("down", {}), ("error5xx", {"status": 503}), ("slow", {"latency_ms": 10000}), ("hang", {})],
)
def test_a_failing_deepgram_flips_the_fleet_to_whisper_and_back(
    fns: Namespace,
    offline: OfflineProcess,
    followers: Callable[[int], FollowerFleet],
    mode: str,
    options: dict[str, Any],
) -> None:
    fleet = _start(fns, offline, followers)
    offline.fault("deepgram", mode, **options)
    switched = fleet.wait_all_on("whisper", timeout=30)
    times = [s.at for s in switched.values()]
    assert max(times) - min(times) < 1.0, "every follower switches within a second of the first"
    rollout = wait_until("rollout on whisper", lambda: _acknowledged(fns, FOLLOWERS, "whisper"), timeout=30)
    assert f"{FOLLOWERS}/{FOLLOWERS}" in rollout["summary"]
    assert _condition(fns, "FailedOver")["status"] == "True"
    assert _condition(fns, "ProviderDegraded")["status"] == "True"
    deepgram = next(p for p in _status(fns)["providers"] if p["name"] == "deepgram")
    assert deepgram["healthy"] is False and deepgram["consecutiveFailures"] >= 2
    _wait_event(fns, "FailedOver", "deepgram → whisper")

    recovered = time.time()
    offline.fault("deepgram", "ok")
    back = fleet.wait_all_on("deepgram", timeout=60)
    assert min(s.at for s in back.values()) - recovered >= HOLD_S, "failback waits for the hold"
    wait_until("rollout back on deepgram", lambda: _acknowledged(fns, FOLLOWERS, "deepgram"), timeout=30)
    wait_until("FailedOver=False", lambda: _condition(fns, "FailedOver").get("status") == "False", timeout=30)
    _wait_event(fns, "FailedBack", "whisper → deepgram")


def test_the_override_moves_the_fleet_both_ways(
    fns: Namespace, offline: OfflineProcess, followers: Callable[[int], FollowerFleet]
) -> None:
    fleet = _start(fns, offline, followers)
    patched = time.time()
    fns.kubectl("patch", "providerpolicy", POLICY, "--type=merge", "-p",
                json.dumps({"spec": {"override": {"stt": "whisper", "reason": "on-call drill"}}}))  # fmt: skip
    switched = fleet.wait_all_on("whisper", timeout=15)
    assert max(s.at for s in switched.values()) - patched < 10
    wait_until("rollout on whisper", lambda: _acknowledged(fns, FOLLOWERS, "whisper"), timeout=30)
    _wait_event(fns, "Override", "on-call drill")

    fns.kubectl("patch", "providerpolicy", POLICY, "--type=json", "-p",
                json.dumps([{"op": "remove", "path": "/spec/override"}]))  # fmt: skip
    fleet.wait_all_on("deepgram", timeout=30)
    wait_until("rollout back on deepgram", lambda: _acknowledged(fns, FOLLOWERS, "deepgram"), timeout=30)


def _deepgram_requests(offline: OfflineProcess) -> int:
    state = offline.fault_state("deepgram")
    return int(state["counters"]["requests"])


def test_a_flapping_deepgram_does_not_flap_the_fleet(
    fns: Namespace, offline: OfflineProcess, followers: Callable[[int], FollowerFleet]
) -> None:
    fleet = _start(fns, offline, followers)
    generation = _status(fns)["providerGeneration"]
    # every other probe fails: one 503 (count=1) armed only after a passing probe
    for _ in range(6):
        for mode in ("error5xx", "ok"):  # arm a failure, then let one probe pass
            seen = _deepgram_requests(offline)
            if mode == "error5xx":
                offline.fault("deepgram", mode, status=503, count=1)

            def probed(seen: int = seen) -> bool:
                return _deepgram_requests(offline) > seen

            wait_until(f"a probe ({mode})", probed, timeout=10)
    assert _status(fns)["providerGeneration"] == generation, (_events(fns), _status(fns)["providers"])
    assert (_status(fns).get("active") or {}).get("stt") == "deepgram"
    assert len(fleet.on("deepgram")) == FOLLOWERS
    assert {s.generation for s in fleet.switches()} == {generation}
    assert not any(r == "FailedOver" for r, _ in _events(fns))


async def test_an_agents_error_report_makes_the_operator_probe_at_once_not_an_interval_later(
    fns: Namespace, offline: OfflineProcess, failover_operator: OperatorProcess, tmp_path: Path
) -> None:
    # probes every 300 s: without the report the next probe, and the flip, would be minutes away
    doc = policy_doc(offline.deepgram_url, offline.openai_url, interval_s=300, failure_threshold=2)
    assert fns.apply(keys_doc(), doc).returncode == 0
    fleet_pass = join_fleet(fns, tmp_path / "fleet-token")
    target = FleetTarget(failover_operator.fleet_url, fns.name, POLICY, "reporter", voiceagent=fleet_pass.voiceagent,
                         token_file=str(fleet_pass.token_file))  # fmt: skip
    follower = FleetFollower(target, wait_s=20)
    follower.start()
    try:
        await follower.wait_for(lambda f: f.active.get("stt") == "deepgram", timeout=60)

        def probed() -> bool:
            return any(p["name"] == "deepgram" and p.get("lastProbe") for p in _status(fns).get("providers") or [])

        wait_until("the first probe of deepgram", probed, 60, every=0.2)
        offline.fault("deepgram", "error5xx", status=503)
        reported = time.monotonic()
        follower.report_error("deepgram")
        await follower.wait_for(lambda f: f.active.get("stt") == "whisper", timeout=40)
        assert time.monotonic() - reported < 60, "flipped by probes the report brought forward, not the 300 s interval"
    finally:
        await follower.aclose()
